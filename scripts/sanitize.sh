#!/usr/bin/env bash
# Builds everything with AddressSanitizer + UndefinedBehaviorSanitizer in build-asan and runs the
# whole ctest suite there. Any sanitizer report aborts the process (-fno-sanitize-recover=all), so
# a finding is a failed test. Usage: scripts/sanitize.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${RETENTIOND_JOBS:-$(nproc)}
build=${RETENTIOND_ASAN_BUILD:-build-asan}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DRETENTIOND_WERROR=ON \
  -DRETENTIOND_SANITIZE=address,undefined >/dev/null
start=$(date +%s)
cmake --build "$build" -j"$jobs"
built=$(date +%s)
# Leak checking stays on; scripts/lsan.supp names third-party leaks (none are known today).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [[ -f scripts/lsan.supp ]]; then
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp:print_suppressions=0}
fi
status=0
(cd "$build" && ctest --output-on-failure -j"$jobs" --timeout 1200 "$@") || status=$?
done_at=$(date +%s)
echo "sanitize: build $((built - start)) s, tests $((done_at - built)) s, status $status"
exit $status
