// The loss family: validation (and, with the registry, its rows).
#include "lib/layers/loss.h"

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"

namespace layerserve {

absl::Status ValidateLossInputs(absl::string_view layer, const Shape& x,
                                const Shape& y) {
  if (x.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input x must have rank 2 (N, C), got rank ",
                     x.size(), " (shape ", ShapeString(x), ")"));
  }
  if (y != Shape{x[0]}) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input y must have shape (", x[0],
                     ",) (one label per row of x), got ", ShapeString(y)));
  }
  return absl::OkStatus();
}

absl::Status ValidateLabels(absl::string_view layer, const int64_t* y,
                            int64_t n, int64_t classes) {
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] < 0 || y[i] >= classes) {
      return absl::InvalidArgumentError(
          absl::StrCat(layer, ": label y[", i, "] = ", y[i],
                       " is out of range [0, ", classes, ") (x.shape[1])"));
    }
  }
  return absl::OkStatus();
}

}  // namespace layerserve

namespace layerserve {
namespace {

LayerDef* MakeLossDef(absl::string_view name, absl::string_view summary,
                      LossKind kind) {
  auto* d = new LayerDef;
  d->name = name;
  d->summary = summary;
  d->inputs = {"x", "y"};
  d->label_inputs = {"y"};
  d->output = "loss";
  d->grad_inputs = {"x"};
  d->grads = {"dx"};
  d->infer = [](const LayerSpec& spec,
                const DescMap& in) -> absl::StatusOr<TensorDesc> {
    LS_RETURN_IF_ERROR(ValidateLossInputs(spec.name, Input(in, "x").shape,
                                          Input(in, "y").shape));
    // The mean loss, as a one-element tensor.
    return TensorDesc{Input(in, "x").dtype, Shape{1}};
  };
  d->has_fast = true;
  // Label values are data, so they are checked here rather than in infer.
  // Returns the implementation name; dx may be null for FAST.
  auto run = [kind](const LayerSpec& spec, Impl impl, const TensorMap& in,
                    double dloss, double* loss,
                    Tensor* dx) -> absl::StatusOr<std::string> {
    const Tensor& x = Input(in, "x");
    const Tensor& y = Input(in, "y");
    LS_RETURN_IF_ERROR(
        ValidateLabels(spec.name, y.data<int64_t>(), y.size(), x.dim(1)));
    if (impl == Impl::kFast) {
      return fast::Loss(kind, x, y.data<int64_t>(), dloss, loss, dx);
    }
    // The naive loop always computes dx too.
    Tensor scratch;
    if (dx == nullptr) {
      LS_ASSIGN_OR_RETURN(scratch, Tensor::Zeros(x.dtype(), x.shape()));
      dx = &scratch;
    }
    LS_RETURN_IF_ERROR(
        naive::Loss(kind, x, y.data<int64_t>(), dloss, loss, dx));
    return std::string("naive");
  };
  d->forward = [run](const LayerSpec& spec, Impl impl, const TensorMap& in,
                     TensorMap* outputs) -> absl::StatusOr<std::string> {
    double loss = 0;
    LS_ASSIGN_OR_RETURN(std::string name,
                        run(spec, impl, in, 1.0, &loss, nullptr));
    Output(outputs, "loss")->SetFlat(0, loss);
    return name;
  };
  d->backward = [run](const LayerSpec& spec, Impl impl, const TensorMap& in,
                      const Tensor& dout, TensorMap* g) {
    double loss = 0;
    return run(spec, impl, in, dout.GetFlat(0), &loss, &g->find("dx")->second);
  };
  return d;
}

}  // namespace

const LayerDef& SoftmaxLossLayerDef() {
  static const LayerDef* const def = MakeLossDef(
      "softmax_loss",
      "softmax cross-entropy of scores x (N, C) against int64 labels y (N,); "
      "loss is the batch mean, shape (1,)",
      LossKind::kSoftmax);
  return *def;
}

const LayerDef& SvmLossLayerDef() {
  static const LayerDef* const def = MakeLossDef(
      "svm_loss",
      "multiclass hinge loss (margin 1) of scores x (N, C) against int64 "
      "labels y (N,); loss is the batch mean, shape (1,)",
      LossKind::kSvm);
  return *def;
}

}  // namespace layerserve
