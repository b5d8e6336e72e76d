#include "lib/layers/dropout.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"

namespace layerserve {
namespace {

// SplitMix64's finalizer: a bijective mix whose outputs for consecutive
// inputs are statistically independent, which makes (seed, i) -> uniform a
// counter-based generator: any element's draw without drawing the others.
uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

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
  const uint64_t bits = Mix(Mix(p.seed) ^ static_cast<uint64_t>(i));
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
    d->forward = [](const LayerSpec& spec, Impl, const TensorMap& in,
                    TensorMap* outputs) {
      return naive::DropoutForward(Input(in, "x"), spec.dropout,
                                   Output(outputs, "out"));
    };
    d->backward = [](const LayerSpec& spec, Impl, const TensorMap& in,
                     const Tensor& dout, TensorMap* g) {
      return naive::DropoutBackward(Input(in, "x"), spec.dropout, dout,
                                    &g->find("dx")->second);
    };
    return d;
  }();
  return *def;
}

}  // namespace layerserve
