#include "lib/compare.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "lib/cancel.h"
#include "lib/gradcheck.h"
#include "lib/registry.h"
#include "lib/status_macros.h"

namespace layerserve {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// naive / fast; infinite when the fast run was too quick for the clock.
double Speedup(double naive_seconds, double fast_seconds) {
  if (fast_seconds > 0) return naive_seconds / fast_seconds;
  return std::numeric_limits<double>::infinity();
}

struct Timed {
  ForwardResult forward;
  BackwardResult backward;
  double forward_seconds = std::numeric_limits<double>::infinity();
  double backward_seconds = std::numeric_limits<double>::infinity();
};

absl::StatusOr<Timed> RunTimed(const LayerSpec& spec, Impl impl,
                               const TensorMap& inputs, const Tensor& dout,
                               int repeats) {
  Timed t;
  for (int r = 0; r < repeats; ++r) {
    LS_RETURN_IF_ERROR(CheckCancelled());
    const Clock::time_point start = Clock::now();
    LS_ASSIGN_OR_RETURN(t.forward, Forward(spec, impl, inputs));
    t.forward_seconds = std::min(t.forward_seconds, SecondsSince(start));
  }
  for (int r = 0; r < repeats; ++r) {
    LS_RETURN_IF_ERROR(CheckCancelled());
    const Clock::time_point start = Clock::now();
    LS_ASSIGN_OR_RETURN(t.backward, Backward(spec, impl, inputs, dout));
    t.backward_seconds = std::min(t.backward_seconds, SecondsSince(start));
  }
  return t;
}

}  // namespace

absl::StatusOr<CompareReport> Compare(const LayerSpec& spec,
                                      const TensorMap& inputs,
                                      const CompareOptions& options) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(spec.name));
  LS_ASSIGN_OR_RETURN(TensorDesc out_desc, InferOutput(spec, DescsOf(inputs)));
  const int repeats = options.repeats == 0 ? 1 : options.repeats;
  if (repeats < 1 || repeats > kMaxCompareRepeats) {
    return absl::InvalidArgumentError(
        absl::StrCat("repeats: must be 0..", kMaxCompareRepeats,
                     " (0 means 1), got ", options.repeats));
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
  if (dout->dtype() != out_desc.dtype || dout->shape() != out_desc.shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        def->name, ": dout is ", DTypeName(dout->dtype()), " of shape ",
        ShapeString(dout->shape()), " but the output is ",
        DTypeName(out_desc.dtype), " of shape ", ShapeString(out_desc.shape)));
  }
  LS_RETURN_IF_ERROR(CheckFinite(*dout, "dout"));

  LS_ASSIGN_OR_RETURN(Timed naive,
                      RunTimed(spec, Impl::kNaive, inputs, *dout, repeats));
  LS_ASSIGN_OR_RETURN(Timed fast,
                      RunTimed(spec, Impl::kFast, inputs, *dout, repeats));

  CompareReport report;
  report.naive_impl_name = naive.forward.impl_name;
  report.fast_impl_name = fast.forward.impl_name;
  if (fast.backward.impl_name != fast.forward.impl_name) {
    absl::StrAppend(&report.fast_impl_name,
                    "; backward: ", fast.backward.impl_name);
  }
  report.repeats = repeats;
  report.naive_forward_seconds = naive.forward_seconds;
  report.fast_forward_seconds = fast.forward_seconds;
  report.forward_speedup = Speedup(naive.forward_seconds, fast.forward_seconds);
  report.naive_backward_seconds = naive.backward_seconds;
  report.fast_backward_seconds = fast.backward_seconds;
  report.backward_speedup =
      Speedup(naive.backward_seconds, fast.backward_seconds);
  const Tensor& naive_out = naive.forward.outputs.find(def->output)->second;
  const Tensor& fast_out = fast.forward.outputs.find(def->output)->second;
  LS_ASSIGN_OR_RETURN(report.output_rel_error, RelError(naive_out, fast_out));
  LS_ASSIGN_OR_RETURN(report.output_scaled_error,
                      ScaledError(naive_out, fast_out));
  for (absl::string_view g : def->grads) {
    const Tensor& ng = naive.backward.grads.find(g)->second;
    const Tensor& fg = fast.backward.grads.find(g)->second;
    LS_ASSIGN_OR_RETURN(double e, RelError(ng, fg));
    LS_ASSIGN_OR_RETURN(double s, ScaledError(ng, fg));
    report.grad_rel_errors.emplace(std::string(g), e);
    report.grad_scaled_errors.emplace(std::string(g), s);
  }
  return report;
}

}  // namespace layerserve
