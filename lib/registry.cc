#include "lib/registry.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/status_macros.h"

namespace layerserve {

absl::string_view ImplName(Impl impl) {
  return impl == Impl::kNaive ? "naive" : "fast";
}

absl::string_view ParamKindName(ParamKind kind) {
  switch (kind) {
    case ParamKind::kConv:
      return "conv_param";
    case ParamKind::kPool:
      return "pool_param";
    case ParamKind::kBatchnorm:
      return "bn_param";
    case ParamKind::kDropout:
      break;
  }
  return "dropout_param";
}

const std::vector<const LayerDef*>& AllLayers() {
  // An explicit table, not self-registering statics: a static library's
  // linker would silently drop those.
  static const std::vector<const LayerDef*>* const table =
      new std::vector<const LayerDef*>{
          &ConvLayerDef(),
          &MaxPoolLayerDef(),
          &ReluLayerDef(),
          &ConvReluLayerDef(),
          &ConvReluPoolLayerDef(),
          &AffineLayerDef(),
          &AffineReluLayerDef(),
          &BatchnormLayerDef(),
          &SpatialBatchnormLayerDef(),
          &DropoutLayerDef(),
          &SoftmaxLossLayerDef(),
          &SvmLossLayerDef(),
          &ConvBatchnormReluLayerDef(),
          &AffineBatchnormReluLayerDef(),
      };
  return *table;
}

absl::StatusOr<const LayerDef*> FindLayer(absl::string_view name) {
  std::vector<absl::string_view> known;
  for (const LayerDef* def : AllLayers()) {
    if (def->name == name) return def;
    known.push_back(def->name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("layer.name: unknown layer '", name,
                   "'; known layers: ", absl::StrJoin(known, ", ")));
}

DescMap DescsOf(const TensorMap& inputs) {
  DescMap descs;
  for (const auto& [name, t] : inputs) descs.emplace(name, t.desc());
  return descs;
}

namespace {

absl::Status CheckInputSet(const LayerDef& def, const DescMap& inputs) {
  const std::string expected = absl::StrJoin(def.inputs, ", ");
  for (absl::string_view name : def.inputs) {
    if (inputs.find(name) == inputs.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(def.name, ": missing input '", name,
                       "' (expected inputs: ", expected, ")"));
    }
  }
  const std::set<absl::string_view> allowed(def.inputs.begin(),
                                            def.inputs.end());
  for (const auto& [name, desc] : inputs) {
    if (allowed.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(def.name, ": unexpected input '", name,
                       "' (expected inputs: ", expected, ")"));
    }
  }
  const std::set<absl::string_view> labels(def.label_inputs.begin(),
                                           def.label_inputs.end());
  const absl::string_view first = def.inputs.front();  // never a label
  const DType dtype = Input(inputs, first).dtype;
  if (!IsFloat(dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat(def.name, ": input ", first,
                     " must be float32 or float64, got ", DTypeName(dtype)));
  }
  for (absl::string_view name : def.inputs) {
    const TensorDesc& d = Input(inputs, name);
    LS_RETURN_IF_ERROR(
        ValidateShape(d.shape, absl::StrCat(def.name, ": input ", name)));
    if (labels.count(name) != 0) {
      if (d.dtype != DType::kInt64) {
        return absl::InvalidArgumentError(absl::StrCat(
            def.name, ": input ", name,
            " holds class labels and must be int64, got ", DTypeName(d.dtype)));
      }
    } else if (d.dtype != dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          def.name, ": input ", name, " is ", DTypeName(d.dtype), " but ",
          first, " is ", DTypeName(dtype), " (all inputs share one dtype)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TensorDesc> InferOutput(const LayerSpec& spec,
                                       const DescMap& inputs) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(spec.name));
  LS_RETURN_IF_ERROR(CheckInputSet(*def, inputs));
  return def->infer(spec, inputs);
}

namespace {

// FAST on a layer without a fast path runs naive; the caller appends
// kNoFastPath to the implementation name so the user sees it.
constexpr absl::string_view kNoFastPath = " (no fast path)";
bool FallsBack(const LayerDef& def, Impl impl) {
  return impl == Impl::kFast && !def.has_fast;
}

}  // namespace

absl::StatusOr<ForwardResult> Forward(const LayerSpec& spec, Impl impl,
                                      const TensorMap& inputs) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(spec.name));
  const bool fallback = FallsBack(*def, impl);
  if (fallback) impl = Impl::kNaive;
  LS_ASSIGN_OR_RETURN(TensorDesc out_desc, InferOutput(spec, DescsOf(inputs)));
  LS_ASSIGN_OR_RETURN(Tensor out,
                      Tensor::Zeros(out_desc.dtype, std::move(out_desc.shape)));
  ForwardResult result;
  result.outputs.emplace(std::string(def->output), std::move(out));
  LS_ASSIGN_OR_RETURN(result.impl_name,
                      def->forward(spec, impl, inputs, &result.outputs));
  if (fallback) absl::StrAppend(&result.impl_name, kNoFastPath);
  return result;
}

absl::StatusOr<BackwardResult> Backward(const LayerSpec& spec, Impl impl,
                                        const TensorMap& inputs,
                                        const Tensor& dout) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(spec.name));
  const bool fallback = FallsBack(*def, impl);
  if (fallback) impl = Impl::kNaive;
  LS_ASSIGN_OR_RETURN(TensorDesc out_desc, InferOutput(spec, DescsOf(inputs)));
  if (dout.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(def->name, ": dout is missing (expected shape ",
                     ShapeString(out_desc.shape), ")"));
  }
  if (dout.dtype() != out_desc.dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(def->name, ": dout is ", DTypeName(dout.dtype()),
                     " but the inputs are ", DTypeName(out_desc.dtype)));
  }
  if (dout.shape() != out_desc.shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        def->name, ": dout has shape ", ShapeString(dout.shape()),
        " but the output has shape ", ShapeString(out_desc.shape)));
  }
  BackwardResult result;
  for (size_t i = 0; i < def->grad_inputs.size(); ++i) {
    const Tensor& in = Input(inputs, def->grad_inputs[i]);
    LS_ASSIGN_OR_RETURN(Tensor g, Tensor::Zeros(in.dtype(), in.shape()));
    result.grads.emplace(std::string(def->grads[i]), std::move(g));
  }
  LS_ASSIGN_OR_RETURN(result.impl_name,
                      def->backward(spec, impl, inputs, dout, &result.grads));
  if (fallback) absl::StrAppend(&result.impl_name, kNoFastPath);
  return result;
}

}  // namespace layerserve
