// Batch normalization, the course's batchnorm_forward/backward and its
// spatial variant:
//   batchnorm:          x (N, D), statistics per feature d over N;
//   spatial_batchnorm:  x (N, C, H, W), statistics per channel over N, H, W.
// gamma, beta, running_mean, running_var all have one value per feature or
// channel. Train mode normalizes with the batch mean and biased variance and
// returns the updated running statistics
//   running = momentum * running + (1 - momentum) * batch;
// test mode normalizes with the running statistics and leaves them as they
// are. Gradients: dx, dgamma, dbeta (the running statistics get none).
//
// Thread-safety: the functions may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_BATCHNORM_H_
#define LAYERSERVE_LIB_LAYERS_BATCHNORM_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

// Validates the param and the five shapes; `spatial` picks the layout.
// Returns out's shape (x's).
absl::StatusOr<Shape> BatchnormOutputShape(
    absl::string_view layer, bool spatial, const Shape& x, const Shape& gamma,
    const Shape& beta, const Shape& running_mean, const Shape& running_var,
    const BatchnormParam& p);

struct BatchnormTensors {
  const Tensor* x;
  const Tensor* gamma;
  const Tensor* beta;
  const Tensor* running_mean;
  const Tensor* running_var;
};

namespace naive {
// new_mean/new_var: the running statistics after this call (a copy of the
// inputs in test mode).
absl::StatusOr<std::string> BatchnormForward(const BatchnormTensors& in,
                                             const BatchnormParam& p,
                                             bool spatial, Tensor* out,
                                             Tensor* new_mean, Tensor* new_var);
absl::StatusOr<std::string> BatchnormBackward(const BatchnormTensors& in,
                                              const BatchnormParam& p,
                                              bool spatial, const Tensor& dout,
                                              Tensor* dx, Tensor* dgamma,
                                              Tensor* dbeta);
}  // namespace naive

namespace fast {
// The naive contract, computed in double on several threads (see
// lib/layers/fast/batchnorm.cc); results agree with naive to rounding.
absl::StatusOr<std::string> BatchnormForward(const BatchnormTensors& in,
                                             const BatchnormParam& p,
                                             bool spatial, Tensor* out,
                                             Tensor* new_mean, Tensor* new_var);
absl::StatusOr<std::string> BatchnormBackward(const BatchnormTensors& in,
                                              const BatchnormParam& p,
                                              bool spatial, const Tensor& dout,
                                              Tensor* dx, Tensor* dgamma,
                                              Tensor* dbeta);
}  // namespace fast

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LAYERS_BATCHNORM_H_
