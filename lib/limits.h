// Size limits on the tensors one layer call holds: checked from descs alone,
// before anything is allocated, so that a small request asking for a huge
// output (a conv with pad = 10^9) is refused instead of exhausting memory.
//
// Thread-safety: pure functions of their arguments.
#ifndef LAYERSERVE_LIB_LIMITS_H_
#define LAYERSERVE_LIB_LIMITS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

// RESOURCE_EXHAUSTED when `desc` has more than `max_elements` elements,
// naming `what`, its shape and element count, the limit and `limit_name`
// (the knob that sets it, e.g. "--max_tensor_elements"). `desc` has a valid
// shape.
absl::Status CheckTensorElements(const TensorDesc& desc, absl::string_view what,
                                 int64_t max_elements,
                                 absl::string_view limit_name);

// Checks every tensor a Forward/Backward/GradCheck of `spec` on `inputs`
// materializes: each input (and, in Backward, its gradient), the output (and
// dout), and the intermediates of composite layers (the conv output of
// conv_relu_pool). Validates the request like InferOutput first, so its
// INVALID_ARGUMENT comes before any limit.
absl::Status CheckCallLimits(const LayerSpec& spec, const DescMap& inputs,
                             int64_t max_elements,
                             absl::string_view limit_name);

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LIMITS_H_
