// Affine (fully connected): x (N, d1, ..., dk) is read as (N, D) with
// D = d1 * ... * dk, w (D, M), b (M,) -> out (N, M) = x w + b.
//
// naive:: and fast:: share signatures and preconditions (validated shapes,
// pre-allocated zeroed outputs of the inputs' dtype) and return the name of
// the implementation that ran. Thread-safety: may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_AFFINE_H_
#define LAYERSERVE_LIB_LAYERS_AFFINE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

absl::StatusOr<Shape> AffineOutputShape(absl::string_view layer, const Shape& x,
                                        const Shape& w, const Shape& b);

namespace naive {
absl::StatusOr<std::string> AffineForward(const Tensor& x, const Tensor& w,
                                          const Tensor& b, Tensor* out);
absl::StatusOr<std::string> AffineBackward(const Tensor& x, const Tensor& w,
                                           const Tensor& dout, Tensor* dx,
                                           Tensor* dw, Tensor* db);
}  // namespace naive

namespace fast {
// float32 on oneDNN (inner product forward, matmul backward), float64 on
// OpenBLAS dgemm.
absl::StatusOr<std::string> AffineForward(const Tensor& x, const Tensor& w,
                                          const Tensor& b, Tensor* out);
absl::StatusOr<std::string> AffineBackward(const Tensor& x, const Tensor& w,
                                           const Tensor& dout, Tensor* dx,
                                           Tensor* dw, Tensor* db);
}  // namespace fast

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LAYERS_AFFINE_H_
