#!/usr/bin/env bash
# Builds the libFuzzer target over the LayerService (tests/fuzz) with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer, and runs it from the
# committed seed corpus for a bounded time. Fails on any crash, leak,
# sanitizer report, timeout or out-of-memory.
#
# usage: scripts/fuzz.sh [SECONDS]       (default 60; or LAYERSERVE_FUZZ_SECONDS)
# Environment:
#   LAYERSERVE_FUZZ_BUILD_DIR   build folder (default build-fuzz)
#   LAYERSERVE_JOBS             ninja -j (default 2)
#   LAYERSERVE_FUZZ_WORKERS     parallel fuzzing jobs (default 1)
# New interesting inputs go to build-fuzz/corpus (not to the repository);
# a crash leaves crash-*/leak-*/timeout-* files in build-fuzz/artifacts,
# which `build-fuzz/tests/fuzz/service_fuzzer FILE` replays.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-${LAYERSERVE_FUZZ_SECONDS:-60}}"
build="${LAYERSERVE_FUZZ_BUILD_DIR:-$repo/build-fuzz}"
jobs="${LAYERSERVE_JOBS:-2}"
workers="${LAYERSERVE_FUZZ_WORKERS:-1}"

# Debian's oneDNN and OpenBLAS run on libgomp; clang would link its own
# libomp. -fopenmp=libgomp keeps one runtime (clang then compiles our
# `omp parallel` regions serially, which a single-threaded fuzzer wants
# anyway). fuzzer-no-link adds coverage instrumentation to every library
# the target links; the target itself links libFuzzer.
cmake -S "$repo" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DLAYERSERVE_SANITIZE=address,undefined,fuzzer-no-link \
  -DLAYERSERVE_FUZZ=ON -DLAYERSERVE_BUILD_BENCH=OFF \
  -DLAYERSERVE_TEST_AREAS=fuzz \
  -DOpenMP_CXX_FLAGS=-fopenmp=libgomp -DOpenMP_CXX_LIB_NAMES=gomp \
  -DOpenMP_gomp_LIBRARY=/usr/lib/x86_64-linux-gnu/libgomp.so.1 \
  > "$build.configure.log" || { cat "$build.configure.log"; exit 1; }
ninja -C "$build" -j "$jobs" service_fuzzer

rm -rf "$build/artifacts"
mkdir -p "$build/corpus" "$build/artifacts"
# -rss_limit_mb: the service's own limits keep a request to a few MB; a
# leak or runaway allocation trips this. -timeout: no single input may run
# for more than 10 s. -max_len: requests of the corpus are < 8 KB.
# detect_leaks is on by default in ASan; halt_on_error turns every UBSan
# report into a failure.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
cd "$build"
set +e
if [ "$workers" -gt 1 ]; then
  parallel=(-jobs="$workers" -workers="$workers")
else
  parallel=()
fi
"$build/tests/fuzz/service_fuzzer" \
  -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
  -timeout=10 -max_len=16384 -print_final_stats=1 \
  -artifact_prefix="$build/artifacts/" "${parallel[@]}" \
  "$build/corpus" "$repo/tests/fuzz/corpus" 2>&1 | tee "$build/fuzz.log"
status="${PIPESTATUS[0]}"
set -e
runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/fuzz.log" |
        awk '{s += $2} END {print s + 0}')"
echo "fuzz: ${runs} executions in ${seconds} s, exit status ${status}"
if [ "$status" -ne 0 ] || ls "$build/artifacts" | grep -q .; then
  echo "fuzz: FAILED; reproducers in $build/artifacts:" >&2
  ls -l "$build/artifacts" >&2
  exit 1
fi
