#!/usr/bin/env bash
# The include-rule check passes on the tree and fails, naming the file, on each kind of violation.
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
check=$src/scripts/check-deps.sh
"$check" "$src/daemon" || { echo "FAIL: the tree itself breaks the include rules"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
expect_violation() { # FILE LINE-TO-ADD WHAT
    rm -rf "$work/daemon"
    cp -r "$src/daemon" "$work/daemon"
    printf '%s\n' "$2" >>"$work/daemon/$1"
    if out=$("$check" "$work/daemon" 2>&1); then
        echo "FAIL: $3 was not caught"
        failed=1
    elif ! grep -q "^$1:" <<<"$out"; then
        echo "FAIL: $3 was caught without naming $1: $out"
        failed=1
    else
        echo "ok: $3 -> $(head -1 <<<"$out")"
    fi
}
expect_violation config/config.cpp '#include <pqxx/pqxx>' "the core including pqxx"
expect_violation engines/files/csv.cpp '#include <hiredis/hiredis.h>' "the files engine including hiredis"
expect_violation engines/redis/redis_engine.cpp '#include "retentiond/report.hpp"' "an engine including the report"
expect_violation engines/postgres/pg_notice.cpp '#include "retentiond/daemon.hpp"' "an engine including the daemon"
expect_violation report/report.cpp '#include "engines/postgres/postgres_kind.hpp"' "the report naming a kind"
expect_violation engines/registry.cpp '#include "engines/files/csv.hpp"' "the registry including a kind's private header"
expect_violation config/loader.cpp '#include "retentiond/registry.hpp"' "the core including the registry"
expect_violation engines/files/files_engine.cpp '#include "retentiond/registry.hpp"' "an engine including the registry"
expect_violation util/crypto.cpp '#include "retentiond/config.hpp"' "util including the core"
expect_violation audit/audit.cpp '#include "retentiond/runner.hpp"' "the audit log including the runner"
expect_violation service/metrics.cpp '#include "retentiond/cli.hpp"' "the daemon including the CLI"
expect_violation run/runner.cpp '#include "pg_sql.hpp"' "a private header from another folder"
if [ "$failed" = 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit $failed
