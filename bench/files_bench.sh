#!/bin/sh
# Files engine bench (issue 6): a Tally-shaped CSV export of SIZE bytes (default 1 GiB; free-text
# answers with commas, quotes, line breaks; 40% of records older than 2 years), then:
#   cp                     a copy of the cached input into the page cache, no fsync: the issue's
#                          baseline, a memory copy rather than the disk's limit
#   cp + sync              the same made durable, as retentiond's output is
#   cp + sync + mv         an atomic replace, the floor of any safe rewrite: the copy fsynced, then
#                          renamed over a cached 1 GiB original, whose eviction (page cache,
#                          extents, and on a `discard` mount a synchronous discard) is in the time
#   mlr --csv filter       Miller keeping the records younger than 2 years (same date condition)
#   retentiond             the files engine deleting the records older than 2 years (rewrite)
# with wall time, CPU time (user + sys) and peak RSS (/usr/bin/time -v) for each. On a shared
# machine compare the CPU times, and the wall times of runs taken in the same moment.
# Then the same Miller / retentiond pair on short records (issue 22): an export of SHORT_SIZE
# bytes (default 418 MB, about 3.3M records of ~130 bytes: every field quoted, CRLF, accents, a
# BOM; half of them older than 2 years), where the per-record cost counts, not the per-byte one.
# Both shapes are printed side by side at the end.
#   bench/files_bench.sh [SIZE_BYTES] [WORKDIR] [SHORT_SIZE_BYTES]
set -eu

size=${1:-1073741824}
short_size=${3:-418000000}
src=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$(mktemp -d /var/tmp/retentiond-files-bench.XXXXXX)}
mkdir -p "$work/bin" "$work/root"
cxx=${CXX:-g++}
flags="-std=c++20 -O2 -DNDEBUG"

