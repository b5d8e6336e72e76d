// Cost limits on one layer call, checked from descs alone, before anything
// is allocated or computed: a small request asking for a huge output (a conv
// with pad = 10^9) or for hours of numerical differentiation is refused at
// once instead of exhausting memory or a core.
//
// Three limits, each named in its RESOURCE_EXHAUSTED message together with
// the knob that raises it (the server's flags):
// - elements per tensor: every input, dout, output, intermediate, gradient;
// - elements per call: all the tensors the call holds at its peak together;
// - the work of a gradient check, in multiply-adds: two forward passes per
//   checked input element.
//
// Thread-safety: pure functions of their arguments.
#ifndef LAYERSERVE_LIB_LIMITS_H_
#define LAYERSERVE_LIB_LIMITS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

struct CallLimits {
  int64_t max_tensor_elements = int64_t{64} << 20;
  std::string max_tensor_elements_name = "--max_tensor_elements";
  int64_t max_request_elements = int64_t{256} << 20;
  std::string max_request_elements_name = "--max_request_elements";
  // About a minute of the naive loops on one core.
  int64_t max_gradcheck_macs = int64_t{50'000'000'000};
  std::string max_gradcheck_macs_name = "--max_gradcheck_macs";
};

// What the call does with the layer: decides which tensors it holds.
enum class CallKind { kForward, kBackward, kGradCheck, kCompare };
absl::string_view CallKindName(CallKind kind);  // "Forward", ...

// RESOURCE_EXHAUSTED when `desc` has more than `max_elements` elements,
// naming `what`, its shape and element count, the limit and `limit_name`
// (the knob that sets it, e.g. "--max_tensor_elements"). `desc` has a valid
// shape.
absl::Status CheckTensorElements(const TensorDesc& desc, absl::string_view what,
                                 int64_t max_elements,
                                 absl::string_view limit_name);

// Checks every tensor a call of `kind` on `spec` and `inputs` materializes:
// each input, the output, and the intermediates of composite layers (the
// conv output of conv_relu_pool) against max_tensor_elements; then all of
// them together, with dout, the gradients and the copies the kind makes
// (a gradient check perturbs a copy of the inputs; a compare holds both
// implementations' results), against max_request_elements. Validates the
// request like InferOutput first, so its INVALID_ARGUMENT comes before any
// limit. dout itself is checked by the caller (it may be absent).
absl::Status CheckCallLimits(const LayerSpec& spec, const DescMap& inputs,
                             CallKind kind, const CallLimits& limits);

// Multiply-adds of one forward pass, saturating at INT64_MAX: for a conv
// (or a layer with one) N * F * H' * W' * C * HH * WW, for a layer with a
// matrix weight w (affine) N * w.size, for a pooling window out * ph * pw,
// plus one per input and output element for the elementwise parts. An
// estimate of work, not an exact count. `inputs` passed InferOutput.
int64_t ForwardMacs(const LayerSpec& spec, const DescMap& inputs);

// The elements a gradient check perturbs: every element of each input that
// gets a gradient, or min(num_checks, size) of each in sampled mode
// (num_checks > 0).
int64_t GradCheckElements(const LayerSpec& spec, const DescMap& inputs,
                          int64_t num_checks);

// RESOURCE_EXHAUSTED when a gradient check of `spec` on `inputs` with
// `num_checks` (0 = every element) would run more than
// limits.max_gradcheck_macs multiply-adds (2 forward passes per checked
// element), naming the cost, the limit, the flag, and sampled mode as the
// other way out. Validates the request first, like CheckCallLimits.
absl::Status CheckGradCheckCost(const LayerSpec& spec, const DescMap& inputs,
                                int64_t num_checks, const CallLimits& limits);

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LIMITS_H_
