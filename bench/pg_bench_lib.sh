# Shared by the PostgreSQL benches (sourced): a throwaway PostgreSQL 15 cluster in $WORK, the
# purge driver (bench/pg_purge_bench.cpp, compiled with -O2 together with the engine's sources and
# linked against BUILD_DIR's core libraries), and helpers to copy databases and time statements.
# The caller sets ROOT, BUILD_DIR, PORT and JOURNAL and runs with `set -euo pipefail`. Installs
# what is missing (scripts/install-deps.sh) and builds the core libraries in BUILD_DIR first.
# NO_DRIVER=1: the cluster and the helpers only (a bench that times the real binary).
PGBIN=/usr/lib/postgresql/15/bin
WORK=$(mktemp -d "${TMPDIR:-/tmp}/retentiond-pg-bench-XXXXXX")
chmod 755 "$WORK"
DATA=$WORK/data
AS_PG=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$WORK"
    AS_PG=(runuser -u postgres --)
fi
STARTED=

cleanup() {
    if [ -n "$STARTED" ]; then
        "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# What the bench needs (PostgreSQL 15, pgbench, time, the compilers) and the core libraries.
"$ROOT/scripts/install-deps.sh" >&2
[ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target retentiond_core retentiond_util >/dev/null

DRIVER=$WORK/pg_purge_bench
[ -n "${NO_DRIVER:-}" ] || g++ -std=c++20 -O2 -DNDEBUG -I"$ROOT/include" -I"$ROOT/daemon" -I"$ROOT/daemon/engines/postgres" -I"$BUILD_DIR/generated" \
    "$ROOT/bench/pg_purge_bench.cpp" "$ROOT"/daemon/engines/postgres/*.cpp \
    "$BUILD_DIR/daemon/libretentiond_core.a" "$BUILD_DIR/daemon/libretentiond_util.a" \
    -o "$DRIVER" $(pkg-config --libs libpqxx hiredis libsystemd yaml-cpp) -lpq -lspdlog -lfmt \
    -ldate-tz -lcrypto -lpthread

"${AS_PG[@]}" "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust --no-sync >/dev/null
# Durable commits (fsync on) as in production; big WAL so checkpoints do not land mid-measure.
cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PORT
shared_buffers = 256MB
max_wal_size = 8GB
checkpoint_timeout = 30min
CONF
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w start >/dev/null
STARTED=1

dsn() { echo "host=$WORK port=$PORT user=postgres dbname=$1 options=-cclient_min_messages=warning"; }
sql() { psql -X -q -v ON_ERROR_STOP=1 "$(dsn "$1")" -c "$2"; }
sql_value() { psql -X -qtA -v ON_ERROR_STOP=1 "$(dsn "$1")" -c "$2"; }
now() { date +%s.%N; }
fresh() { # db [template]: a copy of the template (default src), so every measure starts alike
    sql postgres "DROP DATABASE IF EXISTS $1"
    sql postgres "CREATE DATABASE $1 TEMPLATE ${2:-src} STRATEGY FILE_COPY"
    sql "$1" "CHECKPOINT"
}
timed_sql() { local t0; t0=$(now); sql "$1" "$2"; awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'; }
run_driver() { # db action [sleep_between_batches ms [parallel]] -> sets DRV_SECS, DRV_RSS_KB, DRV_ROWS
    /usr/bin/time -v -o "$WORK/time.txt" "$DRIVER" "$(dsn "$1")" accounts "$2" 10000 "$JOURNAL" "$WORK" ${3:+"$3"} ${4:+"$4"} >"$WORK/drv.txt"
    echo "  driver ($1 $2 ${3:-0} ${4:-1}): $(cat "$WORK/drv.txt")" >&2
    DRV_SECS=$(awk '{for(i=1;i<NF;i++) if($i=="seconds") print $(i+1)}' "$WORK/drv.txt")
    DRV_RSS_KB=$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}' "$WORK/time.txt")
    DRV_ROWS=$(awk '{print $2}' "$WORK/drv.txt")
    DRV_LINE=$(cat "$WORK/drv.txt")
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b/a}'; }
