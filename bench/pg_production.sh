#!/usr/bin/env bash
# PostgreSQL as it runs in production, in one run: the steady state (the daily run after the
# backlog is gone) and retention by whole partitions. Starts a throwaway PostgreSQL 15 cluster.
#
# Steady state: two accounts tables with an index on the clock (last_login):
#   big:   N rows (default 10,000,000), DUE_PERMILLE per mille of them due (default 3: 0.3%)
#   small: N/10 rows with the same number of due rows
# The due rows have just become due (within the last 3 days past 12 months), scattered over the
# table; the others logged in within the year. On fresh copies of each table, REPEAT times
# (default 3, the minimum is kept), it measures:
#   (a) on big:   one plain DELETE FROM accounts WHERE last_login < now() - interval '12 months'
#                 (PostgreSQL follows the index), and retentiond's purge of the same rows
#                 (batch_size 10000, the real audit log), ratio retentiond / DELETE (target <= 1.5)
#   (b) on small: the same two, and the ratio retentiond(big) / retentiond(small): the cost should
#                 follow the due rows, not the table (target <= 1.5)
# plus the path retentiond chose, how it verified that no due row remains, and its peak RSS.
#
# Partitions (c): a table partitioned by month on last_login (key id, last_login), N rows: 40% in
# 12 partitions 13 to 24 months old (wholly expired), 60% in the 12 newest, none in the one across
# the cutoff; and the same table with 4x fewer rows in the expired partitions. Measured: one plain
# DELETE of the expired rows, retentiond (partitions dropped whole, partition-level audit lines),
# retentiond with partition_digests: keys, and retentiond on the table with 4x fewer expired rows.
# Targets: DELETE / retentiond >= 10; retentiond(4x rows) / retentiond(1x) <= 1.5; DELETE /
# retentiond with digests >= 2. Printed beside them, the floors measured on the same copies: the
# raw DETACH + DROP of the expired partitions (1x and 4x rows), the raw read of their keys, and
# that read plus writing as many bytes as the digests take, durably, in one write per partition.
# usage: bench/pg_production.sh [N]   env: BUILD_DIR (default build), DUE_PERMILLE (default 3),
#                                          REPEAT (default 3), JOURNAL (audit|digest|none),
#                                          PART_N (rows of the partitioned table, default N)
# Installs what it needs and builds the core libraries (bench/pg_bench_lib.sh).
set -euo pipefail

N=${1:-10000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
DUE_PERMILLE=${DUE_PERMILLE:-3}
REPEAT=${REPEAT:-3}
JOURNAL=${JOURNAL:-audit}
PORT=5434
PART_N=${PART_N:-$N}
. "$ROOT/bench/pg_bench_lib.sh"

DUE_ROWS=$((N * DUE_PERMILLE / 1000))
load() { # db rows: DUE_ROWS of them due, scattered ((g * 7919) mod rows is a permutation)
    echo "loading $2 accounts ($DUE_ROWS due) into $1..." >&2
    sql postgres "CREATE DATABASE $1"
    sql "$1" "CREATE TABLE accounts (id bigint PRIMARY KEY, email text, first_name text,
               last_name text, last_login timestamptz, date_joined timestamptz NOT NULL,
               is_staff boolean NOT NULL DEFAULT false)"
    sql "$1" "INSERT INTO accounts SELECT g, 'user' || g || '@example.org', 'First' || g,
               'Last' || g,
               CASE WHEN (g::bigint * 7919) % $2 < $DUE_ROWS
                    THEN now() - interval '12 months' - interval '1 minute' * (1 + g % 4320)
                    ELSE now() - interval '1 minute' * (g % 524000) END,
               now() - interval '3 years' FROM generate_series(1, $2) g"
    sql "$1" "CREATE INDEX accounts_last_login ON accounts (last_login)"
    sql "$1" "VACUUM ANALYZE accounts"
    sql "$1" "CHECKPOINT"
}
load big "$N"
load small "$((N / 10))"

