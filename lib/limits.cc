#include "lib/limits.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/layers/conv.h"
#include "lib/registry.h"
#include "lib/status_macros.h"

namespace layerserve {
namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// Saturating arithmetic on non-negative counts: a request's cost may not fit
// int64 (that is what the limits are for), and must then still compare as
// "more than any limit".
int64_t SatMul(int64_t a, int64_t b) {
  int64_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? kInt64Max : r;
}
int64_t SatAdd(int64_t a, int64_t b) {
  int64_t r = 0;
  return __builtin_add_overflow(a, b, &r) ? kInt64Max : r;
}

// The conv output of a layer with a conv_param (validated by InferOutput
// before this is called).
absl::StatusOr<Shape> ConvOut(const LayerDef& def, const LayerSpec& spec,
                              const DescMap& inputs) {
  return ConvOutputShape(def.name, Input(inputs, "x").shape,
                         Input(inputs, "w").shape, Input(inputs, "b").shape,
                         spec.conv);
}

bool HasParam(const LayerDef& def, ParamKind kind) {
  return std::find(def.params.begin(), def.params.end(), kind) !=
         def.params.end();
}

}  // namespace

absl::string_view CallKindName(CallKind kind) {
  switch (kind) {
    case CallKind::kForward:
      return "Forward";
    case CallKind::kBackward:
      return "Backward";
    case CallKind::kGradCheck:
      return "GradCheck";
    case CallKind::kCompare:
      break;
  }
  return "Compare";
}

absl::Status CheckTensorElements(const TensorDesc& desc, absl::string_view what,
                                 int64_t max_elements,
                                 absl::string_view limit_name) {
  const int64_t n = NumElements(desc.shape);
  if (n <= max_elements) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat(what, " would have ", n, " elements (shape ",
                   ShapeString(desc.shape), "), more than the limit of ",
                   max_elements, " elements (", limit_name, ")"));
}

absl::Status CheckCallLimits(const LayerSpec& spec, const DescMap& inputs,
                             CallKind kind, const CallLimits& limits) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(spec.name));
  LS_ASSIGN_OR_RETURN(TensorDesc out, InferOutput(spec, inputs));
  const int64_t max = limits.max_tensor_elements;
  const std::string& max_name = limits.max_tensor_elements_name;
  int64_t input_elements = 0;
  for (const auto& [name, desc] : inputs) {
    LS_RETURN_IF_ERROR(CheckTensorElements(
        desc, absl::StrCat(def->name, ": input ", name), max, max_name));
    input_elements = SatAdd(input_elements, NumElements(desc.shape));
  }
  LS_RETURN_IF_ERROR(CheckTensorElements(
      out, absl::StrCat(def->name, ": output ", def->output), max, max_name));
  const int64_t out_elements = NumElements(out.shape);
  // Every layer with a conv_param materializes the conv's output, which
  // for conv_relu_pool is larger than the layer's output.
  int64_t intermediate_elements = 0;
  if (HasParam(*def, ParamKind::kConv)) {
    LS_ASSIGN_OR_RETURN(Shape conv_out, ConvOut(*def, spec, inputs));
    LS_RETURN_IF_ERROR(CheckTensorElements(
        TensorDesc{out.dtype, conv_out},
        absl::StrCat(def->name, ": the intermediate conv output"), max,
        max_name));
    intermediate_elements = NumElements(conv_out);
  }
  int64_t grad_elements = 0;
  for (absl::string_view name : def->grad_inputs) {
    grad_elements =
        SatAdd(grad_elements, NumElements(Input(inputs, name).shape));
  }

  // The tensors the call holds at its peak, by kind. Backward: inputs,
  // dout, the recomputed forward, gradients. GradCheck: that, plus the
  // perturbed copy of the inputs, the numeric gradients and the two
  // perturbed outputs. Compare: inputs and dout, and both
  // implementations' outputs and gradients.
  int64_t total =
      SatAdd(SatAdd(input_elements, out_elements), intermediate_elements);
  switch (kind) {
    case CallKind::kForward:
      break;
    case CallKind::kBackward:
      total = SatAdd(total, SatAdd(out_elements, grad_elements));
      break;
    case CallKind::kGradCheck:
      total = SatAdd(total, SatAdd(out_elements, grad_elements));
      total = SatAdd(total, SatAdd(input_elements, grad_elements));
      total = SatAdd(total, SatMul(2, out_elements));
      break;
    case CallKind::kCompare:
      total = SatAdd(total, out_elements);  // dout
      total = SatAdd(total, SatAdd(out_elements, intermediate_elements));
      total = SatAdd(total, SatMul(2, grad_elements));
      break;
  }
  if (total > limits.max_request_elements) {
    return absl::ResourceExhaustedError(absl::StrCat(
        def->name, ": this ", CallKindName(kind), " call would hold ", total,
        " tensor elements at once (inputs ", input_elements, ", output ",
        out_elements,
        ", with dout, gradients, intermediates and copies), "
        "more than the limit of ",
        limits.max_request_elements, " elements per call (",
        limits.max_request_elements_name, ")"));
  }
  return absl::OkStatus();
}

