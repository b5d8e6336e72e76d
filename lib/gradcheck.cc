#include "lib/gradcheck.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/cancel.h"
#include "lib/registry.h"
#include "lib/status_macros.h"

namespace layerserve {

absl::Status CheckFinite(const Tensor& t, absl::string_view what) {
  for (int64_t i = 0; i < t.size(); ++i) {
    const double v = t.GetFlat(i);
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has a non-finite value ", v, " at index [",
                       absl::StrJoin(t.Unravel(i), ", "),
                       "]; a gradient check needs finite inputs"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> NumericalGradient(
    const std::function<absl::StatusOr<Tensor>(const Tensor&)>& f, Tensor& x,
    const Tensor& dout, double h) {
  LS_ASSIGN_OR_RETURN(Tensor grad, Tensor::Zeros(x.dtype(), x.shape()));
  for (int64_t i = 0; i < x.size(); ++i) {
    LS_RETURN_IF_ERROR(CheckCancelled());
    const double old = x.GetFlat(i);
    x.SetFlat(i, old + h);
    // The step actually taken: in float32, old + h rounds, and dividing by
    // the stored difference instead of 2h removes that rounding error from
    // the quotient. In float64 it is 2h to within an ulp of old.
    const double plus = x.GetFlat(i);
    absl::StatusOr<Tensor> fp = f(x);
    x.SetFlat(i, old - h);
    const double minus = x.GetFlat(i);
    absl::StatusOr<Tensor> fm = f(x);
    x.SetFlat(i, old);
    if (!fp.ok()) return fp.status();
    if (!fm.ok()) return fm.status();
    if (fp->shape() != dout.shape()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gradient check: dout has shape ", ShapeString(dout.shape()),
          " but f(x) has shape ", ShapeString(fp->shape())));
    }
    double sum = 0;
    for (int64_t k = 0; k < dout.size(); ++k) {
      sum += (fp->GetFlat(k) - fm->GetFlat(k)) * dout.GetFlat(k);
    }
    grad.SetFlat(i, sum / (plus - minus));
  }
  return grad;
}

absl::StatusOr<GradCheckReport> GradCheck(const LayerSpec& spec, Impl impl,
                                          const TensorMap& inputs,
                                          const GradCheckOptions& options) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(spec.name));
  LS_ASSIGN_OR_RETURN(TensorDesc out_desc, InferOutput(spec, DescsOf(inputs)));
  if (!(std::isfinite(options.h) && options.h > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("h: the step must be finite and > 0, got ", options.h));
  }
  for (const auto& [name, t] : inputs) {
    LS_RETURN_IF_ERROR(CheckFinite(t, absl::StrCat("input ", name)));
  }

  Tensor generated;
  const Tensor* dout = options.dout;
  if (dout == nullptr || dout->empty()) {
    LS_ASSIGN_OR_RETURN(
        generated,
        Tensor::RandomNormal(out_desc.dtype, out_desc.shape, options.seed));
    dout = &generated;
  }
  LS_RETURN_IF_ERROR(CheckFinite(*dout, "dout"));

  // Backward validates dout's dtype and shape against the output.
  LS_ASSIGN_OR_RETURN(BackwardResult analytic,
                      Backward(spec, impl, inputs, *dout));

  // A private copy of the inputs to perturb.
  TensorMap work;
  for (const auto& [name, t] : inputs) work.emplace(name, t.Clone());

  GradCheckReport report;
  report.impl_name = analytic.impl_name;
  for (size_t k = 0; k < def->grad_inputs.size(); ++k) {
    const std::string name(def->grad_inputs[k]);
    Tensor& x = work.find(name)->second;
    auto f = [&](const Tensor&) -> absl::StatusOr<Tensor> {
      LS_ASSIGN_OR_RETURN(ForwardResult r, Forward(spec, impl, work));
      return std::move(r.outputs.find(def->output)->second);
    };
    LS_ASSIGN_OR_RETURN(Tensor numeric,
                        NumericalGradient(f, x, *dout, options.h));
    Tensor& grad = analytic.grads.find(def->grads[k])->second;

    GradCheckResult result;
    result.input = name;
    int64_t worst = 0;
    double worst_rel = -1;
    for (int64_t i = 0; i < numeric.size(); ++i) {
      const double a = numeric.GetFlat(i), b = grad.GetFlat(i);
      const double rel =
          std::abs(a - b) / std::max(1e-8, std::abs(a) + std::abs(b));
      if (rel > worst_rel || std::isnan(rel)) {
        worst_rel = rel;
        worst = i;
        if (std::isnan(rel)) break;
      }
      result.max_abs_error = std::max(result.max_abs_error, std::abs(a - b));
    }
    result.rel_error = worst_rel;
    result.worst_index = numeric.Unravel(worst);
    if (options.return_gradients) {
      result.numeric = std::move(numeric);
      result.analytic = std::move(grad);
    }
    report.results.push_back(std::move(result));
  }
  return report;
}

}  // namespace layerserve
