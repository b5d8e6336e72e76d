// The conv family: validation, and its registry row dispatching to
// naive/conv.cc or fast/conv.cc.
#include "lib/layers/conv.h"

#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"

namespace layerserve {
namespace {

absl::Status CheckRank(absl::string_view layer, absl::string_view name,
                       const Shape& s, size_t rank, absl::string_view dims) {
  if (s.size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": input ", name, " must have rank ", rank, " ", dims,
        ", got rank ", s.size(), " (shape ", ShapeString(s), ")"));
  }
  return absl::OkStatus();
}

// One spatial dimension: the padded extent and the output extent, with
// every step checked so a pad of 10^9 cannot overflow.
absl::StatusOr<int64_t> ConvOutDim(absl::string_view layer,
                                   absl::string_view what, int64_t in,
                                   int64_t kernel, const ConvParam& p,
                                   absl::string_view in_field,
                                   absl::string_view k_field) {
  if (p.pad > (std::numeric_limits<int64_t>::max() - in) / 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": conv_param.pad ", p.pad, " overflows the padded ", what));
  }
  const int64_t padded = in + 2 * p.pad;
  if (kernel > padded) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": kernel ", what, " ", kernel, " (", k_field,
                     ") exceeds the padded input ", what, " ", padded, " (",
                     in_field, " + 2 * pad = ", in, " + 2 * ", p.pad, ")"));
  }
  return 1 + (padded - kernel) / p.stride;
}

}  // namespace

absl::StatusOr<Shape> ConvOutputShape(absl::string_view layer, const Shape& x,
                                      const Shape& w, const Shape& b,
                                      const ConvParam& p) {
  LS_RETURN_IF_ERROR(CheckRank(layer, "x", x, 4, "(N, C, H, W)"));
  LS_RETURN_IF_ERROR(CheckRank(layer, "w", w, 4, "(F, C, HH, WW)"));
  LS_RETURN_IF_ERROR(CheckRank(layer, "b", b, 1, "(F,)"));
  if (x[1] != w[1]) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": input x has ", x[1], " channels (x.shape[1]) but w expects ",
        w[1], " (w.shape[1])"));
  }
  if (b[0] != w[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input b has ", b[0], " elements but w has ",
                     w[0], " filters (w.shape[0])"));
  }
  if (p.stride < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": conv_param.stride must be >= 1, got ", p.stride));
  }
  if (p.pad < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": conv_param.pad must be >= 0, got ", p.pad));
  }
  LS_ASSIGN_OR_RETURN(int64_t ho, ConvOutDim(layer, "height", x[2], w[2], p,
                                             "x.shape[2]", "w.shape[2]"));
  LS_ASSIGN_OR_RETURN(int64_t wo, ConvOutDim(layer, "width", x[3], w[3], p,
                                             "x.shape[3]", "w.shape[3]"));
  Shape out = {x[0], w[0], ho, wo};
  LS_RETURN_IF_ERROR(ValidateShape(out, absl::StrCat(layer, ": output")));
  return out;
}

const LayerDef& ConvLayerDef() {
  static const LayerDef* const def = [] {
    auto* d = new LayerDef;
    d->name = "conv";
    d->summary =
        "2-D convolution (cross-correlation), zero padding: out = conv(x, w) "
        "+ b";
    d->inputs = {"x", "w", "b"};
    d->params = {ParamKind::kConv};
    d->output = "out";
    d->grad_inputs = d->inputs;
    d->grads = {"dx", "dw", "db"};
    d->has_fast = true;
    d->infer = [](const LayerSpec& spec,
                  const DescMap& in) -> absl::StatusOr<TensorDesc> {
      LS_ASSIGN_OR_RETURN(
          Shape out,
          ConvOutputShape(spec.name, Input(in, "x").shape, Input(in, "w").shape,
                          Input(in, "b").shape, spec.conv));
      return TensorDesc{Input(in, "x").dtype, std::move(out)};
    };
    d->forward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                    TensorMap* outputs) {
      Tensor* out = Output(outputs, "out");
      const Tensor &x = Input(in, "x"), &w = Input(in, "w"),
                   &b = Input(in, "b");
      return impl == Impl::kNaive ? naive::ConvForward(x, w, b, spec.conv, out)
                                  : fast::ConvForward(x, w, b, spec.conv, out);
    };
    d->backward = [](const LayerSpec& spec, Impl impl, const TensorMap& in,
                     const Tensor& dout, TensorMap* g) {
      const Tensor &x = Input(in, "x"), &w = Input(in, "w");
      Tensor* dx = &g->find("dx")->second;
      Tensor* dw = &g->find("dw")->second;
      Tensor* db = &g->find("db")->second;
      return impl == Impl::kNaive
                 ? naive::ConvBackward(x, w, spec.conv, dout, dx, dw, db)
                 : fast::ConvBackward(x, w, spec.conv, dout, dx, dw, db);
    };
    return d;
  }();
  return *def;
}

}  // namespace layerserve