load_partitioned() { # db old_rows new_rows: monthly partitions 0..24 months back
    echo "loading a partitioned table ($2 expired rows, $3 recent) into $1..." >&2
    sql postgres "CREATE DATABASE $1"
    local ddl="CREATE TABLE accounts (id bigint NOT NULL, email text, first_name text,
               last_name text, last_login timestamptz NOT NULL, date_joined timestamptz NOT NULL,
               is_staff boolean NOT NULL DEFAULT false, PRIMARY KEY (id, last_login))
               PARTITION BY RANGE (last_login);"
    for k in $(seq 0 24); do
        ddl+="CREATE TABLE accounts_m$k PARTITION OF accounts FOR VALUES
              FROM (date_trunc('month', now()) - interval '$k months')
              TO (date_trunc('month', now()) - interval '$((k - 1)) months');"
    done
    sql "$1" "$ddl"
    # Expired rows in months 13..24, recent ones in months 0..11 (none in month 12, the boundary).
    sql "$1" "INSERT INTO accounts SELECT g, 'user' || g || '@example.org', 'First' || g,
               'Last' || g, date_trunc('month', now()) - interval '1 month' * (13 + g % 12)
               + interval '1 minute' * (g % 38000), now() - interval '3 years'
               FROM generate_series(1, $2) g"
    sql "$1" "INSERT INTO accounts SELECT g, 'user' || g || '@example.org', 'First' || g,
               'Last' || g, date_trunc('month', now()) - interval '1 month' * (g % 12)
               + interval '1 minute' * (g % 38000), now() - interval '3 years'
               FROM generate_series($2 + 1, $2 + $3) g"
    sql "$1" "VACUUM ANALYZE accounts"
    sql "$1" "CHECKPOINT"
}
load_partitioned parts4 "$((PART_N * 4 / 10))" "$((PART_N * 6 / 10))"
load_partitioned parts1 "$((PART_N * 1 / 10))" "$((PART_N * 6 / 10))"

DUE="last_login < now() - interval '12 months'"
min() { awk -v a="$1" -v b="$2" 'BEGIN{print (a == "" || b < a) ? b : a}'; }
measure() { # template -> sets PLAIN, ENGINE, RSS, ROWS, PATH_LINE
    PLAIN=; ENGINE=; RSS=0
    for i in $(seq "$REPEAT"); do
        fresh m "$1"; PLAIN=$(min "$PLAIN" "$(timed_sql m "DELETE FROM accounts WHERE $DUE")")
        fresh m "$1"; run_driver m delete; ENGINE=$(min "$ENGINE" "$DRV_SECS")
        [ "$DRV_RSS_KB" -gt "$RSS" ] && RSS=$DRV_RSS_KB
        ROWS=$DRV_ROWS
        PATH_LINE=$(sed -n 's/.* path \(.*\) verification \([a-z-]*\).*/path \1, verification \2/p' <<<"$DRV_LINE")
    done
}
measure big; BIG_PLAIN=$PLAIN; BIG_ENG=$ENGINE; BIG_RSS=$RSS; BIG_ROWS=$ROWS; BIG_PATH=$PATH_LINE
measure small; SMALL_PLAIN=$PLAIN; SMALL_ENG=$ENGINE; SMALL_RSS=$RSS; SMALL_ROWS=$ROWS; SMALL_PATH=$PATH_LINE

# The floors, raw SQL on the same copies: what no design of the partition path can beat.
# Dropping: one transaction per expired partition (DETACH PARTITION, DROP TABLE, COMMIT), as
# retentiond does; freeing the dropped files' pages grows with their size. Digests: every key of
# the expired rows read as text (COPY to /dev/null), which the digests need before any hashing.
EXPIRED=$(seq 13 24)
raw_drop() { # db -> seconds for DETACH + DROP of the expired partitions, a transaction each
    local args=() t0 k
    for k in $EXPIRED; do
        args+=(-c "BEGIN; ALTER TABLE accounts DETACH PARTITION accounts_m$k; DROP TABLE accounts_m$k; COMMIT")
    done
    t0=$(now); psql -X -q -v ON_ERROR_STOP=1 "$(dsn "$1")" "${args[@]}"
    awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'
}
raw_write() { # bytes -> seconds to write that many bytes in 12 writes, each made durable (dd)
    local t0; t0=$(now)
    dd if=/dev/zero of="$WORK/floor.bin" bs="$(($1 / 12 + 1))" count=12 oflag=dsync status=none
    awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'
    rm -f "$WORK/floor.bin"
}
raw_keys() { # db -> seconds to read the expired rows' keys as text
    local t0; t0=$(now)
    psql -X -q -v ON_ERROR_STOP=1 "$(dsn "$1")" \
        -c "COPY (SELECT id::text, last_login::text FROM accounts WHERE $DUE) TO STDOUT" >/dev/null
    awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'
}

