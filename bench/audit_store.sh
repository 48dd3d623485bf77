#!/usr/bin/env bash
# The audit chain in PostgreSQL vs the file audit log (issue 19), on the PostgreSQL backlog: a
# throwaway PostgreSQL 15 cluster (durable commits, fsync on), an accounts table of N rows (default
# 2,000,000, half of them due: last_login older than 12 months), and the real binary
# (`retentiond purge --now`, batch_size 10000) timed as a whole process on a fresh copy each time:
#   (a) with the file audit log (daemon.audit_log, in $WORK)
#   (b) with the audit chain in the same database (daemon.audit_store), and the ratio b/a
#   (c) two processes on the same store at once for DURATION seconds (default 60), each purging
#       its own table again and again (small batches, so lines interleave), then `audit verify`
#       of the single chain: lines, and exit 0
# usage: bench/audit_store.sh [N]   env: BUILD_DIR (default build), DURATION (default 60)
# Installs what it needs, the cluster and its helpers from bench/pg_bench_lib.sh.
set -euo pipefail

N=${1:-2000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
DURATION=${DURATION:-60}
PORT=5434
JOURNAL=audit
NO_DRIVER=1
. "$ROOT/bench/pg_bench_lib.sh" # installs, the cluster, dsn/sql/fresh/now
BIN=$BUILD_DIR/retentiond
cmake --build "$BUILD_DIR" -j"$(nproc)" --target retentiond >/dev/null

echo "k-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$WORK/audit-key"
config() { # file db audit-line rules
    cat >"$1" <<YAML
version: 1
daemon:
$3
  audit_key: \${file:$WORK/audit-key}
  metrics: "off"
datastores:
  app: { kind: postgres, dsn: "$(dsn "$2")" }
rules:
$4
YAML
}
rule() { # name table batch_size
    printf '  - { name: %s, datastore: app, category: accounts, table: %s, key: id, clock: last_login, retain: 12 months, action: delete, batch_size: %s, limits: { max_fraction: 1 } }\n' "$1" "$2" "$3"
}
timed() { # command... -> seconds, exit on failure
    local t0; t0=$(now)
    "$@" >"$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; exit 70; }
    awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'
}

echo "loading $N accounts..." >&2
sql postgres "CREATE DATABASE src"
sql src "CREATE TABLE accounts (id bigint PRIMARY KEY, email text, first_name text,
           last_login timestamptz, date_joined timestamptz NOT NULL)"
sql src "INSERT INTO accounts SELECT g, 'user' || g || '@example.org', 'First' || g,
           now() - interval '1 day' * (CASE WHEN g % 2 = 0 THEN 370 + g % 300 ELSE g % 300 END),
           now() - interval '3 years' FROM generate_series(1, $N) g"
sql src "CREATE INDEX accounts_last_login ON accounts (last_login)"
sql src "CREATE TABLE others (LIKE accounts INCLUDING ALL)"
sql src "VACUUM ANALYZE accounts"
sql src "CHECKPOINT"

# (a) and (b), alternated twice each; the best of each kept (the machine may be shared).
FILE_BEST=; STORE_BEST=
for i in 1 2; do
    fresh f$i
    rm -f "$WORK/audit.jsonl"
    config "$WORK/file.yaml" "f$i" "  audit_log: $WORK/audit.jsonl" "$(rule accounts accounts 10000)"
    t=$(timed "$BIN" --config "$WORK/file.yaml" purge --now)
    echo "  file audit, run $i: $t s" >&2
    FILE_BEST=$(awk -v a="${FILE_BEST:-1e9}" -v b="$t" 'BEGIN{print (b<a)?b:a}')
    fresh s$i
    config "$WORK/store.yaml" "s$i" "  audit_store: app" "$(rule accounts accounts 10000)"
    t=$(timed "$BIN" --config "$WORK/store.yaml" purge --now)
    echo "  store audit, run $i: $t s" >&2
    STORE_BEST=$(awk -v a="${STORE_BEST:-1e9}" -v b="$t" 'BEGIN{print (b<a)?b:a}')
done
DUE=$(psql -X -qtA "$(dsn src)" -c "SELECT count(*) FROM accounts WHERE last_login < now() - interval '12 months'")

# (c) two writers on one store for DURATION seconds, each purging its own table again and again.
fresh two
sql two "TRUNCATE accounts"
config "$WORK/a.yaml" two "  audit_store: app" "$(rule accounts accounts 50)"
config "$WORK/b.yaml" two "  audit_store: app" "$(rule others others 50)"
writer() { # config table
    local end; end=$(awk -v n="$(now)" -v d="$DURATION" 'BEGIN{printf "%.0f", n+d}')
    while [ "$(date +%s)" -lt "$end" ]; do
        sql two "INSERT INTO $2 SELECT g, 'x', 'y', now() - interval '400 days', now()
                   FROM generate_series(1, 500) g ON CONFLICT DO NOTHING"
        "$BIN" --config "$1" purge --now >>"$WORK/$2.log" 2>&1
    done
}
writer "$WORK/a.yaml" accounts & A=$!
writer "$WORK/b.yaml" others & B=$!
wait $A $B
VERIFY_STATUS=0
VERIFY=$("$BIN" --config "$WORK/a.yaml" audit verify 2>&1) || VERIFY_STATUS=$?
RUNS=$(psql -X -qtA "$(dsn two)" -c "SELECT count(DISTINCT line::json->>'run') FROM retentiond.audit_log")

echo
echo "rows: $N, due: $DUE, batch_size 10000, real binary (purge --now), best of 2"
printf "file audit log   %8.3f s\n" "$FILE_BEST"
printf "audit_store      %8.3f s   ratio store/file %s\n" "$STORE_BEST" \
    "$(awk -v a="$FILE_BEST" -v b="$STORE_BEST" 'BEGIN{printf "%.2f", b/a}')"
echo "two writers on one store for ${DURATION}s: $RUNS runs; audit verify (exit $VERIFY_STATUS): $VERIFY"
[ "$VERIFY_STATUS" = 0 ]
