// Run-time choice of the vector instruction set for the hand-written fast
// kernels (batchnorm, dropout, losses).
//
// The library is compiled for baseline x86-64 (SSE2) so one binary runs on
// any x86-64 machine. A hot loop is written once, as an always-inline
// template body, and LS_ISA_VARIANTS stamps out three copies of it: the
// baseline one and two compiled with GCC target attributes (AVX2+FMA and
// AVX-512). BestIsa() picks the widest one the CPU supports, once.
//
// Why target attributes and not per-ISA translation units built with
// -mavx512f: inline functions from headers (std::, absl) would then exist in
// AVX-512 and baseline copies with the same symbol, and the linker may keep
// the AVX-512 one for everybody. A target-attributed function only inlines
// baseline code into itself; nothing it contains leaks out.
//
// Results may differ between the copies in the last bits (the AVX2 and
// AVX-512 copies contract a * b + c into FMAs); kernels whose results must
// be exact (dropout's mask and scaling, the hinge loss's margin decisions)
// use no multiply-add. Summation orders are fixed by constant lane counts,
// not by the vector width, so sums are reproducible for a given ISA.
//
// Thread-safety: BestIsa() may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_FAST_ISA_H_
#define LAYERSERVE_LIB_LAYERS_FAST_ISA_H_

#include "absl/strings/string_view.h"

namespace layerserve::fast {

enum class Isa { kBaseline, kAvx2, kAvx512 };

// The widest ISA this CPU runs (kBaseline off x86-64), decided once. The
// environment variable LAYERSERVE_FAST_ISA=sse2|avx2 caps it, to compare
// the copies.
Isa BestIsa();
// "sse2", "avx2" or "avx512", for implementation names ("bn:avx512").
absl::string_view IsaName(Isa isa);

}  // namespace layerserve::fast

#define LS_ALWAYS_INLINE inline __attribute__((always_inline))
// For lambdas inside kernel bodies: `[&](...) LS_ALWAYS_INLINE_LAMBDA {}`.
#define LS_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))

#if defined(__x86_64__) && defined(__GNUC__)
#define LS_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2")))
// GCC's default tuning prefers 256-bit vectors even with AVX-512 enabled;
// these kernels are simple streams where 512-bit ones measured faster.
#define LS_TARGET_AVX512                                                    \
  __attribute__((target(                                                    \
      "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi,bmi2,prefer-vector-" \
      "width=512")))
#else
#define LS_TARGET_AVX2
#define LS_TARGET_AVX512
#endif

// LS_ISA_VARIANTS(Name, Body) defines `void Name(Isa isa, args...)`, which
// runs the always-inline function template `Body(args...)` compiled for
// `isa`. Body's template arguments are deduced from the arguments.
#define LS_ISA_VARIANTS(Name, Body)                \
  template <typename... A>                         \
  void Name##Baseline(A... a) {                    \
    Body(a...);                                    \
  }                                                \
  template <typename... A>                         \
  LS_TARGET_AVX2 void Name##Avx2(A... a) {         \
    Body(a...);                                    \
  }                                                \
  template <typename... A>                         \
  LS_TARGET_AVX512 void Name##Avx512(A... a) {     \
    Body(a...);                                    \
  }                                                \
  template <typename... A>                         \
  void Name(::layerserve::fast::Isa isa, A... a) { \
    switch (isa) {                                 \
      case ::layerserve::fast::Isa::kAvx512:       \
        return Name##Avx512(a...);                 \
      case ::layerserve::fast::Isa::kAvx2:         \
        return Name##Avx2(a...);                   \
      case ::layerserve::fast::Isa::kBaseline:     \
        break;                                     \
    }                                              \
    Name##Baseline(a...);                          \
  }

#endif  // LAYERSERVE_LIB_LAYERS_FAST_ISA_H_