measure_partitions() { # -> sets P_PLAIN, P_DROP, P_DIGESTS, P_DROP1, P_RSS, P_LINE, DIGEST_BYTES, F_*
    P_PLAIN=; P_DROP=; P_DIGESTS=; P_DROP1=; P_RSS=0; P_DIGESTS_RSS=0; F_DROP=; F_DROP1=; F_KEYS=; F_WRITE=
    export BENCH_COMPOSITE_KEY=1
    for i in $(seq "$REPEAT"); do
        fresh m parts4; F_DROP=$(min "$F_DROP" "$(raw_drop m)")
        fresh m parts1; F_DROP1=$(min "$F_DROP1" "$(raw_drop m)")
        fresh m parts4; F_KEYS=$(min "$F_KEYS" "$(raw_keys m)")
        fresh m parts4; P_PLAIN=$(min "$P_PLAIN" "$(timed_sql m "DELETE FROM accounts WHERE $DUE")")
        fresh m parts4; run_driver m delete; P_DROP=$(min "$P_DROP" "$DRV_SECS"); P_LINE=$DRV_LINE
        [ "$DRV_RSS_KB" -gt "$P_RSS" ] && P_RSS=$DRV_RSS_KB
        local before; before=$(stat -c %s "$WORK/bench-audit.jsonl" 2>/dev/null || echo 0)
        fresh m parts4; PARTITION_DIGESTS=keys run_driver m delete; P_DIGESTS=$(min "$P_DIGESTS" "$DRV_SECS")
        [ "$DRV_RSS_KB" -gt "$P_DIGESTS_RSS" ] && P_DIGESTS_RSS=$DRV_RSS_KB
        DIGEST_BYTES=$(($(stat -c %s "$WORK/bench-audit.jsonl" 2>/dev/null || echo 0) - before))
        F_WRITE=$(min "$F_WRITE" "$(raw_write "$DIGEST_BYTES")")
        fresh m parts1; run_driver m delete; P_DROP1=$(min "$P_DROP1" "$DRV_SECS")
    done
    unset BENCH_COMPOSITE_KEY
}
measure_partitions

echo
echo "steady state: $DUE_ROWS due rows, index on last_login, batch_size 10000, journal $JOURNAL, best of $REPEAT"
printf "(a) %d rows:  indexed DELETE %7.3f s   retentiond %7.3f s (%s rows; %s)   ratio %s (target <= 1.5)\n" \
    "$N" "$BIG_PLAIN" "$BIG_ENG" "$BIG_ROWS" "$BIG_PATH" "$(ratio "$BIG_PLAIN" "$BIG_ENG")"
printf "(b) %d rows:   indexed DELETE %7.3f s   retentiond %7.3f s (%s rows; %s)   ratio %s\n" \
    "$((N / 10))" "$SMALL_PLAIN" "$SMALL_ENG" "$SMALL_ROWS" "$SMALL_PATH" "$(ratio "$SMALL_PLAIN" "$SMALL_ENG")"
printf "table 10x larger, same due rows: retentiond %s x (target <= 1.5); indexed DELETE %s x\n" \
    "$(ratio "$SMALL_ENG" "$BIG_ENG")" "$(ratio "$SMALL_PLAIN" "$BIG_PLAIN")"
printf "peak RSS: %d KiB (big), %d KiB (small)\n" "$BIG_RSS" "$SMALL_RSS"
echo
echo "partitions: $PART_N rows by month, 40% in 12 wholly expired partitions, none due in the boundary one; best of $REPEAT"
printf "(c) plain DELETE of the expired rows %7.3f s   retentiond %7.3f s   DELETE / retentiond %s (target >= 10)\n" \
    "$P_PLAIN" "$P_DROP" "$(ratio "$P_DROP" "$P_PLAIN")"
printf "    floor: raw DETACH + DROP of the 12 partitions, a transaction each, %7.3f s   DELETE / floor %s\n" \
    "$F_DROP" "$(ratio "$F_DROP" "$P_PLAIN")"
printf "    4x the rows in the expired partitions: retentiond %s x the time (target <= 1.5; %7.3f s vs %7.3f s)\n" \
    "$(ratio "$P_DROP1" "$P_DROP")" "$P_DROP" "$P_DROP1"
printf "    floor: raw DETACH + DROP with 4x the rows %s x the time (%7.3f s vs %7.3f s)\n" \
    "$(ratio "$F_DROP1" "$F_DROP")" "$F_DROP" "$F_DROP1"
printf "    with partition_digests: keys %7.3f s   DELETE / retentiond %s (target >= 2)\n" \
    "$P_DIGESTS" "$(ratio "$P_DIGESTS" "$P_PLAIN")"
printf "    floor: reading the expired rows' keys as text (COPY) %7.3f s   DELETE / floor %s\n" \
    "$F_KEYS" "$(ratio "$F_KEYS" "$P_PLAIN")"
F_DIGESTS=$(awk -v a="$F_KEYS" -v b="$F_WRITE" 'BEGIN{printf "%.3f", a+b}')
printf "    floor with the digests written: + %d bytes in 12 durable writes (dd) %7.3f s = %7.3f s   DELETE / floor %s   retentiond / floor %s\n" \
    "$DIGEST_BYTES" "$F_WRITE" "$F_DIGESTS" "$(ratio "$F_DIGESTS" "$P_PLAIN")" "$(ratio "$F_DIGESTS" "$P_DIGESTS")"
printf "    peak RSS %d KiB (with digests %d KiB); the run: %s\n" "$P_RSS" "$P_DIGESTS_RSS" "$P_LINE"
