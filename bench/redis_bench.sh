#!/usr/bin/env bash
# Redis session purge bench (issue 7): N session hashes (default 1,000,000) in a private local
# redis-server, half with a `last_seen` clock past the 12 h limit, a tenth without a TTL (the rest
# 12 h). Measures, each time on a freshly loaded keyspace:
#   1. retentiond's purge with default limits (max_fraction 0.5: counting pass + purge pass),
#   2. retentiond's purge with --force (purge pass only),
#   3. the shell baseline an admin would write first:
#        redis-cli --scan --pattern 'sess:*' | xargs redis-cli unlink
#      (it deletes every matching key, due or not: it cannot read a clock),
#   4. raw DEL throughput, the server's limit: `redis-benchmark -P 64 DEL sess:__rand_int__` and
#      a `redis-cli --pipe` of DEL for exactly the due keys.
# Peak RSS of the retentiond driver comes from /usr/bin/time -v (Debian package `time`).
#
# usage: bench/redis_bench.sh [N]      env: BUILD_DIR (a configured build dir, default build),
#                                           SCAN_COUNT (the rule's scan_count, default 1000)
# The driver (bench/redis_purge_bench.cpp) is compiled here with -O2 from the engine sources, so
# the figures do not depend on the build dir's build type.
set -euo pipefail

N=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/retentiond-redis-bench-XXXXXX")
SOCK=$WORK/redis.sock
PATTERN='sess:*'
REDIS_PID=

cleanup() {
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in redis-server redis-cli redis-benchmark g++ pkg-config awk; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 69; }
done
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time (apt-get install time)" >&2; exit 69; }

# --- the driver -------------------------------------------------------------------------------
DRIVER=$WORK/redis_purge_bench
echo "building the driver (-O2)..." >&2
g++ -std=c++20 -O2 -DNDEBUG -DONLY_C_LOCALE=1 -DHAS_STRING_VIEW=1 -DUSE_OS_TZDB=1 \
    -I"$ROOT/include" -I"$BUILD_DIR/generated" -I"$ROOT/daemon" \
    "$ROOT/bench/redis_purge_bench.cpp" "$ROOT/daemon/redis_engine.cpp" \
    "$ROOT/daemon/redis_url.cpp" "$ROOT/daemon/timeutil.cpp" "$ROOT/daemon/duration.cpp" \
    "$ROOT/daemon/errors.cpp" \
    -o "$DRIVER" $(pkg-config --libs hiredis) -ldate-tz -lpthread

# --- the server -------------------------------------------------------------------------------
redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save "" --appendonly no \
    --dir "$WORK" --daemonize no --logfile "$WORK/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do
    redis-cli -s "$SOCK" ping >/dev/null 2>&1 && break
    sleep 0.05
done
cli() { redis-cli -s "$SOCK" "$@"; }

now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

# Keys sess:%012d (the format of redis-benchmark's __rand_int__). Even i: last_seen 2 days ago
# (due under a 12 h rule); odd i: 1 hour ago. i % 20 in {0, 1}: no TTL (a tenth, half of them
# due); the rest: a 12 h TTL, below max_ttl.
load() {
    cli flushall >/dev/null
    local now
    now=$(date +%s)
    awk -v n="$N" -v old=$((now - 2 * 86400)) -v recent=$((now - 3600)) 'BEGIN {
        for (i = 0; i < n; i++) {
            k = sprintf("sess:%012d", i); u = "u" i
            ls = (i % 2 == 0) ? old : recent
            printf "*6\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$4\r\nuser\r\n$%d\r\n%s\r\n$9\r\nlast_seen\r\n$%d\r\n%s\r\n", length(k), k, length(u), u, length(ls), ls
            if (i % 20 >= 2)
                printf "*3\r\n$6\r\nEXPIRE\r\n$%d\r\n%s\r\n$5\r\n43200\r\n", length(k), k
        }
    }' | cli --pipe >/dev/null
    local size
    size=$(cli dbsize)
    [ "$size" = "$N" ] || { echo "load failed: dbsize $size" >&2; exit 70; }
}

