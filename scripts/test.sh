#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root), builds, and runs every test.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh build
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 900
