#include "lib/layers/fast/openblas_kernels.h"

#include <cblas.h>

#include <cstdlib>
#include <cstring>

// OpenBLAS's dynamic-arch entry points: exported by DYNAMIC_ARCH builds
// (Debian's), not declared in cblas.h. Weak, so a build without them links
// and simply skips the fix.
extern "C" void gotoblas_dynamic_init(void) __attribute__((weak));
extern "C" void gotoblas_dynamic_quit(void) __attribute__((weak));

namespace layerserve::fast {
namespace {

// The best OpenBLAS core type this CPU supports, or nullptr.
const char* BestCoreType() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
      __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return "Haswell";
  }
  return nullptr;
}

std::string Select() {
  const bool fell_back = std::strcmp(openblas_get_corename(), "Prescott") == 0;
  const char* best = BestCoreType();
  if (fell_back && best != nullptr &&
      std::getenv("OPENBLAS_CORETYPE") == nullptr &&
      gotoblas_dynamic_init != nullptr && gotoblas_dynamic_quit != nullptr) {
    // Left set: it records the choice, and child processes agree with it.
    setenv("OPENBLAS_CORETYPE", best, /*overwrite=*/0);
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
  }
  return openblas_get_corename();
}

}  // namespace

const std::string& EnsureOpenBlasKernels() {
  static const std::string* const core = new std::string(Select());
  return *core;
}

}  // namespace layerserve::fast