keyspace() { cli info keyspace | tr -d '\r' | awk -F: '/^db0/ { print $2 }'; }
# The server's CPU seconds (user + sys, all threads): less sensitive to a busy machine than wall
# time, and the quantity the purge costs the production server.
server_cpu() { cli info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { t += $2 } END { printf "%.3f", t }'; }
cpu_since() { awk -v a="$1" -v b="$(server_cpu)" 'BEGIN { printf "%.3f", b - a }'; }

# Per-command server time of the last run: calls and usec (INFO commandstats).
cmdstats() { cli info commandstats | tr -d '\r' | awk -F'[:,=]' '/^cmdstat_/ { sub("cmdstat_", "", $1); printf " %s=%s/%.0fms", $1, $3, $5 / 1000 }'; }

run_driver() { # label, extra args...
    local label=$1
    shift
    cli config resetstat >/dev/null
    CPU0=$(server_cpu)
    /usr/bin/time -v -o "$WORK/time.txt" "$DRIVER" "unix://$SOCK" "$PATTERN" "12 hours" \
        --max-ttl "1 day" --batch 5000 --scan-count "${SCAN_COUNT:-1000}" "$@" >"$WORK/out.txt"
    local rss wall
    SERVER_CPU=$(cpu_since "$CPU0")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.txt")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$WORK/time.txt")
    local ucpu scpu
    ucpu=$(awk -F': ' '/User time/ { print $2 }' "$WORK/time.txt")
    scpu=$(awk -F': ' '/System time/ { print $2 }' "$WORK/time.txt")
    echo "$label: $(cat "$WORK/out.txt") wall=$wall client_cpu_s=$ucpu+$scpu peak_rss_kib=$rss server_cpu_s=$SERVER_CPU after: $(keyspace)"
    echo "  server time by command (calls/usec):$(cmdstats)"
}

echo "== $N keys, $((N / 2)) due, $((N / 10)) without TTL; scan_count ${SCAN_COUNT:-1000}; load $(cut -d' ' -f1-3 /proc/loadavg); redis $(redis-server --version | awk '{ print $3 }'); $(nproc) cores"

load
run_driver "retentiond dry run" --dry-run
run_driver "retentiond purge (limits: counting pass + purge pass)"
CPU_DEFAULT=$SERVER_CPU
RETENTIOND_DEFAULT=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^seconds=/) { sub("seconds=", "", $i); print $i } }' "$WORK/out.txt")

load
run_driver "retentiond purge --force (one pass)" --force
CPU_FORCE=$SERVER_CPU
RETENTIOND_FORCE=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^seconds=/) { sub("seconds=", "", $i); print $i } }' "$WORK/out.txt")

load
CPU0=$(server_cpu)
t0=$(now_s)
cli --scan --pattern "$PATTERN" | xargs redis-cli -s "$SOCK" unlink >/dev/null
t1=$(now_s)
SHELL_S=$(elapsed "$t0" "$t1")
CPU_SHELL=$(cpu_since "$CPU0")
echo "shell baseline (scan | xargs unlink): seconds=$SHELL_S server_cpu_s=$CPU_SHELL deleted=$N (every key, due or not) deleted_per_s=$(rate "$N" "$SHELL_S") after: $(keyspace)"

load
BENCH=$(redis-benchmark -s "$SOCK" -q -n "$N" -P 64 -r "$N" DEL 'sess:__rand_int__' | tr '\r' '\n' | grep -i 'requests per second' | tail -1)
echo "redis-benchmark -P 64 -n $N -r $N DEL sess:__rand_int__: $BENCH (commands/s, hits and misses)"
RAW_BENCH=$(echo "$BENCH" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/) { print $i; exit } }')

load
awk -v n="$N" 'BEGIN {
    for (i = 0; i < n; i += 2) { k = sprintf("sess:%012d", i); printf "*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n", length(k), k }
}' >"$WORK/del.resp"
CPU0=$(server_cpu)
t0=$(now_s)
cli --pipe <"$WORK/del.resp" >/dev/null
t1=$(now_s)
PIPE_S=$(elapsed "$t0" "$t1")
CPU_PIPE=$(cpu_since "$CPU0")
DUE=$((N / 2))
RAW_PIPE=$(rate "$DUE" "$PIPE_S")
echo "raw DEL of the $DUE due keys (redis-cli --pipe): seconds=$PIPE_S deleted_per_s=$RAW_PIPE server_cpu_s=$CPU_PIPE after: $(keyspace)"

echo "== summary"
awk -v d="$DUE" -v def="$RETENTIOND_DEFAULT" -v force="$RETENTIOND_FORCE" -v sh="$SHELL_S" \
    -v bench="$RAW_BENCH" -v pipe="$RAW_PIPE" -v cd="$CPU_DEFAULT" -v cf="$CPU_FORCE" \
    -v cs="$CPU_SHELL" -v cp="$CPU_PIPE" 'BEGIN {
    printf "retentiond (limits) %.3f s = %.0f due keys/s; --force %.3f s = %.0f due keys/s\n", def, d / def, force, d / force
    printf "shell baseline %.3f s: retentiond is %.2fx (limits) / %.2fx (--force) as fast\n", sh, sh / def, sh / force
    printf "vs raw DEL (redis-benchmark %.0f/s): %.0f%% (limits), %.0f%% (--force)\n", bench, 100 * d / def / bench, 100 * d / force / bench
    printf "vs raw DEL (--pipe of the due keys %.0f/s): %.0f%% (limits), %.0f%% (--force)\n", pipe, 100 * d / def / pipe, 100 * d / force / pipe
    printf "server CPU s: retentiond %.3f (limits) / %.3f (--force), shell baseline %.3f, raw DEL --pipe %.3f\n", cd, cf, cs, cp
}'
