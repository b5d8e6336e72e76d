#include "lib/layers/dropout.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"

namespace layerserve {

absl::Status ValidateDropoutParam(absl::string_view layer,
                                  const DropoutParam& p) {
  if (!(p.p > 0 && p.p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer,
        ": dropout_param.p (the keep probability) must be in (0, 1], "
        "got ",
        p.p));
  }
  return absl::OkStatus();
}

bool DropoutKeeps(const DropoutParam& p, int64_t i) {
  const uint64_t bits =
      DropoutMix(DropoutMix(p.seed) ^ static_cast<uint64_t>(i));
  const double u = static_cast<double>(bits >> 11) * 0x1.0p-53;  // [0, 1)
  return u < p.p;
}

namespace naive {

absl::StatusOr<std::string> DropoutForward(const Tensor& x,
                                           const DropoutParam& p, Tensor* out) {
  for (int64_t i = 0; i < x.size(); ++i) {
    const double v = x.GetFlat(i);
    out->SetFlat(i, !p.train ? v : DropoutKeeps(p, i) ? v / p.p : 0.0);
  }
  return std::string("naive");
}

absl::StatusOr<std::string> DropoutBackward(const Tensor& x,
                                            const DropoutParam& p,
                                            const Tensor& dout, Tensor* dx) {
  for (int64_t i = 0; i < x.size(); ++i) {
    const double g = dout.GetFlat(i);
    dx->SetFlat(i, !p.train ? g : DropoutKeeps(p, i) ? g / p.p : 0.0);
  }
  return std::string("naive");
}

}  // namespace naive
}  // namespace layerserve

namespace layerserve {

const LayerDef& DropoutLayerDef() {
  static const LayerDef* const def = [] {
    auto* d = new LayerDef;
    d->name = "dropout";
    d->summary =
        "inverted dropout; dropout_param.p is the probability of KEEPING a "
        "unit (kept units are scaled by 1/p in train mode; test mode is the "
        "identity); the mask is a function of dropout_param.seed";
    d->inputs = {"x"};
    d->params = {ParamKind::kDropout};
    d->output = "out";
    d->grad_inputs = d->inputs;
    d->grads = {"dx"};
    d->infer = [](const LayerSpec& spec,
                  const DescMap& in) -> absl::StatusOr<TensorDesc> {
      LS_RETURN_IF_ERROR(ValidateDropoutParam(spec.name, spec.dropout));
      return Input(in, "x");
    };
    d->has_fast = true;
    d->forward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                    TensorMap* outputs) {
      const Tensor& x = Input(in, "x");
      Tensor* out = Output(outputs, "out");
      return impl == Impl::kNaive ? naive::DropoutForward(x, spec.dropout, out)
                                  : fast::DropoutForward(x, spec.dropout, out);
    };
    d->backward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                     const Tensor& dout, TensorMap* g) {
      const Tensor& x = Input(in, "x");
      Tensor* dx = &g->find("dx")->second;
      return impl == Impl::kNaive
                 ? naive::DropoutBackward(x, spec.dropout, dout, dx)
                 : fast::DropoutBackward(x, spec.dropout, dout, dx);
    };
    return d;
  }();
  return *def;
}

}  // namespace layerserve
