#include "lib/layers/fast/isa.h"

#include <cstdlib>
#include <cstring>

namespace layerserve::fast {
namespace {

Isa Detect() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi2")) {
    return Isa::kAvx2;
  }
#endif
  return Isa::kBaseline;
}

// LAYERSERVE_FAST_ISA=sse2|avx2 caps the choice (to compare the copies, or
// to rule one out); it never raises it above what the CPU supports.
Isa Choose() {
  Isa isa = Detect();
  const char* cap = std::getenv("LAYERSERVE_FAST_ISA");
  if (cap == nullptr) return isa;
  if (std::strcmp(cap, "sse2") == 0) return Isa::kBaseline;
  if (std::strcmp(cap, "avx2") == 0 && isa == Isa::kAvx512) return Isa::kAvx2;
  return isa;
}

}  // namespace

Isa BestIsa() {
  static const Isa isa = Choose();
  return isa;
}

absl::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kBaseline:
      break;
  }
  return "sse2";
}

}  // namespace layerserve::fast
