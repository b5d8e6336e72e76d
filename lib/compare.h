// Naive vs fast on the same inputs, the seed's "naive vs fast" cells as one
// call: forward and backward timings of each implementation (the best of
// `repeats` runs), the speedups, and how far the fast results are from the
// naive ones (the seed's rel_error), per output and per gradient.
//
// Timings are wall-clock seconds of the registry's Forward/Backward (which
// include allocating the results), on the calling thread's share of cores
// (see lib/threading.h).
//
// Thread-safety: safe to call concurrently (it only reads its arguments).
#ifndef LAYERSERVE_LIB_COMPARE_H_
#define LAYERSERVE_LIB_COMPARE_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

// A bound on repeats: a compare is a measurement, not a way to keep the
// server busy.
inline constexpr int kMaxCompareRepeats = 100;

struct CompareOptions {
  // Upstream gradient for the backward passes. Null or empty: standard
  // normal of the output's shape, drawn from `seed`.
  const Tensor* dout = nullptr;
  uint64_t seed = 0;
  // Timed runs of each pass, 1..kMaxCompareRepeats; 0 means 1.
  int repeats = 1;
};

struct CompareReport {
  std::string naive_impl_name;  // e.g. "naive"
  std::string
      fast_impl_name;  // e.g. "im2col+openblas", or "naive (no fast path)"
  int repeats = 1;
  double naive_forward_seconds = 0;
  double fast_forward_seconds = 0;
  double forward_speedup = 0;  // naive / fast
  double naive_backward_seconds = 0;
  double fast_backward_seconds = 0;
  double backward_speedup = 0;
  double output_rel_error = 0;                    // rel_error(naive, fast)
  std::map<std::string, double> grad_rel_errors;  // keyed "dx", "dw", "db"
  // ScaledError(naive, fast): max|naive - fast| / max|naive|.
  double output_scaled_error = 0;
  std::map<std::string, double> grad_scaled_errors;
};

// The same validation as Forward, plus INVALID_ARGUMENT for NaN/Inf in the
// inputs or dout (the rel_errors would be meaningless), a dout whose shape
// or dtype differs from the output's, and repeats out of range.
absl::StatusOr<CompareReport> Compare(const LayerSpec& spec,
                                      const TensorMap& inputs,
                                      const CompareOptions& options);

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_COMPARE_H_
