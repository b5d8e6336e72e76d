#!/usr/bin/env bash
# The test suite under sanitizers, as CI runs it (scripts/test.sh):
#
# 1. AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer): the
#    whole tree built with -DLAYERSERVE_SANITIZE=address,undefined into
#    build-asan, and the whole ctest suite run there, except the slowest
#    sweeps (LAYERSERVE_ASAN_EXCLUDE) which repeat, on more shapes, what
#    the rest already covers. The server binary the end-to-end and
#    hardening tests start is the sanitized one too, so its exit at SIGTERM
#    runs the leak check.
# 2. ThreadSanitizer: the server, the service and hardening tests built
#    with -DLAYERSERVE_SANITIZE=thread into build-tsan, and the concurrency
#    tests (LAYERSERVE_TSAN_TESTS) run there. libgomp (OpenMP), oneDNN,
#    OpenBLAS and Debian's Abseil are not TSan-instrumented: the tests run
#    the servers with one intra-op thread (--threads=1, so no OpenMP teams;
#    the concurrency under test is between calls, which is ours), and
#    scripts/tsan-suppressions.txt silences what absl::Mutex guards.
#
# usage: scripts/test-sanitizers.sh [asan|tsan]...   (default: both)
# Environment: LAYERSERVE_JOBS (ninja -j, default 2), CTEST_JOBS (default
# nproc), LAYERSERVE_ASAN_EXCLUDE / LAYERSERVE_TSAN_TESTS (ctest regexes).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${LAYERSERVE_JOBS:-2}"
ctest_jobs="${CTEST_JOBS:-$(nproc)}"
steps=("$@")
if [ "${#steps[@]}" -eq 0 ]; then steps=(asan tsan); fi

# Excluded under ASan: the fast-vs-naive parity sweep over many shapes
# (the heaviest test; the fast layers' own tests cover the same code), and
# the Docker image check, which compares the binaries' shared libraries
# with the image's packages (a sanitized binary needs libasan, which the
# image rightly does not install).
asan_exclude="${LAYERSERVE_ASAN_EXCLUDE:-ParitySweep|client_docker_check}"
# Everything about concurrent calls: admission, cancellation while others
# run, shutdown with a call in flight, the concurrent-calls service test
# and the 16-client load test.
tsan_tests="${LAYERSERVE_TSAN_TESTS:-Concurrent|Admission|CancelTest|Deadline|Shutdown|hardening_load_test}"

configure() {  # configure BUILD_DIR SANITIZERS [extra cmake args...]
  local dir="$1" sanitize="$2"
  shift 2
  cmake -S "$repo" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_FLAGS=-g1 -DLAYERSERVE_SANITIZE="$sanitize" \
    -DLAYERSERVE_BUILD_BENCH=OFF "$@" > "$dir.configure.log" ||
    { cat "$dir.configure.log"; exit 1; }
}

for step in "${steps[@]}"; do
  case "$step" in
    asan)
      dir="$repo/build-asan"
      configure "$dir" address,undefined
      ninja -C "$dir" -j "$jobs"
      # detect_leaks: LeakSanitizer at every exit, the server's included.
      # allocator_may_return_null: a tensor too large to allocate must come
      # back as RESOURCE_EXHAUSTED (aligned_alloc returning null), which is
      # what the tests check, not abort inside ASan's allocator.
      # The load test runs shorter here and skips its RSS bound (ASan's
      # quarantine holds freed memory on purpose).
      (cd "$dir" &&
        ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:allocator_may_return_null=1" \
        LSAN_OPTIONS="suppressions=$repo/scripts/lsan-suppressions.txt:print_suppressions=0" \
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        LAYERSERVE_LOAD_SECONDS="${LAYERSERVE_LOAD_SECONDS:-10}" \
        LAYERSERVE_LOAD_WARMUP_SECONDS=3 \
        ctest --output-on-failure -j"$ctest_jobs" --timeout 1800 \
          -E "$asan_exclude")
      ;;
    tsan)
      dir="$repo/build-tsan"
      configure "$dir" thread
      ninja -C "$dir" -j "$jobs" layerserve service_test service_e2e_test \
        hardening_admission_test hardening_cancel_test hardening_load_test
      (cd "$dir" &&
        TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:print_suppressions=0:suppressions=$repo/scripts/tsan-suppressions.txt" \
        LAYERSERVE_LOAD_SECONDS="${LAYERSERVE_LOAD_SECONDS:-10}" \
        LAYERSERVE_LOAD_WARMUP_SECONDS=3 \
        ctest --output-on-failure -j"$ctest_jobs" --timeout 1800 \
          -R "$tsan_tests")
      ;;
    *)
      echo "usage: $0 [asan|tsan]..." >&2
      exit 2
      ;;
  esac
done
