// The relu family's registry row.
#include "lib/layers/relu.h"

#include "lib/layers/layer.h"

namespace layerserve {

const LayerDef& ReluLayerDef() {
  static const LayerDef* const def = [] {
    auto* d = new LayerDef;
    d->name = "relu";
    d->summary = "rectified linear unit: out = max(0, x); any shape";
    d->inputs = {"x"};
    d->output = "out";
    d->grad_inputs = d->inputs;
    d->grads = {"dx"};
    d->has_fast = true;
    d->infer = [](const LayerSpec&,
                  const DescMap& in) -> absl::StatusOr<TensorDesc> {
      return Input(in, "x");
    };
    d->forward = [](const LayerSpec&, Impl impl, const TensorMap& in,
                    TensorMap* outputs) {
      Tensor* out = Output(outputs, "out");
      const Tensor& x = Input(in, "x");
      return impl == Impl::kNaive ? naive::ReluForward(x, out)
                                  : fast::ReluForward(x, out);
    };
    d->backward = [](const LayerSpec&, Impl impl, const TensorMap& in,
                     const Tensor& dout, TensorMap* g) {
      const Tensor& x = Input(in, "x");
      Tensor* dx = &g->find("dx")->second;
      return impl == Impl::kNaive ? naive::ReluBackward(x, dout, dx)
                                  : fast::ReluBackward(x, dout, dx);
    };
    return d;
  }();
  return *def;
}

}  // namespace layerserve