echo "== building (g++ -O2) in $work/bin"
$cxx $flags -o "$work/bin/files_gen" "$src/bench/files_gen.cpp"
# The driver links the engine's sources directly, so the bench needs no CMake build dir (the
# files kind reads its config through the core's config reader: config/ is linked too). One
# object per source, through ccache when it is installed.
launcher=$(command -v ccache || true)
mkdir -p "$work/obj"
for f in "$src/bench/files_driver.cpp" "$src"/daemon/engines/files/*.cpp \
    "$src"/daemon/engines/common/*.cpp "$src"/daemon/config/*.cpp "$src"/daemon/util/*.cpp; do
    $launcher $cxx $flags -I"$src/include" -I"$src/daemon" -I"$src/daemon/engines/files" \
        -c "$f" -o "$work/obj/$(echo "${f#"$src"/}" | tr / _).o"
done
$cxx -o "$work/bin/files_driver" "$work"/obj/*.o -lyaml-cpp -ldate-tz -lcrypto -lspdlog -lfmt \
    -lpthread

csv="$work/input.csv"
if [ ! -s "$csv" ] || [ "$(stat -c %s "$csv")" -lt "$size" ]; then
    echo "== generating $size bytes"
    "$work/bin/files_gen" "$size" 40 > "$csv"
fi
bytes=$(stat -c %s "$csv")
cutoff=$(date -u -d '2 years ago' '+%Y-%m-%d %H:%M:%S')
target="$work/root/Satisfaction_Submissions_2026-01-01.csv"

# run NAME CMD...: wall seconds and max RSS (KiB) into $work/NAME.time
run() {
    name=$1
    shift
    sync
    /usr/bin/time -v -o "$work/$name.time" "$@"
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/$name.time" |
        awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/$name.time")
    cpu=$(awk -F': ' '/(User|System) time \(seconds\)/ {t += $2} END {print t}' "$work/$name.time")
    eval "${name}_wall=$wall"
    eval "${name}_rss=$rss"
    eval "${name}_cpu=$cpu"
    printf '%-16s %8.2f s wall %8.2f s CPU %8d KiB peak RSS  (load %s)\n' "$name" "$wall" "$cpu" \
        "$rss" "$(cut -d' ' -f1 /proc/loadavg)"
}

cat "$csv" > /dev/null # warm the page cache for every contender alike
echo "== $bytes bytes, cutoff $cutoff (UTC)"
# cp may use copy_file_range/reflinks (no data through user space); cat is the plain
# read+write a rewriting tool has to do.
# Each baseline runs twice and the second run counts (caches and allocator warm, as for
# retentiond, which runs after them on a warm input).
run cp_first cp --reflink=never "$csv" "$work/copy.csv"
rm -f "$work/copy.csv"
run cp cp --reflink=never "$csv" "$work/copy.csv"
rm -f "$work/copy.csv"
run cat_first sh -c "cat '$csv' > '$work/copy.csv'"
rm -f "$work/copy.csv"
run cat sh -c "cat '$csv' > '$work/copy.csv'"
rm -f "$work/copy.csv"
# retentiond fsyncs what it writes: cp + sync is the like-for-like baseline.
run cp_sync_first sh -c "cp --reflink=never '$csv' '$work/copy.csv' && sync '$work/copy.csv'"
rm -f "$work/copy.csv"
run cp_sync sh -c "cp --reflink=never '$csv' '$work/copy.csv' && sync '$work/copy.csv'"
# The original to replace is copied (and cached) before the previous copy is removed, so that the
# timed cp gets recently freed memory as the others do: on a VM, memory the guest has not touched
# for a while can cost a host fault per page on first touch, which doubled cp's CPU time here.
cp "$csv" "$work/orig.csv"
cat "$work/orig.csv" > /dev/null
rm -f "$work/copy.csv"
run cp_sync_mv_first sh -c "cp --reflink=never '$csv' '$work/copy.csv' && sync '$work/copy.csv' && mv '$work/copy.csv' '$work/orig.csv'"
cp "$csv" "$work/copy.csv"
mv "$work/copy.csv" "$work/orig.csv"
cat "$work/orig.csv" > /dev/null
run cp_sync_mv sh -c "cp --reflink=never '$csv' '$work/copy.csv' && sync '$work/copy.csv' && mv '$work/copy.csv' '$work/orig.csv'"
rm -f "$work/orig.csv"
run mlr sh -c "mlr --csv filter '\${Submitted at} > \"$cutoff\"' '$csv' > '$work/mlr.csv'"
mlr_records=$(mlr --icsv --ojson count "$work/mlr.csv" | awk -F: '/count/ {gsub(/[ }]/, "", $2); print $2}')
rm -f "$work/mlr.csv"
cp "$csv" "$target"
cat "$target" > /dev/null
run retentiond_first "$work/bin/files_driver" "$work/root"
cp "$csv" "$target"
cat "$target" > /dev/null
run retentiond "$work/bin/files_driver" "$work/root"
kept=$(mlr --icsv --ojson count "$target" | awk -F: '/count/ {gsub(/[ }]/, "", $2); print $2}')
echo "records kept: retentiond $kept, mlr $mlr_records"
rm -f "$target"

short="$work/input-short.csv"
if [ ! -s "$short" ] || [ "$(stat -c %s "$short")" -lt "$short_size" ]; then
    echo "== generating $short_size bytes of short records"
    "$work/bin/files_gen" "$short_size" 50 short > "$short"
fi
short_bytes=$(stat -c %s "$short")
cat "$short" > /dev/null
echo "== short records: $short_bytes bytes, cutoff $cutoff (UTC)"
run mlr_short sh -c "mlr --csv filter '\${Submitted at} > \"$cutoff\"' '$short' > '$work/mlr.csv'"
mlr_short_records=$(mlr --icsv --ojson count "$work/mlr.csv" |
    awk -F: '/count/ {gsub(/[ }]/, "", $2); print $2}')
rm -f "$work/mlr.csv"
for name in retentiond_short_first retentiond_short; do
    cp "$short" "$target"
    cat "$target" > /dev/null
    run "$name" "$work/bin/files_driver" "$work/root"
done
kept=$(mlr --icsv --ojson count "$target" | awk -F: '/count/ {gsub(/[ }]/, "", $2); print $2}')
echo "records kept: retentiond $kept, mlr $mlr_short_records"
rm -f "$target"

echo "== baselines (second of two runs): cp ${cp_wall} s, cp+sync ${cp_sync_wall} s," \
    "cp+sync+mv ${cp_sync_mv_wall} s, cat ${cat_wall} s"
awk -v r="$retentiond_wall" -v c="$cp_wall" -v cs="$cp_sync_wall" -v m="$mlr_wall" -v k="$cat_wall" \
    -v csm="$cp_sync_mv_wall" -v rc="$retentiond_cpu" -v cc="$cp_cpu" -v csc="$cp_sync_cpu" \
    -v rss="$retentiond_rss" -v bytes="$bytes" 'BEGIN {
    printf "retentiond             = %.2f s, %.0f MB/s, %.2f s CPU\n", r, bytes / r / 1e6, rc
    printf "retentiond / cp        = %.2fx (target <= 2); CPU %.2fx\n", r / c, rc / cc
    printf "retentiond / cp+sync   = %.2fx; CPU %.2fx\n", r / cs, rc / csc
    printf "retentiond / cp+sync+mv = %.2fx\n", r / csm
    printf "retentiond / cat       = %.2fx\n", r / k
}'
echo "== both record shapes (retentiond: second of two runs)"
printf '%-34s %10s %10s %10s %12s %12s\n' shape retentiond mlr mlr/rd "rd CPU" "rd peak RSS"
for shape in long short; do
    if [ "$shape" = long ]; then
        r=$retentiond_wall m=$mlr_wall c=$retentiond_cpu k=$retentiond_rss b=$bytes
    else
        r=$retentiond_short_wall m=$mlr_short_wall c=$retentiond_short_cpu k=$retentiond_short_rss
        b=$short_bytes
    fi
    awk -v s="$shape" -v r="$r" -v m="$m" -v c="$c" -v k="$k" -v b="$b" 'BEGIN {
        printf "%-34s %8.2f s %8.2f s %9.2fx %10.2f s %8.1f MiB\n",
            s " (" int(b / 1e6) " MB)", r, m, m / r, c, k / 1024
    }'
done
echo "targets: mlr / retentiond >= 3, peak RSS < 32 MiB, for both shapes"
[ -n "${2:-}" ] || rm -rf "$work"
