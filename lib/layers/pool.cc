// The max-pool family: validation, and its registry row.
#include "lib/layers/pool.h"

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"

namespace layerserve {

absl::StatusOr<Shape> MaxPoolOutputShape(absl::string_view layer,
                                         const Shape& x, const PoolParam& p) {
  if (x.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": input x must have rank 4 (N, C, H, W), got rank ", x.size(),
        " (shape ", ShapeString(x), ")"));
  }
  const struct {
    const char* name;
    int64_t value;
  } fields[] = {{"pool_height", p.pool_height},
                {"pool_width", p.pool_width},
                {"stride", p.stride}};
  for (const auto& f : fields) {
    if (f.value < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          layer, ": pool_param.", f.name, " must be >= 1, got ", f.value));
    }
  }
  if (p.pool_height > x[2]) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": pool_param.pool_height ", p.pool_height,
                     " exceeds the input height ", x[2], " (x.shape[2])"));
  }
  if (p.pool_width > x[3]) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": pool_param.pool_width ", p.pool_width,
                     " exceeds the input width ", x[3], " (x.shape[3])"));
  }
  return Shape{x[0], x[1], 1 + (x[2] - p.pool_height) / p.stride,
               1 + (x[3] - p.pool_width) / p.stride};
}

const LayerDef& MaxPoolLayerDef() {
  static const LayerDef* const def = [] {
    auto* d = new LayerDef;
    d->name = "max_pool";
    d->summary = "max pooling, no padding; gradient to the first maximum";
    d->inputs = {"x"};
    d->params = {ParamKind::kPool};
    d->output = "out";
    d->grad_inputs = d->inputs;
    d->grads = {"dx"};
    d->has_fast = true;
    d->infer = [](const LayerSpec& spec,
                  const DescMap& in) -> absl::StatusOr<TensorDesc> {
      LS_ASSIGN_OR_RETURN(
          Shape out,
          MaxPoolOutputShape(spec.name, Input(in, "x").shape, spec.pool));
      return TensorDesc{Input(in, "x").dtype, std::move(out)};
    };
    d->forward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                    TensorMap* outputs) {
      Tensor* out = Output(outputs, "out");
      const Tensor& x = Input(in, "x");
      return impl == Impl::kNaive ? naive::MaxPoolForward(x, spec.pool, out)
                                  : fast::MaxPoolForward(x, spec.pool, out);
    };
    d->backward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                     const Tensor& dout, TensorMap* g) {
      const Tensor& x = Input(in, "x");
      Tensor* dx = &g->find("dx")->second;
      return impl == Impl::kNaive
                 ? naive::MaxPoolBackward(x, spec.pool, dout, dx)
                 : fast::MaxPoolBackward(x, spec.pool, dout, dx);
    };
    return d;
  }();
  return *def;
}

}  // namespace layerserve
