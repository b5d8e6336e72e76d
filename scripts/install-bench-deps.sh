#!/usr/bin/env bash
# Installs what bench/compare_torch.py needs to time PyTorch beside our
# benchmarks: Debian's python3-torch (1.13) and numpy, and an optimized BLAS.
# Not part of CI or the Docker image; run it once on a benchmarking machine.
#
# Why the BLAS matters: Debian's numpy and torch (float64 conv, matmul) call
# whatever libblas.so.3 the alternatives system points at. Without an
# optimized provider that is the slow reference BLAS and PyTorch's float64
# numbers would be meaninglessly low. libopenblas0-openmp is the OpenMP
# OpenBLAS our own build links (via libopenblas-openmp-dev), so both sides
# use the same library.
#
# Idempotent: when everything is present it only runs dpkg-query.
set -euo pipefail

PACKAGES=(
  python3 python3-numpy python3-torch libopenblas0-openmp
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-bench-deps: all ${#PACKAGES[@]} packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install-bench-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Report (and warn about) the BLAS that numpy and torch will load.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
echo "install-bench-deps: libblas.so.3 -> ${blas:-<missing>}"
case "$blas" in
  *openblas*) ;;
  *)
    echo "install-bench-deps: WARNING: libblas.so.3 is not OpenBLAS;" \
      "PyTorch float64 timings will use the reference BLAS." \
      "Fix with: update-alternatives --config libblas.so.3-x86_64-linux-gnu" >&2
    ;;
esac
