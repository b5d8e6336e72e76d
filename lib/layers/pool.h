// Max pooling, the seed's max_pool_forward / max_pool_backward: x (N, C, H, W),
// pool_param {pool_height, pool_width, stride} -> out (N, C, H', W') with
// H' = 1 + (H - pool_height) / stride. No padding. The gradient of a window
// goes to its first maximum in row-major order (np.argmax, PyTorch).
//
// naive:: and fast:: have the same signatures and preconditions (validated
// inputs, pre-allocated zeroed outputs); they return the implementation name.
// Thread-safety: all functions may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_POOL_H_
#define LAYERSERVE_LIB_LAYERS_POOL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

absl::StatusOr<Shape> MaxPoolOutputShape(absl::string_view layer,
                                         const Shape& x, const PoolParam& p);

namespace naive {
absl::StatusOr<std::string> MaxPoolForward(const Tensor& x, const PoolParam& p,
                                           Tensor* out);
// dx must be zero-filled: windows that overlap accumulate into it.
absl::StatusOr<std::string> MaxPoolBackward(const Tensor& x, const PoolParam& p,
                                            const Tensor& dout, Tensor* dx);
}  // namespace naive

namespace fast {
absl::StatusOr<std::string> MaxPoolForward(const Tensor& x, const PoolParam& p,
                                           Tensor* out);
absl::StatusOr<std::string> MaxPoolBackward(const Tensor& x, const PoolParam& p,
                                            const Tensor& dout, Tensor* dx);
}  // namespace fast

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LAYERS_POOL_H_
