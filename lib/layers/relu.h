// ReLU: out = max(0, x); dx = dout where x > 0, else 0 (the seed's
// convention: the gradient at exactly 0 is 0). Any shape.
//
// naive:: and fast:: have the same signatures and preconditions; they return
// the implementation name. Thread-safety: may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_RELU_H_
#define LAYERSERVE_LIB_LAYERS_RELU_H_

#include <string>

#include "absl/status/statusor.h"
#include "lib/tensor.h"

namespace layerserve {

namespace naive {
absl::StatusOr<std::string> ReluForward(const Tensor& x, Tensor* out);
absl::StatusOr<std::string> ReluBackward(const Tensor& x, const Tensor& dout,
                                         Tensor* dx);
}  // namespace naive

namespace fast {
absl::StatusOr<std::string> ReluForward(const Tensor& x, Tensor* out);
absl::StatusOr<std::string> ReluBackward(const Tensor& x, const Tensor& dout,
                                         Tensor* dx);
}  // namespace fast

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LAYERS_RELU_H_
