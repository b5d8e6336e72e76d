// Convolution, the seed's conv_forward / conv_backward: x (N, C, H, W),
// w (F, C, HH, WW), b (F,), conv_param {stride, pad} -> out (N, F, H', W')
// with H' = 1 + (H + 2 pad - HH) / stride (floor division, as PyTorch) and
// W' likewise. Zero padding. Non-square kernels are allowed.
//
// naive:: and fast:: have the same signatures. Both require inputs already
// validated by ConvOutputShape and outputs pre-allocated with the right shape
// and the inputs' dtype; they return the name of the implementation that ran.
// Thread-safety: all functions may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_CONV_H_
#define LAYERSERVE_LIB_LAYERS_CONV_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

// Validates ranks, channel/filter agreement, params and that the kernel fits
// the padded input; returns the output shape. `layer` prefixes messages.
absl::StatusOr<Shape> ConvOutputShape(absl::string_view layer, const Shape& x,
                                      const Shape& w, const Shape& b,
                                      const ConvParam& p);

namespace naive {
absl::StatusOr<std::string> ConvForward(const Tensor& x, const Tensor& w,
                                        const Tensor& b, const ConvParam& p,
                                        Tensor* out);
absl::StatusOr<std::string> ConvBackward(const Tensor& x, const Tensor& w,
                                         const ConvParam& p, const Tensor& dout,
                                         Tensor* dx, Tensor* dw, Tensor* db);
}  // namespace naive

namespace fast {
absl::StatusOr<std::string> ConvForward(const Tensor& x, const Tensor& w,
                                        const Tensor& b, const ConvParam& p,
                                        Tensor* out);
// conv followed by relu, fused where the implementation can (a oneDNN
// post-op for float32).
absl::StatusOr<std::string> ConvReluForward(const Tensor& x, const Tensor& w,
                                            const Tensor& b, const ConvParam& p,
                                            Tensor* out);
absl::StatusOr<std::string> ConvBackward(const Tensor& x, const Tensor& w,
                                         const ConvParam& p, const Tensor& dout,
                                         Tensor* dx, Tensor* dw, Tensor* db);
}  // namespace fast

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LAYERS_CONV_H_
