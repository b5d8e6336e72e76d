// The batchnorm family: validation (and, with the registry, its rows).
#include "lib/layers/batchnorm.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"

namespace layerserve {

absl::StatusOr<Shape> BatchnormOutputShape(
    absl::string_view layer, bool spatial, const Shape& x, const Shape& gamma,
    const Shape& beta, const Shape& running_mean, const Shape& running_var,
    const BatchnormParam& p) {
  const size_t rank = spatial ? 4 : 2;
  if (x.size() != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input x must have rank ", rank,
                     spatial ? " (N, C, H, W)" : " (N, D)", ", got rank ",
                     x.size(), " (shape ", ShapeString(x), ")"));
  }
  const int64_t features = x[1];
  const struct {
    const char* name;
    const Shape& shape;
  } per_feature[] = {{"gamma", gamma},
                     {"beta", beta},
                     {"running_mean", running_mean},
                     {"running_var", running_var}};
  for (const auto& f : per_feature) {
    if (f.shape != Shape{features}) {
      return absl::InvalidArgumentError(absl::StrCat(
          layer, ": input ", f.name, " must have shape (", features,
          ",) (x.shape[1]), got ", ShapeString(f.shape)));
    }
  }
  if (!(std::isfinite(p.eps) && p.eps > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": bn_param.eps must be finite and > 0, got ", p.eps));
  }
  if (!(p.momentum >= 0 && p.momentum <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": bn_param.momentum must be in [0, 1], got ", p.momentum));
  }
  return x;
}

}  // namespace layerserve

namespace layerserve {
namespace {

BatchnormTensors BnInputs(const TensorMap& in) {
  return {&Input(in, "x"), &Input(in, "gamma"), &Input(in, "beta"),
          &Input(in, "running_mean"), &Input(in, "running_var")};
}

LayerDef* MakeBatchnormDef(absl::string_view name, absl::string_view summary,
                           bool spatial) {
  auto* d = new LayerDef;
  d->name = name;
  d->summary = summary;
  d->inputs = {"x", "gamma", "beta", "running_mean", "running_var"};
  d->params = {ParamKind::kBatchnorm};
  d->output = "out";
  d->extra_outputs = {"running_mean", "running_var"};
  d->grad_inputs = {"x", "gamma", "beta"};
  d->grads = {"dx", "dgamma", "dbeta"};
  d->infer = [spatial](const LayerSpec& spec,
                       const DescMap& in) -> absl::StatusOr<TensorDesc> {
    LS_ASSIGN_OR_RETURN(
        Shape out,
        BatchnormOutputShape(spec.name, spatial, Input(in, "x").shape,
                             Input(in, "gamma").shape, Input(in, "beta").shape,
                             Input(in, "running_mean").shape,
                             Input(in, "running_var").shape, spec.bn));
    return TensorDesc{Input(in, "x").dtype, std::move(out)};
  };
  d->has_fast = true;
  d->forward = [spatial](const LayerSpec& spec, Impl impl, const TensorMap& in,
                         TensorMap* outputs) -> absl::StatusOr<std::string> {
    const Tensor& rm = Input(in, "running_mean");
    LS_ASSIGN_OR_RETURN(Tensor new_mean, Tensor::Zeros(rm.dtype(), rm.shape()));
    LS_ASSIGN_OR_RETURN(Tensor new_var, Tensor::Zeros(rm.dtype(), rm.shape()));
    Tensor* out = Output(outputs, "out");
    LS_ASSIGN_OR_RETURN(
        std::string name,
        impl == Impl::kNaive
            ? naive::BatchnormForward(BnInputs(in), spec.bn, spatial, out,
                                      &new_mean, &new_var)
            : fast::BatchnormForward(BnInputs(in), spec.bn, spatial, out,
                                     &new_mean, &new_var));
    outputs->emplace("running_mean", std::move(new_mean));
    outputs->emplace("running_var", std::move(new_var));
    return name;
  };
  d->backward = [spatial](const LayerSpec& spec, Impl impl, const TensorMap& in,
                          const Tensor& dout, TensorMap* g) {
    Tensor* dx = &g->find("dx")->second;
    Tensor* dgamma = &g->find("dgamma")->second;
    Tensor* dbeta = &g->find("dbeta")->second;
    return impl == Impl::kNaive
               ? naive::BatchnormBackward(BnInputs(in), spec.bn, spatial, dout,
                                          dx, dgamma, dbeta)
               : fast::BatchnormBackward(BnInputs(in), spec.bn, spatial, dout,
                                         dx, dgamma, dbeta);
  };
  return d;
}

}  // namespace

const LayerDef& BatchnormLayerDef() {
  static const LayerDef* const def = MakeBatchnormDef(
      "batchnorm",
      "batch normalization of x (N, D) per feature; train mode returns the "
      "updated running_mean and running_var",
      false);
  return *def;
}

const LayerDef& SpatialBatchnormLayerDef() {
  static const LayerDef* const def = MakeBatchnormDef(
      "spatial_batchnorm",
      "batch normalization of x (N, C, H, W) per channel; train mode returns "
      "the updated running_mean and running_var",
      true);
  return *def;
}

}  // namespace layerserve
