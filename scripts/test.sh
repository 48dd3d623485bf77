#!/usr/bin/env bash
# The README's test command: installs what is needed, builds, runs the whole suite; then the whole
# suite again under AddressSanitizer + UndefinedBehaviorSanitizer (scripts/sanitize.sh).
# RETENTIOND_SKIP_SANITIZE=1 skips the second pass (a quicker local loop).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
(cd build && ctest --output-on-failure -j"$(nproc)")
if [ "${RETENTIOND_SKIP_SANITIZE:-0}" != 1 ]; then
  ./scripts/sanitize.sh
fi
