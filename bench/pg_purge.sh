#!/usr/bin/env bash
# PostgreSQL purge bench (issue 3). Starts a throwaway PostgreSQL 15 cluster, loads an accounts
# table of N rows (default 2,000,000; half with last_login older than 12 months, index on
# last_login) into a template database, and measures on a fresh copy each time:
#   (a) one plain  DELETE FROM accounts WHERE last_login < now() - interval '12 months'
#   (b) retentiond's engine purge of the same rows, batch_size 10000, and the ratio b/a; once
#       with one stream (the default) and once with `parallel: PARALLEL` streams
#   (c) one plain  UPDATE ... SET email = NULL, first_name = ''  of the same rows
#   (d) retentiond's anonymize (same two fields, in SQL), and the ratio d/c
#   (e) pgbench (read-write, TPC-B-like, on its own tables) TPS and p99 latency: idle, within
#       retentiond's purge, within the parallel purge, within the same purge throttled by
#       sleep_between_batches (THROTTLE_MS), within the plain DELETE.
#   (f) the floor: the same page ranges deleted by one statement each (sent by pgbench as a plain
#       client), without and with RETURNING id (the keys the audit digests need), and as
#       retentiond does it (SELECT id, then DELETE, in one REPEATABLE READ transaction), ratios
#       to (a)
# Peak RSS of the driver comes from /usr/bin/time -v (Debian package `time`).
# The cluster and the driver (bench/pg_purge_bench.cpp) come from bench/pg_bench_lib.sh.
#
# The driver journals every batch like the CLI: JOURNAL=audit (default) is the real AuditLog (HMAC
# digest of every key, fsyncs), JOURNAL=digest only computes the digests, JOURNAL=none attaches none.
#
# usage: bench/pg_purge.sh [N]     env: BUILD_DIR (default build), PGBENCH_SECONDS (default 15),
#                                       JOURNAL (audit|digest|none, default audit),
#                                       THROTTLE_MS (sleep_between_batches of the throttled run,
#                                       default 40), PARALLEL (streams of the parallel run,
#                                       default 2)
set -euo pipefail

N=${1:-2000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
SECS=${PGBENCH_SECONDS:-15}
JOURNAL=${JOURNAL:-audit}
THROTTLE_MS=${THROTTLE_MS:-40}
PARALLEL=${PARALLEL:-2}
PORT=5433
. "$ROOT/bench/pg_bench_lib.sh"

echo "loading $N accounts..."
sql postgres "CREATE DATABASE src"
sql src "CREATE TABLE accounts (id bigint PRIMARY KEY, email text, first_name text,
           last_name text, last_login timestamptz, date_joined timestamptz NOT NULL,
           is_staff boolean NOT NULL DEFAULT false)"
sql src "INSERT INTO accounts SELECT g, 'user' || g || '@example.org', 'First' || g,
           'Last' || g,
           now() - interval '1 day' * (CASE WHEN g % 2 = 0 THEN 370 + g % 300 ELSE g % 300 END),
           now() - interval '3 years' FROM generate_series(1, $N) g"
sql src "CREATE INDEX accounts_last_login ON accounts (last_login)"
sql src "VACUUM ANALYZE accounts"
pgbench -i -q -s 10 "$(dsn src)" >/dev/null 2>&1
sql src "CHECKPOINT"

DUE="last_login < now() - interval '12 months'"

