#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (+ASan/UBSan) and runs each for SECONDS (default 60) on
# its seed corpus (tests/fuzz/corpus/<target>, read only; the grown corpus is kept in
# build-fuzz/corpus/<target> between runs). A crash leaves its input in
# build-fuzz/crash-*; turn each into a regression test before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
./scripts/install-deps.sh
command -v clang++ >/dev/null || apt-get install -y -qq clang libclang-rt-14-dev
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRETENTIOND_FUZZ=ON -DRETENTIOND_TESTS=OFF >/dev/null
targets=(fuzz_config fuzz_time fuzz_csv fuzz_files_jsonl)
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}"
status=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  echo "== $t (${seconds}s)"
  (cd build-fuzz && ./tests/fuzz/"$t" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
     -print_final_stats=1 "corpus/$t" "../tests/fuzz/corpus/$t" >"fuzz-$t.log" 2>&1) || status=1
  grep -E '^#[0-9]+ *DONE|stat::number_of_executed_units|stat::average_exec_per_sec|ERROR|SUMMARY' \
    "build-fuzz/fuzz-$t.log" | tail -5
done
exit $status
