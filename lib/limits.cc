#include "lib/limits.h"

#include "absl/strings/str_cat.h"
#include "lib/layers/conv.h"
#include "lib/registry.h"
#include "lib/status_macros.h"

namespace layerserve {

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
                             int64_t max_elements,
                             absl::string_view limit_name) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(spec.name));
  LS_ASSIGN_OR_RETURN(TensorDesc out, InferOutput(spec, inputs));
  for (const auto& [name, desc] : inputs) {
    LS_RETURN_IF_ERROR(
        CheckTensorElements(desc, absl::StrCat(def->name, ": input ", name),
                            max_elements, limit_name));
  }
  LS_RETURN_IF_ERROR(CheckTensorElements(
      out, absl::StrCat(def->name, ": output ", def->output), max_elements,
      limit_name));
  // Every layer with a conv_param materializes the conv's output, which
  // for conv_relu_pool is larger than the layer's output.
  for (ParamKind kind : def->params) {
    if (kind != ParamKind::kConv) continue;
    LS_ASSIGN_OR_RETURN(Shape conv_out,
                        ConvOutputShape(def->name, Input(inputs, "x").shape,
                                        Input(inputs, "w").shape,
                                        Input(inputs, "b").shape, spec.conv));
    LS_RETURN_IF_ERROR(CheckTensorElements(
        TensorDesc{out.dtype, std::move(conv_out)},
        absl::StrCat(def->name, ": the intermediate conv output"), max_elements,
        limit_name));
  }
  return absl::OkStatus();
}

}  // namespace layerserve