fresh m1; PLAIN_DEL=$(timed_sql m1 "DELETE FROM accounts WHERE $DUE")
fresh m2; run_driver m2 delete; ENG_DEL=$DRV_SECS; RSS_DEL=$DRV_RSS_KB; ROWS_DEL=$DRV_ROWS
fresh m11; run_driver m11 delete 0 "$PARALLEL"; ENG_PAR=$DRV_SECS; RSS_PAR=$DRV_RSS_KB; ROWS_PAR=$DRV_ROWS
# (f) The floor of any batched purge that must name the rows it deleted: the same page ranges as
#     retentiond's (about 90% of batch_size due rows each), one DELETE per range sent by pgbench
#     as a plain client (autocommit, synchronous_commit off as retentiond's batches, results read
#     and discarded, cutoff as a constant): without RETURNING, and with RETURNING id (what the
#     audit digests need).
floor_file() { # db returning-clause|read-then-delete -> SQL file
    local pages due cutoff span
    pages=$(psql -X -qtA "$(dsn "$1")" -c "SELECT pg_relation_size('accounts') / 8192")
    cutoff=$(psql -X -qtA "$(dsn "$1")" -c "SELECT (now() - interval '12 months')::text")
    due=$(psql -X -qtA "$(dsn "$1")" -c "SELECT count(*) FROM accounts WHERE $DUE")
    span=$(( pages * 9000 / (due > 0 ? due : 1) )); [ "$span" -ge 1 ] || span=1
    awk -v pages="$pages" -v span="$span" -v cutoff="$cutoff" -v ret="$2" 'BEGIN {
        print "SET synchronous_commit = off;"
        for (p = 0; p < pages; p += span) {
            w = sprintf("ctid >= '\''(%d,0)'\''::tid AND ctid < '\''(%d,0)'\''::tid AND last_login < '\''%s'\''::timestamptz", p, p + span, cutoff)
            if (ret == "read-then-delete")
                printf "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT id FROM accounts WHERE %s; DELETE FROM accounts WHERE %s; COMMIT;\n", w, w
            else
                printf "DELETE FROM accounts WHERE %s%s;\n", w, ret
        }
    }' >"$WORK/floor.sql"
}
timed_file() { # pgbench as the client: it reads every result and discards it, formatting nothing
    local t0; t0=$(now)
    pgbench -n -t 1 -c 1 -f "$WORK/floor.sql" "$(dsn "$1")" >"$WORK/floor.txt" 2>&1 || { cat "$WORK/floor.txt" >&2; exit 70; }
    awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'
}
fresh m8; floor_file m8 ""; sql m8 "CHECKPOINT"; FLOOR_NORET=$(timed_file m8)
fresh m9; floor_file m9 " RETURNING id"; sql m9 "CHECKPOINT"; FLOOR_RET=$(timed_file m9)
fresh m13; floor_file m13 read-then-delete; sql m13 "CHECKPOINT"; FLOOR_RTD=$(timed_file m13)

fresh m3; PLAIN_UPD=$(timed_sql m3 "UPDATE accounts SET email = NULL, first_name = '' WHERE $DUE")
fresh m4; run_driver m4 anonymize; ENG_UPD=$DRV_SECS; RSS_UPD=$DRV_RSS_KB; ROWS_UPD=$DRV_ROWS

# pgbench: TPS and p99 (from the per-transaction logs, -l). Over the whole SECS seconds for the
# idle run; for the runs beside a purge, over the purge's own window only (transactions that
# completed between its start and its end): averaged over SECS, a 2 s purge inside a 10 s run
# would be diluted by the idle seconds around it.
pgbench_run() { # db tag   (background; its logs stay in $WORK/pgbench_<tag>_log.*)
    rm -f "$WORK"/pgbench_"$2"_log.*
    (cd "$WORK" && pgbench -n -c 4 -j 2 -T "$SECS" -l --log-prefix="$WORK/pgbench_$2_log" \
        "$(dsn "$1")" >"$WORK/pgbench_$2.txt" 2>&1)
}
pgbench_stats() { # tag [from to] (epoch seconds) -> "tps p99_ms"
    cat "$WORK"/pgbench_"$1"_log.* | awk -v from="${2:-0}" -v to="${3:-1e12}" '
        { t = $5 + $6 / 1e6; if (t >= from && t <= to) print $3 }' | sort -n |
        awk -v from="${2:-}" -v to="${3:-}" -v secs="$SECS" '
        { v[NR] = $1 }
        END { len = (from == "" ? secs : to - from); i = int(NR * 0.99); if (i < 1) i = 1;
              printf "%.1f %.1f\n", NR / len, v[i] / 1000 }'
}
fresh m5; pgbench_run m5 idle; read -r IDLE_TPS IDLE_P99 < <(pgbench_stats idle)
fresh m6
pgbench_run m6 purge &
PB=$!
sleep 2
T0=$(now); run_driver m6 delete; T1=$(now); DURING_ENG=$DRV_SECS
wait $PB; read -r PURGE_TPS PURGE_P99 < <(pgbench_stats purge "$T0" "$T1")
fresh m12
pgbench_run m12 parallel &
PB=$!
sleep 2
T0=$(now); run_driver m12 delete 0 "$PARALLEL"; T1=$(now); DURING_PAR=$DRV_SECS
wait $PB; read -r PAR_TPS PAR_P99 < <(pgbench_stats parallel "$T0" "$T1")
fresh m10
pgbench_run m10 throttled &
PB=$!
sleep 2
T0=$(now); run_driver m10 delete "$THROTTLE_MS"; T1=$(now); DURING_THR=$DRV_SECS
wait $PB; read -r THR_TPS THR_P99 < <(pgbench_stats throttled "$T0" "$T1")
fresh m7
pgbench_run m7 delete &
PB=$!
sleep 2
T0=$(now); DURING_PLAIN=$(timed_sql m7 "DELETE FROM accounts WHERE $DUE"); T1=$(now)
wait $PB; read -r DEL_TPS DEL_P99 < <(pgbench_stats delete "$T0" "$T1")

