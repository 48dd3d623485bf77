#!/bin/bash
# `retentiond coverage` on a 10M-row table: a throwaway PostgreSQL 15 cluster, one table
# (id, e-mail, JSON payload with a phone number, created_at) of ROWS rows, ANALYZEd, then the
# whole `retentiond coverage` process timed (wall time), and the time of a sequential count of
# the same table as the baseline a full scan would cost.
#   bench/coverage_bench.sh [ROWS] [BUILD_DIR]
set -euo pipefail
ROWS=${1:-10000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${2:-$ROOT/build}
PGBIN=/usr/lib/postgresql/15/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/retentiond-coverage-bench-XXXXXX")
chmod 755 "$WORK"
AS_PG=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$WORK"
    AS_PG=(runuser -u postgres --)
fi
cleanup() {
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
"${AS_PG[@]}" "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust --no-sync >/dev/null
printf "listen_addresses = ''\nunix_socket_directories = '%s'\nport = 5499\nfsync = off\n" \
    "$WORK" >>"$WORK/data/postgresql.conf"
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
DSN="host=$WORK port=5499 user=postgres dbname=postgres"
psql -X -q "$DSN" -c "CREATE TABLE public.big (id bigint, email text, payload jsonb,
    created_at timestamptz);
    INSERT INTO public.big SELECT i, 'user' || i || '@example.org',
        jsonb_build_object('tel', '06 12 34 ' || lpad((i % 100)::text, 2, '0') || ' 78'),
        now() - (i % 1000) * interval '1 hour' FROM generate_series(1, $ROWS) i;
    ANALYZE public.big;"
echo "table: $ROWS rows, $(psql -X -qtA "$DSN" -c "SELECT pg_size_pretty(pg_relation_size('public.big'))")"
cat >"$WORK/retentiond.yaml" <<YAML
version: 1
daemon: { audit_log: $WORK/audit.jsonl }
datastores:
  db: { kind: postgres, dsn: "$DSN" }
rules: []
YAML
t0=$(date +%s.%N)
"$BUILD_DIR/retentiond" --config "$WORK/retentiond.yaml" coverage >"$WORK/out.txt" || true
t1=$(date +%s.%N)
grep -A2 "public.big" "$WORK/out.txt" | head -12
awk -v a="$t0" -v b="$t1" 'BEGIN{printf "retentiond coverage (whole process): %.2f s\n", b-a}'
t0=$(date +%s.%N)
psql -X -qtA "$DSN" -c "SET max_parallel_workers_per_gather = 0; SELECT count(*) FROM public.big" >/dev/null
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN{printf "baseline: SELECT count(*) (a sequential scan): %.2f s\n", b-a}'
