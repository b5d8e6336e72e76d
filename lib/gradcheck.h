// Numerical gradient checking, the seed's eval_numerical_gradient_array:
// for every element i of an input, with every other input held fixed,
//   numeric[i] = sum((f(x + h e_i) - f(x - h e_i)) * dout) / (2 h),
// compared with the layer's analytic gradient (Backward) by the seed's
// rel_error.
//
// A full check costs two forward passes per input element. Sampled mode
// (cs231n's grad_check_sparse) checks K random elements of each input
// instead, which is what makes checking a large layer affordable.
//
// Thread-safety: safe to call concurrently (it only reads its arguments).
#ifndef LAYERSERVE_LIB_GRADCHECK_H_
#define LAYERSERVE_LIB_GRADCHECK_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

inline constexpr double kDefaultGradCheckStep = 1e-5;

struct GradCheckOptions {
  double h = kDefaultGradCheckStep;  // must be finite and > 0
  // Upstream gradient. Empty: standard normal of the output's shape, drawn
  // from `seed`.
  const Tensor* dout = nullptr;
  uint64_t seed = 0;
  bool return_gradients = false;  // fill numeric/analytic in the results
  // Sampled mode: check this many distinct elements of each input, drawn
  // from `seed` (an input with no more elements is checked whole). 0 checks
  // every element; negative is INVALID_ARGUMENT.
  int64_t num_checks = 0;
};

struct GradCheckResult {
  std::string input;  // "x", "w", "b"
  // The seed's rel_error(numeric, analytic), max |numeric - analytic| and
  // the multi-index of the worst rel error, over the checked elements.
  double rel_error = 0;
  double max_abs_error = 0;
  std::vector<int64_t> worst_index;
  // Flat indices of the checked elements, ascending; empty when every
  // element was checked.
  std::vector<int64_t> checked_indices;
  // Only with return_gradients. Sampled mode: numeric is NaN at the
  // elements not checked.
  Tensor numeric;
  Tensor analytic;
};

struct GradCheckReport {
  std::vector<GradCheckResult> results;  // one per input, in input order
  std::string impl_name;  // implementation whose grads we checked
};

// Checks every input of `spec`'s layer. The same validation as Forward;
// additionally INVALID_ARGUMENT for NaN/Inf in inputs or dout (the check
// would be meaningless) and a bad h.
absl::StatusOr<GradCheckReport> GradCheck(const LayerSpec& spec, Impl impl,
                                          const TensorMap& inputs,
                                          const GradCheckOptions& options);

// The elements sampled mode checks in a tensor of `size` elements:
// min(num_checks, size) distinct flat indices in ascending order, a pure
// function of (size, num_checks, seed, stream). num_checks > 0.
std::vector<int64_t> SampleIndices(int64_t size, int64_t num_checks,
                                   uint64_t seed, uint64_t stream);

// The seed's eval_numerical_gradient_array for any function of one tensor:
// perturbs `x` in place (restoring it), returns the numeric gradient with
// x's shape and dtype.
absl::StatusOr<Tensor> NumericalGradient(
    const std::function<absl::StatusOr<Tensor>(const Tensor&)>& f, Tensor& x,
    const Tensor& dout, double h = kDefaultGradCheckStep);

// The same at the flat indices `indices` of x only: one value per index.
absl::StatusOr<std::vector<double>> NumericalGradientAt(
    const std::function<absl::StatusOr<Tensor>(const Tensor&)>& f, Tensor& x,
    const Tensor& dout, const std::vector<int64_t>& indices,
    double h = kDefaultGradCheckStep);

// INVALID_ARGUMENT naming `what` and the first non-finite element.
absl::Status CheckFinite(const Tensor& t, absl::string_view what);

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_GRADCHECK_H_
