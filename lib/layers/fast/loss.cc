// Fast softmax and hinge losses: rows on several threads, vectorized within
// a row. A row's loss is computed on its own, and the batch loss adds the
// row losses in row order after the parallel part, which is the naive
// order: the loss does not depend on the thread count.
//
// The softmax needs exp() on every score. glibc's exp is scalar, so the rows
// use the polynomial below (vectorizable: no calls, no branches); float32
// rows are computed in float32 as PyTorch does, float64 rows in float64:
//   exp(x) = 2^k exp(r),  k = round(x / ln 2),  r = x - k ln 2 in
//   [-ln2/2, ln2/2], with ln 2 split in two (Cody-Waite) so k ln 2 is exact;
//   exp(r) by its Taylor polynomial (degree 7 for float, 13 for double:
//   truncation below 1e-9 resp. 5e-18 relative), 2^k built in the exponent
//   bits. Arguments are clamped to the normal range and results below it
//   flush to 0 (an absolute error under 1e-37 resp. 1e-307).
//
// The hinge loss's decisions (margin > 0) use the naive arithmetic exactly
// (double(x_c) - double(x_y) + 1, no multiply-add), so its dx is bitwise
// the naive one; only the loss sums in another order.
//
// Thread-safety: may be called concurrently (no shared state).
#include "lib/layers/loss.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/layers/fast/isa.h"
#include "lib/threading.h"