echo
echo "rows: $N, due: $ROWS_DEL (purge) / $ROWS_PAR (parallel purge) / $ROWS_UPD (anonymize), batch_size 10000, journal $JOURNAL"
printf "purge:     plain DELETE %8.3f s   retentiond %8.3f s   ratio %s (target <= 1.5)\n" \
    "$PLAIN_DEL" "$ENG_DEL" "$(ratio "$PLAIN_DEL" "$ENG_DEL")"
printf "parallel:  retentiond with parallel: %s  %8.3f s   ratio %s (target <= 1.5)\n" \
    "$PARALLEL" "$ENG_PAR" "$(ratio "$PLAIN_DEL" "$ENG_PAR")"
printf "floor:     range DELETEs sent by pgbench, no RETURNING %.3f s (ratio %s), RETURNING id %.3f s (ratio %s), SELECT id + DELETE in REPEATABLE READ %.3f s (ratio %s)\n" \
    "$FLOOR_NORET" "$(ratio "$PLAIN_DEL" "$FLOOR_NORET")" "$FLOOR_RET" "$(ratio "$PLAIN_DEL" "$FLOOR_RET")" \
    "$FLOOR_RTD" "$(ratio "$PLAIN_DEL" "$FLOOR_RTD")"
printf "anonymize: plain UPDATE %8.3f s   retentiond %8.3f s   ratio %s (target <= 1.5)\n" \
    "$PLAIN_UPD" "$ENG_UPD" "$(ratio "$PLAIN_UPD" "$ENG_UPD")"
printf "peak RSS:  purge %d KiB, parallel purge %d KiB, anonymize %d KiB (target < 65536)\n" "$RSS_DEL" "$RSS_PAR" "$RSS_UPD"
printf "pgbench (-c 4, %ss runs): idle %s tps p99 %s ms | within retentiond's purge (%ss) %s tps p99 %s ms | within the plain DELETE (%ss) %s tps p99 %s ms\n" \
    "$SECS" "$IDLE_TPS" "$IDLE_P99" "$DURING_ENG" "$PURGE_TPS" "$PURGE_P99" \
    "$DURING_PLAIN" "$DEL_TPS" "$DEL_P99"
printf "throttled: retentiond with sleep_between_batches %s ms took %s s (%s x the plain DELETE); pgbench within it %s tps p99 %s ms\n" \
    "$THROTTLE_MS" "$DURING_THR" "$(ratio "$PLAIN_DEL" "$DURING_THR")" "$THR_TPS" "$THR_P99"
printf "parallel:  pgbench within the purge with parallel: %s (%ss) %s tps p99 %s ms\n" \
    "$PARALLEL" "$DURING_PAR" "$PAR_TPS" "$PAR_P99"
awk -v i="$IDLE_TPS" -v t="$THR_TPS" 'BEGIN{printf "TPS during the throttled purge / idle: %.0f%%\n", 100*t/i}'
awk -v i="$IDLE_TPS" -v t="$PAR_TPS" 'BEGIN{printf "TPS during the parallel purge / idle: %.0f%%\n", 100*t/i}'
awk -v i="$IDLE_TPS" -v p="$PURGE_TPS" -v d="$DEL_TPS" 'BEGIN{printf "TPS during the purge / idle: %.0f%% (target >= 80%%); during the plain DELETE / idle: %.0f%%\n", 100*p/i, 100*d/i}'
