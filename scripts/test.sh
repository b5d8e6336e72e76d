#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root), builds, and runs every test.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 900
cd ..
# Issue 6 (hardening): the suite again under AddressSanitizer +
# UndefinedBehaviorSanitizer, the concurrency tests under ThreadSanitizer,
# then the LayerService fuzzer for 60 s. Each step is timed in the log.
time bash scripts/test-sanitizers.sh asan
time bash scripts/test-sanitizers.sh tsan
time bash scripts/fuzz.sh 60