namespace layerserve::fast {
namespace {

LS_ALWAYS_INLINE float Exp(float x) {
  // std::max/min return their first argument for NaN, so NaN stays NaN.
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  // x / ln2 + 1.5 * 2^23 rounds x / ln2 to an integer k, held in the low
  // mantissa bits of y.
  const float y = xc * 1.44269504088896341f + 12582912.0f;
  const float k = y - 12582912.0f;
  const float r = (xc - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // (k + 127) << 23: the exponent field of 2^k (k in [-126, 127]); the
  // shift drops y's own exponent and the 2^22 of the rounding constant.
  const uint32_t bits = (__builtin_bit_cast(uint32_t, y) + 127u) << 23;
  const float res = p * __builtin_bit_cast(float, bits);
  return x < -87.0f ? 0.0f : res;
}

LS_ALWAYS_INLINE double Exp(double x) {
  const double xc = std::min(std::max(x, -708.0), 709.0);
  const double y = xc * 1.4426950408889634 + 6755399441055744.0;  // 1.5*2^52
  const double k = y - 6755399441055744.0;
  // fdlibm's ln2_hi (trailing zeros: k * ln2_hi is exact) and ln2_lo.
  const double r =
      (xc - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const uint64_t bits = (__builtin_bit_cast(uint64_t, y) + 1023u) << 52;
  const double res = p * __builtin_bit_cast(double, bits);
  return x < -708.0 ? 0.0 : res;
}

// Independent accumulators for a row's sums; a constant, so the order of
// the sums is the same on every ISA.
constexpr int kLanes = 16;

template <typename T>
LS_ALWAYS_INLINE T RowMax(const T* row, int64_t n) {
  T acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = row[0];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      acc[j] = row[i + j] > acc[j] ? row[i + j] : acc[j];
    }
  }
  for (; i < n; ++i) acc[0] = row[i] > acc[0] ? row[i] : acc[0];
  T m = acc[0];
  for (int j = 1; j < kLanes; ++j) m = acc[j] > m ? acc[j] : m;
  return m;
}

// e[c] = exp(row[c] - mx): a plain elementwise loop, which GCC's loop
// vectorizer handles (the lane-blocked form below defeats it for a body
// this long).
template <typename T>
LS_ALWAYS_INLINE void ExpShifted(const T* row, int64_t n, T mx, T* e) {
  for (int64_t i = 0; i < n; ++i) e[i] = Exp(static_cast<T>(row[i] - mx));
}

// sum e[i] in double.
template <typename T>
LS_ALWAYS_INLINE double Sum(const T* e, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(e[i + j]);
  }
  for (; i < n; ++i) acc[0] += static_cast<double>(e[i]);
  double s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// Rows [r0, r1): row_loss[n], and dx rows (dloss / N)(softmax - onehot)
// when dx is not null; `scratch` holds C values (the exponentials of a row
// when there is no dx row to keep them in).
template <typename T>
LS_ALWAYS_INLINE void SoftmaxRowsBody(const T* x, const int64_t* y, int64_t C,
                                      int64_t r0, int64_t r1, double dscale,
                                      T* dx, T* scratch, double* row_loss) {
  for (int64_t n = r0; n < r1; ++n) {
    const T* row = x + n * C;
    const int64_t label = y[n];
    const T mx = RowMax(row, C);
    T* e = dx == nullptr ? scratch : dx + n * C;
    ExpShifted(row, C, mx, e);
    const double z = Sum(e, C);
    row_loss[n] = std::log(z) + mx - static_cast<double>(row[label]);
    if (dx == nullptr) continue;
    const double e_label = static_cast<double>(e[label]);
    const T s = static_cast<T>(dscale / z);
    for (int64_t c = 0; c < C; ++c) e[c] *= s;
    e[label] = static_cast<T>(e_label * (dscale / z) - dscale);
  }
}
LS_ISA_VARIANTS(SoftmaxRows, SoftmaxRowsBody)

// Multiclass hinge, margin 1, the correct class excluded. Three plain
// loops per row, each one the vectorizer handles: the hinges h_c = max(0,
// margin_c) into `scratch` (C doubles), their sum, and dx. The label's own
// margin is x_y - x_y + 1 = 1 exactly, so it is included and taken out
// again rather than tested for in every iteration.
template <typename T>
LS_ALWAYS_INLINE void SvmRowsBody(const T* x, const int64_t* y, int64_t C,
                                  int64_t r0, int64_t r1, double dloss,
                                  int64_t batch, T* dx, double* scratch,
                                  double* row_loss) {
  const T active_grad = static_cast<T>(dloss / batch);
  double* h = scratch;
  for (int64_t n = r0; n < r1; ++n) {
    const T* row = x + n * C;
    const int64_t label = y[n];
    const double xl = static_cast<double>(row[label]);
    int64_t positive = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double margin = static_cast<double>(row[c]) - xl + 1.0;
      h[c] = margin > 0 ? margin : 0.0;
      positive += margin > 0;
    }
    row_loss[n] = Sum(h, C) - 1.0;
    --positive;
    if (dx == nullptr) continue;
    T* drow = dx + n * C;
    for (int64_t c = 0; c < C; ++c) drow[c] = h[c] > 0 ? active_grad : T(0);
    drow[label] = static_cast<T>(-dloss * positive / batch);
  }
}
LS_ISA_VARIANTS(SvmRows, SvmRowsBody)

template <typename T>
void Run(LossKind kind, const Tensor& xt, const int64_t* y, double dloss,
         double* loss, Tensor* dxt, Isa isa) {
  const int64_t N = xt.dim(0), C = xt.dim(1);
  const T* x = xt.data<T>();
  T* dx = dxt == nullptr ? nullptr : dxt->data<T>();
  std::vector<double> row_loss(static_cast<size_t>(N));
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / C);
  ParallelFor(N, grain, [&](int64_t r0, int64_t r1) {
    if (kind == LossKind::kSoftmax) {
      std::vector<T> scratch(dx == nullptr ? static_cast<size_t>(C) : 0);
      SoftmaxRows(isa, x, y, C, r0, r1, dloss / N, dx, scratch.data(),
                  row_loss.data());
    } else {
      std::vector<double> scratch(static_cast<size_t>(C));
      SvmRows(isa, x, y, C, r0, r1, dloss, N, dx, scratch.data(),
              row_loss.data());
    }
  });
  double total = 0;
  for (double v : row_loss) total += v;
  *loss = total / N;
}

}  // namespace

absl::StatusOr<std::string> Loss(LossKind kind, const Tensor& x,
                                 const int64_t* y, double dloss, double* loss,
                                 Tensor* dx) {
  const Isa isa = BestIsa();
  if (x.dtype() == DType::kFloat32) {
    Run<float>(kind, x, y, dloss, loss, dx, isa);
  } else {
    Run<double>(kind, x, y, dloss, loss, dx, isa);
  }
  return absl::StrCat(kind == LossKind::kSoftmax ? "softmax:" : "svm:",
                      IsaName(isa));
}

}  // namespace layerserve::fast
