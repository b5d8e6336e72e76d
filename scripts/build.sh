#!/usr/bin/env bash
# Configures and builds everything (Release, Ninja) into a build folder: the
# one set of build lines that CI (scripts/test.sh), docker/Dockerfile's
# builder stage and scripts/run-notebook.sh all run, so they cannot drift.
#
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake args (-D...)...] [TARGET...]
#   BUILD_DIR defaults to ./build (relative to the repository root).
#   Arguments starting with '-' go to cmake; the others are ninja targets
#   (none: build everything: server, client, tests, benchmarks).
#   LAYERSERVE_JOBS=N sets ninja's parallelism (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build}"
shift || true
cmake_args=()
targets=()
for a in "$@"; do
  case "$a" in
    -*) cmake_args+=("$a") ;;
    *) targets+=("$a") ;;
  esac
done
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}"
ninja -C "$build_dir" -j"${LAYERSERVE_JOBS:-$(nproc)}" "${targets[@]}"
