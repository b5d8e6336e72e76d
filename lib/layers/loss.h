// Classification losses, the course's softmax_loss and svm_loss:
// scores x (N, C) and integer labels y (N,) in [0, C) -> the mean loss over
// the batch (a scalar) and dx = d loss / d x. Backward scales dx by the
// upstream gradient of the loss (1 for a plain loss).
//
// Thread-safety: the functions may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_LOSS_H_
#define LAYERSERVE_LIB_LAYERS_LOSS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

enum class LossKind { kSoftmax, kSvm };

// Checks x (N, C), y (N,) and every label in [0, C).
absl::Status ValidateLossInputs(absl::string_view layer, const Shape& x,
                                const Shape& y);
absl::Status ValidateLabels(absl::string_view layer, const int64_t* y,
                            int64_t n, int64_t classes);

namespace naive {
// loss: the mean loss; dx (x's shape) is the gradient scaled by dloss.
absl::Status Loss(LossKind kind, const Tensor& x, const int64_t* y,
                  double dloss, double* loss, Tensor* dx);
}  // namespace naive

namespace fast {
// naive::Loss's contract, except that dx may be null (forward needs only
// the loss). Returns the implementation name.
absl::StatusOr<std::string> Loss(LossKind kind, const Tensor& x,
                                 const int64_t* y, double dloss, double* loss,
                                 Tensor* dx);
}  // namespace fast

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LAYERS_LOSS_H_
