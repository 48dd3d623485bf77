#!/usr/bin/env bash
# Redis session purge bench (issue 7): N session hashes (default 1,000,000) in a private local
# redis-server, half with a `last_seen` clock past the 12 h limit, a tenth without a TTL (the rest
# 12 h). Measures, each time on a freshly loaded keyspace:
#   1. retentiond's purge with default limits (max_fraction 0.5: a counting pass that reads every
#      key and keeps the due keys, up to 16 MiB, then the batches from them without a second scan),
#   2. retentiond's purge with --force (purge pass only),
#   3. the shell baseline an admin would write first:
#        redis-cli --scan --pattern 'sess:*' | xargs redis-cli unlink
#      (it deletes every matching key, due or not: it cannot read a clock),
#   4. raw DEL throughput, the server's limit: `redis-cli --pipe` of one DEL per due key (exactly
#      the keys retentiond deletes, one connection, fully pipelined: the fair comparison), and
#      `redis-benchmark -P 64 DEL sess:__rand_int__` (50 connections, random keys: hits and
#      misses, misses are cheaper),
#   5. the floor: the server's time to SCAN the keyspace alone (an EVAL loop of SCAN COUNT 1000,
#      no round trips), which any purge that reads clocks pays before deleting anything.
# "keys/s" for retentiond is due keys deleted per second of the whole purge (scan, reads,
# journal, re-check, delete); for raw DEL, keys deleted per second when the keys are given.
# Peak RSS of the retentiond driver comes from /usr/bin/time -v (Debian package `time`).
#
# usage: bench/redis_bench.sh [N]      env: BUILD_DIR (a configured build dir, default build),
#                                           SCAN_COUNT (the rule's scan_count, default 1000),
#                                           BATCH (the rule's batch_size, default 5000),
#                                           JOURNAL (audit|digest|none, default audit)
# The driver journals every batch as the CLI does: JOURNAL=audit (default) is the real AuditLog
# in the bench's temp dir (HMAC digest of every key, pending-keys file, fsyncs), digest only
# computes the digests, none counts batches.
# The driver (bench/redis_purge_bench.cpp) is compiled here with -O2 with the engine source,
# linked against BUILD_DIR's daemon/libretentiond_core.a and libretentiond_util.a for the rest (the audit log).
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
[ -f "$BUILD_DIR/daemon/libretentiond_core.a" ] || { echo "build retentiond_core in $BUILD_DIR first" >&2; exit 69; }
JOURNAL=${JOURNAL:-audit}
BATCH=${BATCH:-5000}

# --- the driver -------------------------------------------------------------------------------
DRIVER=$WORK/redis_purge_bench
echo "building the driver (-O2)..." >&2
g++ -std=c++20 -O2 -DNDEBUG -I"$ROOT/include" -I"$ROOT/daemon" -I"$ROOT/daemon/engines/redis" -I"$BUILD_DIR/generated" \
    "$ROOT/bench/redis_purge_bench.cpp" "$ROOT"/daemon/engines/redis/*.cpp \
    "$BUILD_DIR/daemon/libretentiond_core.a" "$BUILD_DIR/daemon/libretentiond_util.a" \
    -o "$DRIVER" $(pkg-config --libs libpqxx hiredis libsystemd yaml-cpp) -lpq -lspdlog -lfmt \
    -ldate-tz -lcrypto -lpthread

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
        --max-ttl "1 day" --batch "$BATCH" --scan-count "${SCAN_COUNT:-1000}" \
        --journal "$JOURNAL" --dir "$WORK" "$@" >"$WORK/out.txt"
    rm -rf "$WORK/bench-audit.jsonl" "$WORK/bench-audit.jsonl.pending"
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

echo "== $N keys, $((N / 2)) due, $((N / 10)) without TTL; scan_count ${SCAN_COUNT:-1000}, batch_size $BATCH, journal $JOURNAL; load $(cut -d' ' -f1-3 /proc/loadavg); redis $(redis-server --version | awk '{ print $3 }'); $(nproc) cores"

load
run_driver "retentiond dry run" --dry-run
run_driver "retentiond purge (limits: counting pass keeping the due keys, then the batches)"
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

load
cli config resetstat >/dev/null
CPU0=$(server_cpu)
t0=$(now_s)
cli eval 'local c, n = "0", 0
repeat
  local r = redis.call("SCAN", c, "MATCH", ARGV[1], "COUNT", 1000)
  c, n = r[1], n + #r[2]
until c == "0"
return n' 0 "$PATTERN" >/dev/null
t1=$(now_s)
SCAN_S=$(elapsed "$t0" "$t1")
CPU_SCAN=$(cpu_since "$CPU0")
echo "floor: SCAN of the keyspace alone, server-side (EVAL loop, COUNT 1000): seconds=$SCAN_S server_cpu_s=$CPU_SCAN"

echo "== summary"
awk -v d="$DUE" -v n="$N" -v def="$RETENTIOND_DEFAULT" -v force="$RETENTIOND_FORCE" -v sh="$SHELL_S" \
    -v bench="$RAW_BENCH" -v pipe="$RAW_PIPE" -v cd="$CPU_DEFAULT" -v cf="$CPU_FORCE" \
    -v cs="$CPU_SHELL" -v cp="$CPU_PIPE" -v scan="$SCAN_S" -v cscan="$CPU_SCAN" 'BEGIN {
    printf "retentiond (limits) %.3f s = %.0f due keys deleted/s; --force %.3f s = %.0f due keys deleted/s\n", def, d / def, force, d / force
    printf "shell baseline %.3f s: retentiond is %.2fx (limits) / %.2fx (--force) the shell'"'"'s speed (>1 = faster)\n", sh, sh / def, sh / force
    printf "vs raw DEL of the due keys (--pipe, 1 connection, %.0f keys/s): %.0f%% (limits), %.0f%% (--force)\n", pipe, 100 * d / def / pipe, 100 * d / force / pipe
    printf "vs raw DEL (redis-benchmark -P 64, 50 connections, %.0f keys/s): %.0f%% (limits), %.0f%% (--force)\n", bench, 100 * d / def / bench, 100 * d / force / bench
    printf "floor: SCAN alone %.3f s + raw DEL of the due keys %.3f s: a purge doing nothing else (no clock read, no re-check, no journal) would reach %.0f due keys/s = %.0f%% of raw DEL (--pipe)\n", scan, d / pipe, d / (scan + d / pipe), 100 / (1 + scan * pipe / d)
    printf "server CPU s: retentiond %.3f (limits) / %.3f (--force), shell baseline %.3f, raw DEL --pipe %.3f, SCAN alone %.3f\n", cd, cf, cs, cp, cscan
    printf "server CPU us per due key: retentiond %.1f (--force), raw DEL %.1f; per key examined: retentiond %.1f, SCAN alone %.1f\n", 1e6 * cf / d, 1e6 * cp / d, 1e6 * cf / n, 1e6 * cscan / n
}'
