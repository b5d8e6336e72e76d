// Makes OpenBLAS use the kernels this CPU can run best, when its own CPU
// detection has given up.
//
// Debian's OpenBLAS (0.3.21, DYNAMIC_ARCH) picks its kernels from the CPU
// model number. On CPUs newer than the release (e.g. Intel family 6 model
// 207) it does not know the model and falls back to "Prescott", SSE3
// kernels: dgemm then runs at ~15 GFLOP/s per core where the SkylakeX
// (AVX-512) kernels of the same library reach ~55 on the same core. When that
// happened and the CPU has the needed instruction sets, this re-runs
// OpenBLAS's own kernel selection with OPENBLAS_CORETYPE set to SkylakeX
// (AVX-512 F/CD/BW/DQ/VL) or Haswell (AVX2 + FMA), exactly what a user would
// do by exporting that variable before starting the process.
//
// Nothing changes when the user set OPENBLAS_CORETYPE, when OpenBLAS
// detected a real core, or when the library lacks the dynamic-arch entry
// points (they are looked up as weak symbols).
//
// Thread-safety: EnsureOpenBlasKernels may be called concurrently; the work
// happens once. It must run before any other BLAS call is in flight (the
// kernel table is swapped), so every caller of BLAS in lib calls it first.
#ifndef LAYERSERVE_LIB_LAYERS_FAST_OPENBLAS_KERNELS_H_
#define LAYERSERVE_LIB_LAYERS_FAST_OPENBLAS_KERNELS_H_

#include <string>

namespace layerserve::fast {

// Returns OpenBLAS's core name in use afterwards ("SkylakeX", "Haswell",
// "Prescott", ...).
const std::string& EnsureOpenBlasKernels();

}  // namespace layerserve::fast

#endif  // LAYERSERVE_LIB_LAYERS_FAST_OPENBLAS_KERNELS_H_
