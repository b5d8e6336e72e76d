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

// Whether element i is kept: uniform(seed, i) < p.
bool DropoutKeeps(const DropoutParam& p, int64_t i);

namespace naive {
absl::StatusOr<std::string> DropoutForward(const Tensor& x,
                                           const DropoutParam& p, Tensor* out);
absl::StatusOr<std::string> DropoutBackward(const Tensor& x,
                                            const DropoutParam& p,
                                            const Tensor& dout, Tensor* dx);
}  // namespace naive

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LAYERS_DROPOUT_H_
