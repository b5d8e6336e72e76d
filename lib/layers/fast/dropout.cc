// Fast inverted dropout: the naive loop's arithmetic, vectorized and on
// several threads. The mask is a pure function of (seed, index), so chunks
// need no shared generator state, and the results are bitwise the naive
// ones:
//  - the draw is DropoutMix itself (dropout.h), on 64-bit vector lanes;
//  - "uniform < p" is the same comparison done on integers:
//    uniform = k * 2^-53 with k = bits >> 11 < 2^53, both scalings by 2^53
//    are exact, so uniform < p  <=>  k < p * 2^53  <=>  k < ceil(p * 2^53);
//  - kept values are double(x) / p rounded to T, exactly as naive computes
//    them (a multiplication by 1/p would round differently, except for p a
//    power of two, where it is used).
#include "lib/layers/dropout.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "lib/layers/fast/isa.h"
#include "lib/threading.h"

namespace layerserve::fast {
namespace {

template <typename T>
struct BitsOf;
template <>
struct BitsOf<float> {
  using type = uint32_t;
};
template <>
struct BitsOf<double> {
  using type = uint64_t;
};

// The kept value is selected with a bit mask, not `keep ? v : 0`: GCC does
// not speculate a division (it may trap) past a condition, so it would
// branch on every element (50% mispredicted) and not vectorize at all.
// `Scale` is v / p, or v * (1 / p) when p is a power of two: both are then
// the same exact scaling, and a multiply costs a fraction of a divide.
template <typename T, bool kPowerOfTwo>
LS_ALWAYS_INLINE void DropoutBody(const T* in, T* out, int64_t begin,
                                  int64_t end, uint64_t seed_mix,
                                  uint64_t threshold, double p, double inv_p,
                                  std::integral_constant<bool, kPowerOfTwo>) {
  using U = typename BitsOf<T>::type;
  for (int64_t i = begin; i < end; ++i) {
    const uint64_t k = DropoutMix(seed_mix ^ static_cast<uint64_t>(i)) >> 11;
    const double v = static_cast<double>(in[i]);
    const T scaled = static_cast<T>(kPowerOfTwo ? v * inv_p : v / p);
    const U keep = U(0) - static_cast<U>(k < threshold);  // all ones or 0
    out[i] = __builtin_bit_cast(T, __builtin_bit_cast(U, scaled) & keep);
  }
}
LS_ISA_VARIANTS(DropoutKernel, DropoutBody)

bool IsPowerOfTwo(double p) {
  int exp = 0;
  return std::frexp(p, &exp) == 0.5;
}

template <typename T>
void Run(const T* in, const DropoutParam& p, int64_t n, T* out) {
  if (!p.train) {  // the identity
    ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      std::copy(in + begin, in + end, out + begin);
    });
    return;
  }
  const uint64_t seed_mix = DropoutMix(p.seed);
  // p in (0, 1] (validated): the threshold is at most 2^53.
  const uint64_t threshold =
      static_cast<uint64_t>(std::ceil(std::ldexp(p.p, 53)));
  const Isa isa = BestIsa();
  const double inv_p = 1.0 / p.p;
  const bool pow2 = IsPowerOfTwo(p.p);
  ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    if (pow2) {
      DropoutKernel(isa, in, out, begin, end, seed_mix, threshold, p.p, inv_p,
                    std::true_type());
    } else {
      DropoutKernel(isa, in, out, begin, end, seed_mix, threshold, p.p, inv_p,
                    std::false_type());
    }
  });
}

absl::StatusOr<std::string> Dispatch(const Tensor& in, const DropoutParam& p,
                                     Tensor* out) {
  if (in.dtype() == DType::kFloat32) {
    Run(in.data<float>(), p, in.size(), out->data<float>());
  } else {
    Run(in.data<double>(), p, in.size(), out->data<double>());
  }
  return absl::StrCat("dropout:", IsaName(BestIsa()));
}

}  // namespace

absl::StatusOr<std::string> DropoutForward(const Tensor& x,
                                           const DropoutParam& p, Tensor* out) {
  return Dispatch(x, p, out);
}

// dx = dout through the same mask and scale; x only fixes the shape.
absl::StatusOr<std::string> DropoutBackward(const Tensor& x,
                                            const DropoutParam& p,
                                            const Tensor& dout, Tensor* dx) {
  return Dispatch(dout, p, dx);
}

}  // namespace layerserve::fast