int64_t ForwardMacs(const LayerSpec& spec, const DescMap& inputs) {
  absl::StatusOr<const LayerDef*> def = FindLayer(spec.name);
  absl::StatusOr<TensorDesc> out = InferOutput(spec, inputs);
  if (!def.ok() || !out.ok()) return 0;
  // The elementwise parts: reading every input, writing the output.
  int64_t macs = NumElements(out->shape);
  for (const auto& [name, desc] : inputs) {
    macs = SatAdd(macs, NumElements(desc.shape));
  }
  const auto w = inputs.find("w");
  const auto x = inputs.find("x");
  if (HasParam(**def, ParamKind::kConv)) {
    absl::StatusOr<Shape> conv_out = ConvOut(**def, spec, inputs);
    if (conv_out.ok()) {
      // Each conv output element is a dot product over C * HH * WW.
      const Shape& ws = w->second.shape;
      const int64_t per_output = NumElements(ws) / std::max<int64_t>(1, ws[0]);
      macs = SatAdd(macs, SatMul(NumElements(*conv_out), per_output));
      macs = SatAdd(macs, NumElements(*conv_out));  // the relu, the bias
    }
  } else if (w != inputs.end() && x != inputs.end() &&
             w->second.shape.size() == 2 && !x->second.shape.empty()) {
    // An affine layer: (N, D) x (D, M).
    macs =
        SatAdd(macs, SatMul(x->second.shape[0], NumElements(w->second.shape)));
  }
  if (HasParam(**def, ParamKind::kPool)) {
    macs = SatAdd(macs,
                  SatMul(NumElements(out->shape),
                         SatMul(spec.pool.pool_height, spec.pool.pool_width)));
  }
  return macs;
}

int64_t GradCheckElements(const LayerSpec& spec, const DescMap& inputs,
                          int64_t num_checks) {
  absl::StatusOr<const LayerDef*> def = FindLayer(spec.name);
  if (!def.ok()) return 0;
  int64_t n = 0;
  for (absl::string_view name : (*def)->grad_inputs) {
    const auto it = inputs.find(name);
    if (it == inputs.end()) continue;
    const int64_t size = NumElements(it->second.shape);
    n = SatAdd(n, num_checks > 0 ? std::min(num_checks, size) : size);
  }
  return n;
}

absl::Status CheckGradCheckCost(const LayerSpec& spec, const DescMap& inputs,
                                int64_t num_checks, const CallLimits& limits) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(spec.name));
  LS_RETURN_IF_ERROR(InferOutput(spec, inputs).status());
  const int64_t elements = GradCheckElements(spec, inputs, num_checks);
  const int64_t passes = SatMul(2, elements);
  const int64_t per_pass = ForwardMacs(spec, inputs);
  const int64_t cost = SatMul(passes, per_pass);
  if (cost <= limits.max_gradcheck_macs) return absl::OkStatus();
  std::vector<std::string> inputs_checked;
  for (absl::string_view name : def->grad_inputs) {
    inputs_checked.emplace_back(name);
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      def->name, ": this gradient check would run ", passes,
      " forward passes (2 for each of the ", elements, " checked elements of ",
      absl::StrJoin(inputs_checked, ", "),
      num_checks > 0 ? absl::StrCat(", at most ", num_checks, " per input")
                     : std::string(", all of them"),
      ") of about ", per_pass, " multiply-adds each, ", cost,
      " in all, more than the limit of ", limits.max_gradcheck_macs, " (",
      limits.max_gradcheck_macs_name, "); raise ",
      limits.max_gradcheck_macs_name,
      " or check a random sample of the elements (num_checks, sampled "
      "mode)"));
}

}  // namespace layerserve
