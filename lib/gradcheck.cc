#include "lib/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_set>

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

namespace {

// f's numeric derivative along element i of x, dotted with dout.
absl::StatusOr<double> NumericAt(
    const std::function<absl::StatusOr<Tensor>(const Tensor&)>& f, Tensor& x,
    const Tensor& dout, int64_t i, double h) {
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
  return sum / (plus - minus);
}

// SplitMix64: a small, portable generator, so that a seed selects the same
// elements on every platform (std:: distributions are not specified
// bit-for-bit).
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<int64_t> SampleIndices(int64_t size, int64_t num_checks,
                                   uint64_t seed, uint64_t stream) {
  std::vector<int64_t> indices;
  if (num_checks >= size) {
    indices.resize(static_cast<size_t>(size));
    for (int64_t i = 0; i < size; ++i) indices[static_cast<size_t>(i)] = i;
    return indices;
  }
  uint64_t state = seed;
  state = SplitMix64(state) ^ (stream * 0xd1b54a32d192ed03ULL);
  // Floyd's algorithm: num_checks distinct draws, num_checks steps.
  std::unordered_set<int64_t> chosen;
  chosen.reserve(static_cast<size_t>(num_checks));
  for (int64_t j = size - num_checks; j < size; ++j) {
    const int64_t t =
        static_cast<int64_t>(SplitMix64(state) % static_cast<uint64_t>(j + 1));
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  indices.assign(chosen.begin(), chosen.end());
  std::sort(indices.begin(), indices.end());
  return indices;
}

absl::StatusOr<std::vector<double>> NumericalGradientAt(
    const std::function<absl::StatusOr<Tensor>(const Tensor&)>& f, Tensor& x,
    const Tensor& dout, const std::vector<int64_t>& indices, double h) {
  std::vector<double> values;
  values.reserve(indices.size());
  for (int64_t i : indices) {
    LS_ASSIGN_OR_RETURN(double v, NumericAt(f, x, dout, i, h));
    values.push_back(v);
  }
  return values;
}

absl::StatusOr<Tensor> NumericalGradient(
    const std::function<absl::StatusOr<Tensor>(const Tensor&)>& f, Tensor& x,
    const Tensor& dout, double h) {
  LS_ASSIGN_OR_RETURN(Tensor grad, Tensor::Zeros(x.dtype(), x.shape()));
  for (int64_t i = 0; i < x.size(); ++i) {
    LS_ASSIGN_OR_RETURN(double v, NumericAt(f, x, dout, i, h));
    grad.SetFlat(i, v);
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
  if (options.num_checks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_checks: must be >= 0 (0 checks every element), got ",
                     options.num_checks));
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
    Tensor& grad = analytic.grads.find(def->grads[k])->second;
    GradCheckResult result;
    result.input = name;
    const bool sampled =
        options.num_checks > 0 && options.num_checks < x.size();
    if (sampled) {
      result.checked_indices =
          SampleIndices(x.size(), options.num_checks, options.seed, k);
    }
    // numeric: the full gradient, or NaN where sampled mode did not look.
    Tensor numeric;
    if (sampled) {
      LS_ASSIGN_OR_RETURN(
          std::vector<double> values,
          NumericalGradientAt(f, x, *dout, result.checked_indices, options.h));
      LS_ASSIGN_OR_RETURN(numeric, Tensor::Zeros(x.dtype(), x.shape()));
      for (int64_t i = 0; i < numeric.size(); ++i) {
        numeric.SetFlat(i, std::numeric_limits<double>::quiet_NaN());
      }
      for (size_t j = 0; j < values.size(); ++j) {
        numeric.SetFlat(result.checked_indices[j], values[j]);
      }
    } else {
      LS_ASSIGN_OR_RETURN(numeric, NumericalGradient(f, x, *dout, options.h));
    }

    int64_t worst = 0;
    double worst_rel = -1;
    const int64_t checked =
        sampled ? static_cast<int64_t>(result.checked_indices.size())
                : numeric.size();
    for (int64_t j = 0; j < checked; ++j) {
      const int64_t i =
          sampled ? result.checked_indices[static_cast<size_t>(j)] : j;
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
