// How close a fast result must be to the naive one: the one place the
// fast-vs-naive tests take their tolerances from.
//
// Metric (ScaledError): over a whole tensor,
//   max_i |got_i - want_i| / max_i max(|want_i|, |scale_i|)
// where `scale` is the same naive layer evaluated on the absolute values of
// all inputs (and of dout): for a conv, scale_i is exactly sum_k |term_k| of
// element i, the quantity floating-point summation error is proportional to
// (|fl(sum) - sum| <= K * eps * sum_k |term_k|). Dividing by the tensor's
// largest such sum measures the error in the units it naturally comes in.
// Per-element relative error (the seed's rel_error) would not do: a sum of
// terms of both signs can cancel to nearly zero and its relative error then
// explodes although both sides are right to the last bit of the terms; and
// dividing by max |want| alone fails the same way for small tensors (db of a
// single filter is one sum of thousands of +-1 terms that may cancel).
//
// Thread-safety: constants only.
#ifndef LAYERSERVE_TESTS_FAST_TOLERANCES_H_
#define LAYERSERVE_TESTS_FAST_TOLERANCES_H_

#include "lib/tensor.h"

namespace layerserve::testing {

// float32: oneDNN accumulates in float32 (eps 6e-8) in its own order, the
// naive code in float64 and rounds once. The longest sums in the sweep are
// backward-weights reductions over K = N * H' * W' <= 8 * 33 * 33 = 8712
// terms: the worst-case bound K * eps is 5e-4, rounding that behaves like a
// random walk gives sqrt(K) * eps ~ 6e-6, and the sweep observes <= 3.3e-7
// (7 seeds). 1e-4 leaves a wide margin for an unlucky summation order, while
// a layout or indexing bug, which misplaces whole sums, fails by orders of
// magnitude.
inline constexpr double kFloat32ScaledTolerance = 1e-4;

// float64: both sides accumulate in float64 (eps 1.1e-16), in different
// orders (GEMM blocking vs plain loops). The worst-case bound K * eps for
// K = 8712 is ~1e-12, and the sweep observes <= 6.1e-16 (7 seeds). The
// tolerance is the worst-case bound itself.
inline constexpr double kFloat64ScaledTolerance = 1e-12;

inline double ScaledTolerance(DType dtype) {
  return dtype == DType::kFloat32 ? kFloat32ScaledTolerance
                                  : kFloat64ScaledTolerance;
}

// Batchnorm (and the composites that contain it) is conditioned by the
// ratio of its inputs' magnitude to their spread: x - mean of x = 1000 +
// 0.01 * noise loses the leading digits in any algorithm (the mean alone is
// rounded to eps * 1000), and both sides round differently. The tolerance
// of such a case is raised to kBatchnormCondition * kappa, with
//   kappa = max over channels c, elements i of (|x_i| + |center_c|) /
//           min(spread_c, sqrt(var_c + eps)),
// x being the batchnorm's input, center_c the mean it subtracts, spread_c
// the RMS of x - center_c over the channel (the digits x - center loses)
// and sqrt(var_c + eps) the unit the output is measured in (the fast path
// folds the mean into a per-channel constant, x a + b, whose rounding is
// relative to |x| a). Our batchnorm computes in float64 for both dtypes, so
// this is float64 rounding (eps 1.1e-16) times a margin for sums of
// thousands of terms; observed: <= 2e-16 kappa. It only matters for
// float64 with kappa > 100 (e.g. 6e-11 for kappa = 6000); float32's 1e-4
// is larger until kappa reaches 1e10.
inline constexpr double kBatchnormCondition = 1e-14;

// Dropout, max pooling and relu only select and copy values: fast must equal
// naive exactly, in both dtypes (and for pooling, pick the same first maximum).

// A reference tensor with more than this fraction of exact zeros proves
// little (a fast path returning zeros would pass), so such a case is counted
// apart and not towards the sweep's minimum of meaningful cases.
inline constexpr double kMostlyZeroFraction = 0.9;

}  // namespace layerserve::testing

#endif  // LAYERSERVE_TESTS_FAST_TOLERANCES_H_
