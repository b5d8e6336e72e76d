#!/usr/bin/env bash
# Configures and builds everything (Release, Ninja) into a build folder.
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]   (default ./build)
# The same lines run in CI (scripts/test.sh) and in docker/Dockerfile's builder.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build}"
shift || true
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
ninja -C "$build_dir" -j"$(nproc)"
