// The seed's conv_layer_utils and the course's layer utilities: conv_relu,
// conv_relu_pool, affine_relu, conv_batchnorm_relu and affine_batchnorm_relu,
// forward and backward, built from the primitives exactly as the seed chains
// them; FAST chains the fast stages.
// Backward is stateless: it recomputes the forward intermediates.
#include <set>
#include <string>

#include "absl/strings/str_join.h"
#include "lib/cancel.h"
#include "lib/layers/affine.h"
#include "lib/layers/batchnorm.h"
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
  // Between stages: a cancelled call stops here rather than after the conv.
  LS_RETURN_IF_ERROR(CheckCancelled());
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
  d->grad_inputs = d->inputs;
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
                    TensorMap* outputs) -> absl::StatusOr<std::string> {
      Tensor* out = Output(outputs, "out");
      ImplNames names;
      LS_ASSIGN_OR_RETURN(*out, ConvRelu(spec, impl, in, &names));
      return names.Join();
    };
    d->backward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                     const Tensor& dout,
                     TensorMap* g) -> absl::StatusOr<std::string> {
      ImplNames names;
      LS_ASSIGN_OR_RETURN(Tensor r, ConvRelu(spec, impl, in, &names));
      LS_RETURN_IF_ERROR(CheckCancelled());
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
                    TensorMap* outputs) -> absl::StatusOr<std::string> {
      Tensor* out = Output(outputs, "out");
      ImplNames names;
      LS_ASSIGN_OR_RETURN(Tensor r, ConvRelu(spec, impl, in, &names));
      LS_RETURN_IF_ERROR(CheckCancelled());
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
      LS_RETURN_IF_ERROR(CheckCancelled());
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

namespace {

// The first stage of the batchnorm composites and affine_relu: conv or
// affine, a -> (x, w, b).
enum class Linear { kConv, kAffine };

absl::StatusOr<Shape> LinearOut(Linear kind, const LayerSpec& spec,
                                const Shape& x, const Shape& w,
                                const Shape& b) {
  return kind == Linear::kConv ? ConvOutputShape(spec.name, x, w, b, spec.conv)
                               : AffineOutputShape(spec.name, x, w, b);
}

absl::StatusOr<Tensor> LinearForward(Linear kind, const LayerSpec& spec,
                                     Impl impl, const TensorMap& in,
                                     ImplNames* names) {
  const Tensor &x = Input(in, "x"), &w = Input(in, "w"), &b = Input(in, "b");
  LS_ASSIGN_OR_RETURN(Shape shape,
                      LinearOut(kind, spec, x.shape(), w.shape(), b.shape()));
  LS_ASSIGN_OR_RETURN(Tensor a, Tensor::Zeros(x.dtype(), shape));
  const bool use_naive = impl == Impl::kNaive;
  absl::StatusOr<std::string> n =
      kind == Linear::kAffine
          ? (use_naive ? naive::AffineForward(x, w, b, &a)
                       : fast::AffineForward(x, w, b, &a))
          : (use_naive ? naive::ConvForward(x, w, b, spec.conv, &a)
                       : fast::ConvForward(x, w, b, spec.conv, &a));
  if (!n.ok()) return n.status();
  names->Add(*n);
  return a;
}

absl::Status LinearBackward(Linear kind, const LayerSpec& spec, Impl impl,
                            const TensorMap& in, const Tensor& da, TensorMap* g,
                            ImplNames* names) {
  const Tensor &x = Input(in, "x"), &w = Input(in, "w");
  Tensor* dx = &g->find("dx")->second;
  Tensor* dw = &g->find("dw")->second;
  Tensor* db = &g->find("db")->second;
  const bool use_naive = impl == Impl::kNaive;
  absl::StatusOr<std::string> n =
      kind == Linear::kAffine
          ? (use_naive ? naive::AffineBackward(x, w, da, dx, dw, db)
                       : fast::AffineBackward(x, w, da, dx, dw, db))
          : (use_naive ? naive::ConvBackward(x, w, spec.conv, da, dx, dw, db)
                       : fast::ConvBackward(x, w, spec.conv, da, dx, dw, db));
  if (!n.ok()) return n.status();
  names->Add(*n);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Relu(Impl impl, const Tensor& a, Tensor* out) {
  return impl == Impl::kNaive ? naive::ReluForward(a, out)
                              : fast::ReluForward(a, out);
}

absl::StatusOr<std::string> ReluBack(Impl impl, const Tensor& a,
                                     const Tensor& dout, Tensor* da) {
  return impl == Impl::kNaive ? naive::ReluBackward(a, dout, da)
                              : fast::ReluBackward(a, dout, da);
}

// s = batchnorm(a) with gamma, beta and the running statistics of `in`.
BatchnormTensors BnOf(const Tensor& a, const TensorMap& in) {
  return {&a, &Input(in, "gamma"), &Input(in, "beta"),
          &Input(in, "running_mean"), &Input(in, "running_var")};
}

absl::StatusOr<std::string> BnForward(Impl impl, const BatchnormTensors& in,
                                      const BatchnormParam& p, bool spatial,
                                      Tensor* out, Tensor* new_mean,
                                      Tensor* new_var) {
  return impl == Impl::kNaive
             ? naive::BatchnormForward(in, p, spatial, out, new_mean, new_var)
             : fast::BatchnormForward(in, p, spatial, out, new_mean, new_var);
}

absl::StatusOr<std::string> BnBackward(Impl impl, const BatchnormTensors& in,
                                       const BatchnormParam& p, bool spatial,
                                       const Tensor& dout, Tensor* dx,
                                       Tensor* dgamma, Tensor* dbeta) {
  return impl == Impl::kNaive
             ? naive::BatchnormBackward(in, p, spatial, dout, dx, dgamma, dbeta)
             : fast::BatchnormBackward(in, p, spatial, dout, dx, dgamma, dbeta);
}

LayerDef* LinearBnReluDef(absl::string_view name, absl::string_view summary,
                          Linear kind) {
  const bool spatial = kind == Linear::kConv;
  auto* d = new LayerDef;
  d->name = name;
  d->summary = summary;
  d->inputs = {"x", "w", "b", "gamma", "beta", "running_mean", "running_var"};
  if (kind == Linear::kConv) d->params.push_back(ParamKind::kConv);
  d->params.push_back(ParamKind::kBatchnorm);
  d->output = "out";
  d->extra_outputs = {"running_mean", "running_var"};
  d->grad_inputs = {"x", "w", "b", "gamma", "beta"};
  d->grads = {"dx", "dw", "db", "dgamma", "dbeta"};
  d->has_fast = true;
  d->infer = [kind, spatial](const LayerSpec& spec,
                             const DescMap& in) -> absl::StatusOr<TensorDesc> {
    LS_ASSIGN_OR_RETURN(Shape a,
                        LinearOut(kind, spec, Input(in, "x").shape,
                                  Input(in, "w").shape, Input(in, "b").shape));
    LS_ASSIGN_OR_RETURN(
        Shape out, BatchnormOutputShape(
                       spec.name, spatial, a, Input(in, "gamma").shape,
                       Input(in, "beta").shape, Input(in, "running_mean").shape,
                       Input(in, "running_var").shape, spec.bn));
    return TensorDesc{Input(in, "x").dtype, std::move(out)};
  };
  d->forward = [kind, spatial](
                   const LayerSpec& spec, Impl impl, const TensorMap& in,
                   TensorMap* outputs) -> absl::StatusOr<std::string> {
    ImplNames names;
    LS_ASSIGN_OR_RETURN(Tensor a, LinearForward(kind, spec, impl, in, &names));
    LS_ASSIGN_OR_RETURN(Tensor s, Tensor::Zeros(a.dtype(), a.shape()));
    const Tensor& rm = Input(in, "running_mean");
    LS_ASSIGN_OR_RETURN(Tensor new_mean, Tensor::Zeros(rm.dtype(), rm.shape()));
    LS_ASSIGN_OR_RETURN(Tensor new_var, Tensor::Zeros(rm.dtype(), rm.shape()));
    LS_ASSIGN_OR_RETURN(std::string n1,
                        BnForward(impl, BnOf(a, in), spec.bn, spatial, &s,
                                  &new_mean, &new_var));
    LS_ASSIGN_OR_RETURN(std::string n2, Relu(impl, s, Output(outputs, "out")));
    names.Add(n1);
    names.Add(n2);
    outputs->emplace("running_mean", std::move(new_mean));
    outputs->emplace("running_var", std::move(new_var));
    return names.Join();
  };
  d->backward = [kind, spatial](const LayerSpec& spec, Impl impl,
                                const TensorMap& in, const Tensor& dout,
                                TensorMap* g) -> absl::StatusOr<std::string> {
    ImplNames names;
    LS_ASSIGN_OR_RETURN(Tensor a, LinearForward(kind, spec, impl, in, &names));
    LS_ASSIGN_OR_RETURN(Tensor s, Tensor::Zeros(a.dtype(), a.shape()));
    const Tensor& rm = Input(in, "running_mean");
    LS_ASSIGN_OR_RETURN(Tensor scratch_mean,
                        Tensor::Zeros(rm.dtype(), rm.shape()));
    LS_ASSIGN_OR_RETURN(Tensor scratch_var,
                        Tensor::Zeros(rm.dtype(), rm.shape()));
    LS_RETURN_IF_ERROR(BnForward(impl, BnOf(a, in), spec.bn, spatial, &s,
                                 &scratch_mean, &scratch_var)
                           .status());
    LS_ASSIGN_OR_RETURN(Tensor ds, Tensor::Zeros(s.dtype(), s.shape()));
    LS_ASSIGN_OR_RETURN(std::string n1, ReluBack(impl, s, dout, &ds));
    LS_ASSIGN_OR_RETURN(Tensor da, Tensor::Zeros(a.dtype(), a.shape()));
    LS_ASSIGN_OR_RETURN(
        std::string n2,
        BnBackward(impl, BnOf(a, in), spec.bn, spatial, ds, &da,
                   &g->find("dgamma")->second, &g->find("dbeta")->second));
    names.Add(n1);
    names.Add(n2);
    LS_RETURN_IF_ERROR(LinearBackward(kind, spec, impl, in, da, g, &names));
    return names.Join();
  };
  return d;
}

}  // namespace

const LayerDef& AffineReluLayerDef() {
  static const LayerDef* const def = [] {
    LayerDef* d = ConvBase("affine_relu", "affine followed by relu");
    d->infer = [](const LayerSpec& spec,
                  const DescMap& in) -> absl::StatusOr<TensorDesc> {
      LS_ASSIGN_OR_RETURN(
          Shape out,
          AffineOutputShape(spec.name, Input(in, "x").shape,
                            Input(in, "w").shape, Input(in, "b").shape));
      return TensorDesc{Input(in, "x").dtype, std::move(out)};
    };
    d->forward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                    TensorMap* outputs) -> absl::StatusOr<std::string> {
      ImplNames names;
      LS_ASSIGN_OR_RETURN(
          Tensor a, LinearForward(Linear::kAffine, spec, impl, in, &names));
      LS_ASSIGN_OR_RETURN(std::string n, Relu(impl, a, Output(outputs, "out")));
      names.Add(n);
      return names.Join();
    };
    d->backward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                     const Tensor& dout,
                     TensorMap* g) -> absl::StatusOr<std::string> {
      ImplNames names;
      LS_ASSIGN_OR_RETURN(
          Tensor a, LinearForward(Linear::kAffine, spec, impl, in, &names));
      LS_ASSIGN_OR_RETURN(Tensor da, Tensor::Zeros(a.dtype(), a.shape()));
      LS_ASSIGN_OR_RETURN(std::string n, ReluBack(impl, a, dout, &da));
      names.Add(n);
      LS_RETURN_IF_ERROR(
          LinearBackward(Linear::kAffine, spec, impl, in, da, g, &names));
      return names.Join();
    };
    return d;
  }();
  return *def;
}

const LayerDef& ConvBatchnormReluLayerDef() {
  static const LayerDef* const def = LinearBnReluDef(
      "conv_batchnorm_relu",
      "conv, spatial batchnorm, relu; train mode returns the updated "
      "running_mean and running_var",
      Linear::kConv);
  return *def;
}

const LayerDef& AffineBatchnormReluLayerDef() {
  static const LayerDef* const def = LinearBnReluDef(
      "affine_batchnorm_relu",
      "affine, batchnorm, relu; train mode returns the updated running_mean "
      "and running_var",
      Linear::kAffine);
  return *def;
}

}  // namespace layerserve
