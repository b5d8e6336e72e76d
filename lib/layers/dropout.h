// Inverted dropout. p is the probability of KEEPING a unit (the convention
// of the course version this service follows; other versions use p as the
// drop probability, so the API says it explicitly). Train mode: a unit is
// kept when its uniform draw is < p, and kept units are scaled by 1/p, so
// the expected output equals x. Test mode: the identity.
//
// The mask is a pure function of (seed, element index): forward and
// backward calls with the same seed agree without any server state.
//
// Thread-safety: the functions may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_DROPOUT_H_
#define LAYERSERVE_LIB_LAYERS_DROPOUT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

absl::Status ValidateDropoutParam(absl::string_view layer,
                                  const DropoutParam& p);

// SplitMix64's finalizer: a bijective mix whose outputs for consecutive
// inputs are statistically independent, which makes (seed, i) -> uniform a
// counter-based generator: any element's draw without drawing the others.
// Inline so the fast kernels vectorize the very same function.
inline uint64_t DropoutMix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Whether element i is kept: uniform(seed, i) < p, where uniform(seed, i) =
// (DropoutMix(DropoutMix(seed) ^ i) >> 11) * 2^-53, in [0, 1).
bool DropoutKeeps(const DropoutParam& p, int64_t i);

namespace naive {
absl::StatusOr<std::string> DropoutForward(const Tensor& x,
                                           const DropoutParam& p, Tensor* out);
absl::StatusOr<std::string> DropoutBackward(const Tensor& x,
                                            const DropoutParam& p,
                                            const Tensor& dout, Tensor* dx);
}  // namespace naive

namespace fast {
// Bitwise the naive results (same mask, same rounding), on several threads.
absl::StatusOr<std::string> DropoutForward(const Tensor& x,
                                           const DropoutParam& p, Tensor* out);
absl::StatusOr<std::string> DropoutBackward(const Tensor& x,
                                            const DropoutParam& p,
                                            const Tensor& dout, Tensor* dx);
}  // namespace fast

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LAYERS_DROPOUT_H_
