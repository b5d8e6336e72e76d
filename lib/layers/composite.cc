// The seed's conv_layer_utils: conv_relu and conv_relu_pool, forward and
// backward, built from the primitives exactly as the seed chains them.
// Backward is stateless: it recomputes the forward intermediates.
#include <set>
#include <string>

#include "absl/strings/str_join.h"
#include "lib/layers/conv.h"
#include "lib/layers/layer.h"
#include "lib/layers/pool.h"
#include "lib/layers/relu.h"
#include "lib/status_macros.h"

namespace layerserve {
namespace {

// "onednn:jit:avx2+pool:tiled": each distinct stage implementation once,
// in the order the stages ran.
class ImplNames {
 public:
  void Add(const std::string& name) {
    if (seen_.insert(name).second) names_.push_back(name);
  }
  std::string Join() const { return absl::StrJoin(names_, "+"); }

 private:
  std::set<std::string> seen_;
  std::vector<std::string> names_;
};

absl::StatusOr<Shape> ConvOut(const LayerSpec& spec, const TensorMap& in) {
  return ConvOutputShape(spec.name, Input(in, "x").shape(),
                         Input(in, "w").shape(), Input(in, "b").shape(),
                         spec.conv);
}

// a = conv(x), r = relu(a); returns r (and a only where the caller needs it).
absl::StatusOr<Tensor> ConvRelu(const LayerSpec& spec, Impl impl,
                                const TensorMap& in, ImplNames* names) {
  const Tensor &x = Input(in, "x"), &w = Input(in, "w"), &b = Input(in, "b");
  LS_ASSIGN_OR_RETURN(Shape shape, ConvOut(spec, in));
  LS_ASSIGN_OR_RETURN(Tensor r, Tensor::Zeros(x.dtype(), shape));
  if (impl == Impl::kFast) {
    LS_ASSIGN_OR_RETURN(std::string n,
                        fast::ConvReluForward(x, w, b, spec.conv, &r));
    names->Add(n);
    return r;
  }
  LS_ASSIGN_OR_RETURN(Tensor a, Tensor::Zeros(x.dtype(), shape));
  LS_ASSIGN_OR_RETURN(std::string n1,
                      naive::ConvForward(x, w, b, spec.conv, &a));
  LS_ASSIGN_OR_RETURN(std::string n2, naive::ReluForward(a, &r));
  names->Add(n1);
  names->Add(n2);
  return r;
}

// Given r = relu(conv(x)) and dr, the conv gradients. relu'(a) is read off
// r: r > 0 exactly where a > 0.
absl::Status ConvReluBackward(const LayerSpec& spec, Impl impl,
                              const TensorMap& in, const Tensor& r,
                              const Tensor& dr, TensorMap* g,
                              ImplNames* names) {
  LS_ASSIGN_OR_RETURN(Tensor da, Tensor::Zeros(r.dtype(), r.shape()));
  LS_ASSIGN_OR_RETURN(std::string n1, impl == Impl::kNaive
                                          ? naive::ReluBackward(r, dr, &da)
                                          : fast::ReluBackward(r, dr, &da));
  const Tensor &x = Input(in, "x"), &w = Input(in, "w");
  Tensor* dx = &g->find("dx")->second;
  Tensor* dw = &g->find("dw")->second;
  Tensor* db = &g->find("db")->second;
  LS_ASSIGN_OR_RETURN(
      std::string n2,
      impl == Impl::kNaive
          ? naive::ConvBackward(x, w, spec.conv, da, dx, dw, db)
          : fast::ConvBackward(x, w, spec.conv, da, dx, dw, db));
  names->Add(n1);
  names->Add(n2);
  return absl::OkStatus();
}

LayerDef* ConvBase(absl::string_view name, absl::string_view summary) {
  auto* d = new LayerDef;
  d->name = name;
  d->summary = summary;
  d->inputs = {"x", "w", "b"};
  d->output = "out";
  d->grads = {"dx", "dw", "db"};
  d->has_fast = true;
  return d;
}

}  // namespace

const LayerDef& ConvReluLayerDef() {
  static const LayerDef* const def = [] {
    LayerDef* d = ConvBase("conv_relu", "conv followed by relu");
    d->params = {ParamKind::kConv};
    d->infer = [](const LayerSpec& spec,
                  const DescMap& in) -> absl::StatusOr<TensorDesc> {
      LS_ASSIGN_OR_RETURN(
          Shape out,
          ConvOutputShape(spec.name, Input(in, "x").shape, Input(in, "w").shape,
                          Input(in, "b").shape, spec.conv));
      return TensorDesc{Input(in, "x").dtype, std::move(out)};
    };
    d->forward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                    Tensor* out) -> absl::StatusOr<std::string> {
      ImplNames names;
      LS_ASSIGN_OR_RETURN(*out, ConvRelu(spec, impl, in, &names));
      return names.Join();
    };
    d->backward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                     const Tensor& dout,
                     TensorMap* g) -> absl::StatusOr<std::string> {
      ImplNames names;
      LS_ASSIGN_OR_RETURN(Tensor r, ConvRelu(spec, impl, in, &names));
      LS_RETURN_IF_ERROR(ConvReluBackward(spec, impl, in, r, dout, g, &names));
      return names.Join();
    };
    return d;
  }();
  return *def;
}

const LayerDef& ConvReluPoolLayerDef() {
  static const LayerDef* const def = [] {
    LayerDef* d =
        ConvBase("conv_relu_pool", "conv followed by relu and max pooling");
    d->params = {ParamKind::kConv, ParamKind::kPool};
    d->infer = [](const LayerSpec& spec,
                  const DescMap& in) -> absl::StatusOr<TensorDesc> {
      LS_ASSIGN_OR_RETURN(
          Shape conv_out,
          ConvOutputShape(spec.name, Input(in, "x").shape, Input(in, "w").shape,
                          Input(in, "b").shape, spec.conv));
      LS_ASSIGN_OR_RETURN(Shape out,
                          MaxPoolOutputShape(spec.name, conv_out, spec.pool));
      return TensorDesc{Input(in, "x").dtype, std::move(out)};
    };
    d->forward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                    Tensor* out) -> absl::StatusOr<std::string> {
      ImplNames names;
      LS_ASSIGN_OR_RETURN(Tensor r, ConvRelu(spec, impl, in, &names));
      LS_ASSIGN_OR_RETURN(std::string n,
                          impl == Impl::kNaive
                              ? naive::MaxPoolForward(r, spec.pool, out)
                              : fast::MaxPoolForward(r, spec.pool, out));
      names.Add(n);
      return names.Join();
    };
    d->backward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                     const Tensor& dout,
                     TensorMap* g) -> absl::StatusOr<std::string> {
      ImplNames names;
      LS_ASSIGN_OR_RETURN(Tensor r, ConvRelu(spec, impl, in, &names));
      LS_ASSIGN_OR_RETURN(Tensor dr, Tensor::Zeros(r.dtype(), r.shape()));
      LS_ASSIGN_OR_RETURN(std::string n,
                          impl == Impl::kNaive
                              ? naive::MaxPoolBackward(r, spec.pool, dout, &dr)
                              : fast::MaxPoolBackward(r, spec.pool, dout, &dr));
      names.Add(n);
      LS_RETURN_IF_ERROR(ConvReluBackward(spec, impl, in, r, dr, g, &names));
      return names.Join();
    };
    return d;
  }();
  return *def;
}

}  // namespace layerserve
