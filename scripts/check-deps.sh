#!/usr/bin/env bash
# The include rules of ARCHITECTURE.md ("Dependency rules"), checked on daemon/. Prints each
# violation as FILE:LINE: what and why, and exits 1 if there is any. Run by ctest (check_deps).
#
# Layers, low to high: util < core (config, audit, engines/common) < engines/<kind> < registry
# (engines/registry.cpp, registry.hpp) < run < report < service < cli. A file may include the public headers
# (include/retentiond/) of its own layer and of the layers below it; an engine never includes
# another kind, run, report, service or cli; a kind's own headers (engines/<kind>/*.hpp) are
# private to its folder, but for <kind>_kind.hpp, which only the registry includes; pqxx is
# included only under engines/postgres and in audit/audit_pg_store.cpp (the audit chain's
# PostgreSQL store, a library of its own), hiredis only under engines/redis.
# Usage: scripts/check-deps.sh [DAEMON_DIR]   (default: the daemon/ folder beside this script)
set -uo pipefail
cd "${1:-$(dirname "$0")/../daemon}" || exit 2

rank() { # layer of a file under daemon/, or of a public header's base name
    case "$1" in
    util/* | duration | schedule | timeutil | timestamp_memo | crypto | escape | errors | logging | \
        version | fd) echo 1 ;;
    config/* | audit/* | engines/common/* | config | config_reader | kind | engine | audit | \
        audit_store | audit_pg_store | \
        anonymize | policy_table | coverage | subject | ledger | \
        engine_common) echo 2 ;;
    engines/registry.cpp | registry) echo 4 ;;
    engines/* | run_lock) echo 3 ;; # run_lock.hpp: the postgres kind's coordination lock
    run/* | runner | progress | erasure) echo 5 ;;
    report/* | report | report_errors | report_coverage | report_erasures) echo 6 ;;
    service/* | daemon | metrics | notify | scheduler | daemon_erasure) echo 7 ;;
    cli/* | main.cpp | cli) echo 8 ;;
    *) echo 0 ;;
    esac
}

status=0
fail() {
    echo "$1: $2" >&2
    status=1
}

while IFS= read -r file; do
    case "$file" in */tests/*) continue ;; esac
    own=$(rank "$file")
    kind=""
    case "$file" in engines/*/*) kind=${file#engines/} kind=${kind%%/*} ;; esac
    [ "$kind" = common ] && kind=""
    while IFS=: read -r line text; do
        inc=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]([^>"]+)[>"].*/\1/' <<<"$text")
        where="$file:$line"
        case "$inc" in
        pqxx/*) [ "$kind" = postgres ] || [ "$file" = audit/audit_pg_store.cpp ] ||
            fail "$where" "includes <$inc>: pqxx belongs to engines/postgres (and audit/audit_pg_store.cpp) only" ;;
        hiredis/*) [ "$kind" = redis ] || fail "$where" "includes <$inc>: hiredis belongs to engines/redis only" ;;
        retentiond/*)
            base=${inc#retentiond/}
            base=${base%.hpp}
            r=$(rank "$base")
            if [ "$r" = 0 ]; then
                fail "$where" "includes $inc, which no layer owns (add it to scripts/check-deps.sh)"
            elif [ -n "$kind" ] && [ "$r" -gt 2 ] && [ "$base:$kind" != run_lock:postgres ]; then
                fail "$where" "an engine includes $inc (layer $r): engines see only util and core"
            elif [ "$r" -gt "$own" ]; then
                fail "$where" "includes $inc from a higher layer ($r > $own)"
            fi
            ;;
        engines/*)
            target_kind=${inc#engines/}
            target_kind=${target_kind%%/*}
            if [ "$file" != engines/registry.cpp ]; then
                fail "$where" "includes $inc: only engines/registry.cpp names a kind's folder"
            elif [ "$inc" != "engines/$target_kind/${target_kind}_kind.hpp" ]; then
                fail "$where" "includes $inc: the registry sees only <kind>_kind.hpp"
            fi
            ;;
        *.hpp)
            # A header beside the file: must be in the same folder (private to it).
            [ -f "$(dirname "$file")/$inc" ] ||
                fail "$where" "includes \"$inc\", not a header of its own folder"
            ;;
        esac
    done < <(grep -n -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]' "$file" |
        grep -E '[<"](pqxx/|hiredis/|retentiond/|engines/|[A-Za-z0-9_]+\.hpp")')
done < <(find . -name '*.cpp' -o -name '*.hpp' | sed 's|^\./||' | sort)

if [ "$status" = 0 ]; then
    echo "check-deps: every include in daemon/ follows the layer rules"
fi
exit $status
