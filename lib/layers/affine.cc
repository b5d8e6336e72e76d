// The affine family: validation (and, with the registry, its row).
#include "lib/layers/affine.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "lib/layers/layer.h"
#include "lib/status_macros.h"

namespace layerserve {

absl::StatusOr<Shape> AffineOutputShape(absl::string_view layer, const Shape& x,
                                        const Shape& w, const Shape& b) {
  if (x.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": input x must have rank >= 2 (N, d1, ...), got rank ",
        x.size(), " (shape ", ShapeString(x), ")"));
  }
  if (w.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input w must have rank 2 (D, M), got rank ",
                     w.size(), " (shape ", ShapeString(w), ")"));
  }
  if (b.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input b must have rank 1 (M,), got rank ",
                     b.size(), " (shape ", ShapeString(b), ")"));
  }
  int64_t d = 1;
  for (size_t i = 1; i < x.size(); ++i) d *= x[i];  // x is validated
  if (d != w[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input x has ", d,
                     " features per sample (prod of x.shape[1:] = ",
                     ShapeString(Shape(x.begin() + 1, x.end())),
                     ") but w expects ", w[0], " (w.shape[0])"));
  }
  if (b[0] != w[1]) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input b has ", b[0], " elements but w has ",
                     w[1], " outputs (w.shape[1])"));
  }
  return Shape{x[0], w[1]};
}

}  // namespace layerserve

namespace layerserve {

const LayerDef& AffineLayerDef() {
  static const LayerDef* const def = [] {
    auto* d = new LayerDef;
    d->name = "affine";
    d->summary =
        "fully connected: x (N, d1, ...) read as (N, D), out = x w + b";
    d->inputs = {"x", "w", "b"};
    d->output = "out";
    d->grad_inputs = d->inputs;
    d->grads = {"dx", "dw", "db"};
    d->infer = [](const LayerSpec& spec,
                  const DescMap& in) -> absl::StatusOr<TensorDesc> {
      LS_ASSIGN_OR_RETURN(
          Shape out,
          AffineOutputShape(spec.name, Input(in, "x").shape,
                            Input(in, "w").shape, Input(in, "b").shape));
      return TensorDesc{Input(in, "x").dtype, std::move(out)};
    };
    d->has_fast = true;
    d->forward = [](const LayerSpec&, Impl impl, const TensorMap& in,
                    TensorMap* outputs) {
      const Tensor &x = Input(in, "x"), &w = Input(in, "w"),
                   &b = Input(in, "b");
      Tensor* out = Output(outputs, "out");
      return impl == Impl::kNaive ? naive::AffineForward(x, w, b, out)
                                  : fast::AffineForward(x, w, b, out);
    };
    d->backward = [](const LayerSpec&, Impl impl, const TensorMap& in,
                     const Tensor& dout, TensorMap* g) {
      const Tensor &x = Input(in, "x"), &w = Input(in, "w");
      Tensor* dx = &g->find("dx")->second;
      Tensor* dw = &g->find("dw")->second;
      Tensor* db = &g->find("db")->second;
      return impl == Impl::kNaive
                 ? naive::AffineBackward(x, w, dout, dx, dw, db)
                 : fast::AffineBackward(x, w, dout, dx, dw, db);
    };
    return d;
  }();
  return *def;
}

}  // namespace layerserve
