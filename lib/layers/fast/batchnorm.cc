// Fast batch normalization, hand-written. oneDNN 2.6's batch_normalization
// does not win for float32: on plain NCHW it runs its generic ncsp_bnorm,
// measured here (1 thread, train mode, forward / backward) at 14.1 / 23.9
// ms on (32,64,56,56) and 1.02 / 1.61 ms on (128,1024), against 5.7 / 12.6
// and 0.10 / 0.14 ms for this code (output allocation included); its
// blocked-layout kernels would need two reorders of the whole tensor, each
// as costly as a pass of ours.
//
// Both layouts are (outer, C, inner) views of x, like the naive code, but
// the loops differ because the contiguous dimension does:
//  - spatial_batchnorm (N, C, H*W): each (n, c) plane of H*W values is
//    contiguous. Work items are planes, on several threads; each plane gets
//    its own partial sums, and the planes of a channel are combined
//    afterwards in a fixed order (n = 0, 1, ...), so results do not depend
//    on the thread count.
//  - batchnorm (N, D): features are contiguous, so the loops run over
//    blocks of features, vectorized across them, each block on one thread,
//    summing over n in the naive order.
//
// Statistics are computed in double for both dtypes, without the
// cancellation of a plain one-pass sum of squares: the flat layout takes
// two passes for float64 (mean, then squared deviations) as the naive code
// does, and one shifted pass for float32 (see ColStatsBody); a spatial
// plane takes its two passes while it is in cache and the planes' means and
// squared deviations are merged with Chan's parallel formula
//   M2 = sum_p M2_p + sum_p n_p (mean_p - mean)^2,
// so x is read from memory once for the statistics and once for the output.
// Backward folds its sums the same way: sum dy (x - mean) per channel is
// sum_p [sum dy (x - mean_p)] + (mean_p - mean) sum_p dy.
//
// The elementwise passes fold the mean into per-channel constants, out =
// x a + b and dx = k1 dy - k3 x + k0, in double: one multiply-add per
// element instead of a subtraction, a multiply and an add. The rounding this
// adds is eps64 * |mean| / std relative to the output, far below float32's
// resolution and within float64's tolerance for such data
// (tests/fast/tolerances.h, kBatchnormCondition).
//
// Thread-safety: may be called concurrently (no shared state).
#include "lib/layers/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/layers/fast/isa.h"
#include "lib/threading.h"

namespace layerserve::fast {
namespace {

// Accumulators per sum over a plane: a constant (not the vector width), so
// the summation order is the same on every ISA. 16 doubles are two AVX-512
// registers: enough independent adds to hide their latency.
constexpr int kLanes = 16;

LS_ALWAYS_INLINE double LaneTotal(const double (&acc)[kLanes]) {
  double s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// The sums a plane needs, in one loop over it (each converted value is
// used for all of them), each in kLanes accumulators, around a shift k:
//   s1 = sum (x - k),  s2 = sum (x - k)^2 (kSquares),
//   a = sum dy,  b = sum dy (x - k) (kGrad).
struct Moments {
  double s1 = 0, s2 = 0, a = 0, b = 0;
};

template <typename T, bool kSquares, bool kGrad>
LS_ALWAYS_INLINE Moments PlaneMoments(const T* x, const T* dy, int64_t n,
                                      double k) {
  double s1[kLanes] = {}, s2[kLanes] = {}, a[kLanes] = {}, b[kLanes] = {};
  auto add = [&](int64_t i, int j) LS_ALWAYS_INLINE_LAMBDA {
    const double v = static_cast<double>(x[i]) - k;
    s1[j] += v;
    if constexpr (kSquares) s2[j] += v * v;
    if constexpr (kGrad) {
      const double g = static_cast<double>(dy[i]);
      a[j] += g;
      b[j] += g * v;
    }
  };
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) add(i + j, j);
  }
  for (; i < n; ++i) add(i, static_cast<int>(i % kLanes));
  return Moments{LaneTotal(s1), LaneTotal(s2), LaneTotal(a), LaneTotal(b)};
}

// ---- spatial: planes [p0, p1) of `inner` values; plane p is channel p % C.
//
// Per plane statistics: float32 takes one pass around a shift (the plane's
// first value; see ColStatsBody for why that is exact enough), float64 two
// (the plane's mean, then deviations from it), both while the plane is in
// cache.

// Per plane: its sum and its squared deviations from its own mean.
template <typename T>
LS_ALWAYS_INLINE void PlaneStatsBody(const T* x, int64_t inner, int64_t p0,
                                     int64_t p1, double* sum, double* m2) {
  const double n = static_cast<double>(inner);
  for (int64_t p = p0; p < p1; ++p) {
    const T* xp = x + p * inner;
    if constexpr (std::is_same_v<T, float>) {
      const double k = xp[0];
      const Moments m = PlaneMoments<T, true, false>(xp, nullptr, inner, k);
      sum[p] = n * k + m.s1;
      m2[p] = std::max(0.0, m.s2 - m.s1 * m.s1 / n);
    } else {
      sum[p] = PlaneMoments<T, false, false>(xp, nullptr, inner, 0).s1;
      m2[p] = PlaneMoments<T, true, false>(xp, nullptr, inner, sum[p] / n).s2;
    }
  }
}
LS_ISA_VARIANTS(PlaneStats, PlaneStatsBody)

// Per plane: sum dy, and sum dy (x - center) where center is the plane's own
// mean (center == nullptr; then sum x and the squared deviations are filled
// in too) or the channel's center[c].
template <typename T>
LS_ALWAYS_INLINE void PlaneGradSumsBody(const T* x, const T* dy, int64_t inner,
                                        int64_t channels, int64_t p0,
                                        int64_t p1, const double* center,
                                        double* sum, double* m2, double* sum_dy,
                                        double* sum_dyx) {
  const double n = static_cast<double>(inner);
  for (int64_t p = p0; p < p1; ++p) {
    const T* xp = x + p * inner;
    const T* dyp = dy + p * inner;
    if (center != nullptr) {
      const Moments m =
          PlaneMoments<T, false, true>(xp, dyp, inner, center[p % channels]);
      sum_dy[p] = m.a;
      sum_dyx[p] = m.b;
      continue;
    }
    if constexpr (std::is_same_v<T, float>) {
      const double k = xp[0];
      const Moments m = PlaneMoments<T, true, true>(xp, dyp, inner, k);
      sum[p] = n * k + m.s1;
      m2[p] = std::max(0.0, m.s2 - m.s1 * m.s1 / n);
      sum_dy[p] = m.a;
      // sum dy (x - mean_p) = sum dy (x - k) - (mean_p - k) sum dy.
      sum_dyx[p] = m.b - (m.s1 / n) * m.a;
    } else {
      const Moments first = PlaneMoments<T, false, true>(xp, dyp, inner, 0);
      sum[p] = first.s1;
      sum_dy[p] = first.a;
      const Moments m =
          PlaneMoments<T, true, true>(xp, dyp, inner, first.s1 / n);
      m2[p] = m.s2;
      sum_dyx[p] = m.b;
    }
  }
}
LS_ISA_VARIANTS(PlaneGradSums, PlaneGradSumsBody)

// out = x a[c] + b[c].
template <typename T>
LS_ALWAYS_INLINE void PlaneNormalizeBody(const T* x, T* out, int64_t inner,
                                         int64_t channels, int64_t p0,
                                         int64_t p1, const double* a,
                                         const double* b) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t c = p % channels;
    const double ac = a[c], bc = b[c];
    const T* xp = x + p * inner;
    T* op = out + p * inner;
    for (int64_t i = 0; i < inner; ++i) {
      op[i] = static_cast<T>(static_cast<double>(xp[i]) * ac + bc);
    }
  }
}
LS_ISA_VARIANTS(PlaneNormalize, PlaneNormalizeBody)

// dx = k1[c] dy - k3[c] x + k0[c]; with_x false (test mode): dx = k1 dy.
template <typename T>
LS_ALWAYS_INLINE void PlaneDxBody(const T* x, const T* dy, T* dx, int64_t inner,
                                  int64_t channels, int64_t p0, int64_t p1,
                                  const double* k1, const double* k3,
                                  const double* k0, bool with_x) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t c = p % channels;
    const double a = k1[c], g = k3[c], b = k0[c];
    const T* xp = x + p * inner;
    const T* dyp = dy + p * inner;
    T* dxp = dx + p * inner;
    if (with_x) {
      for (int64_t i = 0; i < inner; ++i) {
        dxp[i] = static_cast<T>(a * static_cast<double>(dyp[i]) -
                                g * static_cast<double>(xp[i]) + b);
      }
    } else {
      for (int64_t i = 0; i < inner; ++i) {
        dxp[i] = static_cast<T>(a * static_cast<double>(dyp[i]));
      }
    }
  }
}
LS_ISA_VARIANTS(PlaneDx, PlaneDxBody)

// ---- flat: rows of `cols` features; kernels cover features [d0, d1).

// Features per unit of flat work (threads get whole units).
constexpr int64_t kColBlock = 32;

// mean[d] and var[d] (biased) for d in [d0, d1). The loops stream whole
// rows with the per-feature sums in arrays that stay in L1 (walking a strip
// of features down the rows instead strides by the row length, often a
// multiple of 4 KiB, which maps every row to the same L1 set).
//  - float32: one pass of sums in double around a shift (row 0): the
//    differences of float32 values and their squares are exact in double,
//    so var = E[(x-k)^2] - E[x-k]^2 only loses digits to (k - mean)^2 / var
//    times eps64, far below float32's resolution for any row 0.
//  - float64: two passes (mean, then squared deviations), as naive does.
// Runs body(row pointer offset, d) over rows [0, rows) four rows at a
// time: the per-feature sums are loaded and stored once per four rows
// (those loads and stores, not the arithmetic, bound these loops).
template <typename Body4, typename Body1>
LS_ALWAYS_INLINE void ForRows(int64_t first, int64_t rows, Body4&& body4,
                              Body1&& body1) {
  int64_t n = first;
  for (; n + 4 <= rows; n += 4) body4(n);
  for (; n < rows; ++n) body1(n);
}

template <typename T>
LS_ALWAYS_INLINE void ColStatsBody(const T* x, int64_t rows, int64_t cols,
                                   int64_t d0, int64_t d1, double* mean,
                                   double* var) {
  const double inv_rows = 1.0 / static_cast<double>(rows);
  for (int64_t d = d0; d < d1; ++d) mean[d] = var[d] = 0;
  auto at = [&](int64_t n, int64_t d) LS_ALWAYS_INLINE_LAMBDA {
    return static_cast<double>(x[n * cols + d]);
  };
  if constexpr (std::is_same_v<T, float>) {
    ForRows(
        1, rows,
        [&](int64_t n) LS_ALWAYS_INLINE_LAMBDA {
          for (int64_t d = d0; d < d1; ++d) {
            const double k = at(0, d);
            const double v0 = at(n, d) - k, v1 = at(n + 1, d) - k;
            const double v2 = at(n + 2, d) - k, v3 = at(n + 3, d) - k;
            mean[d] += (v0 + v1) + (v2 + v3);
            var[d] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3);
          }
        },
        [&](int64_t n) LS_ALWAYS_INLINE_LAMBDA {
          for (int64_t d = d0; d < d1; ++d) {
            const double v = at(n, d) - at(0, d);
            mean[d] += v;
            var[d] += v * v;
          }
        });
    for (int64_t d = d0; d < d1; ++d) {
      const double m = mean[d] * inv_rows;
      mean[d] = at(0, d) + m;
      var[d] = std::max(0.0, var[d] * inv_rows - m * m);
    }
  } else {
    ForRows(
        0, rows,
        [&](int64_t n) LS_ALWAYS_INLINE_LAMBDA {
          for (int64_t d = d0; d < d1; ++d) {
            mean[d] +=
                (at(n, d) + at(n + 1, d)) + (at(n + 2, d) + at(n + 3, d));
          }
        },
        [&](int64_t n) LS_ALWAYS_INLINE_LAMBDA {
          for (int64_t d = d0; d < d1; ++d) mean[d] += at(n, d);
        });
    for (int64_t d = d0; d < d1; ++d) mean[d] *= inv_rows;
    ForRows(
        0, rows,
        [&](int64_t n) LS_ALWAYS_INLINE_LAMBDA {
          for (int64_t d = d0; d < d1; ++d) {
            const double m = mean[d];
            const double v0 = at(n, d) - m, v1 = at(n + 1, d) - m;
            const double v2 = at(n + 2, d) - m, v3 = at(n + 3, d) - m;
            var[d] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3);
          }
        },
        [&](int64_t n) LS_ALWAYS_INLINE_LAMBDA {
          for (int64_t d = d0; d < d1; ++d) {
            const double v = at(n, d) - mean[d];
            var[d] += v * v;
          }
        });
    for (int64_t d = d0; d < d1; ++d) var[d] *= inv_rows;
  }
}
LS_ISA_VARIANTS(ColStats, ColStatsBody)

// sum_dy[d] = sum dy, sum_dyx[d] = sum dy (x - center[d]), streaming rows.
template <typename T>
LS_ALWAYS_INLINE void ColGradSumsBody(const T* x, const T* dy, int64_t rows,
                                      int64_t cols, int64_t d0, int64_t d1,
                                      const double* center, double* sum_dy,
                                      double* sum_dyx) {
  for (int64_t d = d0; d < d1; ++d) sum_dy[d] = sum_dyx[d] = 0;
  auto xs = [&](int64_t n, int64_t d) LS_ALWAYS_INLINE_LAMBDA {
    return static_cast<double>(x[n * cols + d]);
  };
  auto gs = [&](int64_t n, int64_t d) LS_ALWAYS_INLINE_LAMBDA {
    return static_cast<double>(dy[n * cols + d]);
  };
  ForRows(
      0, rows,
      [&](int64_t n) LS_ALWAYS_INLINE_LAMBDA {
        for (int64_t d = d0; d < d1; ++d) {
          const double c = center[d];
          const double g0 = gs(n, d), g1 = gs(n + 1, d);
          const double g2 = gs(n + 2, d), g3 = gs(n + 3, d);
          sum_dy[d] += (g0 + g1) + (g2 + g3);
          sum_dyx[d] += (g0 * (xs(n, d) - c) + g1 * (xs(n + 1, d) - c)) +
                        (g2 * (xs(n + 2, d) - c) + g3 * (xs(n + 3, d) - c));
        }
      },
      [&](int64_t n) LS_ALWAYS_INLINE_LAMBDA {
        for (int64_t d = d0; d < d1; ++d) {
          const double g = gs(n, d);
          sum_dy[d] += g;
          sum_dyx[d] += g * (xs(n, d) - center[d]);
        }
      });
}
LS_ISA_VARIANTS(ColGradSums, ColGradSumsBody)

template <typename T>
LS_ALWAYS_INLINE void ColNormalizeBody(const T* x, T* out, int64_t rows,
                                       int64_t cols, int64_t d0, int64_t d1,
                                       const double* a, const double* b) {
  for (int64_t n = 0; n < rows; ++n) {
    const T* xr = x + n * cols;
    T* outr = out + n * cols;
    for (int64_t d = d0; d < d1; ++d) {
      outr[d] = static_cast<T>(static_cast<double>(xr[d]) * a[d] + b[d]);
    }
  }
}
LS_ISA_VARIANTS(ColNormalize, ColNormalizeBody)

template <typename T>
LS_ALWAYS_INLINE void ColDxBody(const T* x, const T* dy, T* dx, int64_t rows,
                                int64_t cols, int64_t d0, int64_t d1,
                                const double* k1, const double* k3,
                                const double* k0, bool with_x) {
  for (int64_t n = 0; n < rows; ++n) {
    const T* xr = x + n * cols;
    const T* dyr = dy + n * cols;
    T* dxr = dx + n * cols;
    if (with_x) {
      for (int64_t d = d0; d < d1; ++d) {
        dxr[d] = static_cast<T>(k1[d] * static_cast<double>(dyr[d]) -
                                k3[d] * static_cast<double>(xr[d]) + k0[d]);
      }
    } else {
      for (int64_t d = d0; d < d1; ++d) {
        dxr[d] = static_cast<T>(k1[d] * static_cast<double>(dyr[d]));
      }
    }
  }
}
LS_ISA_VARIANTS(ColDx, ColDxBody)

// ---- drivers ----------------------------------------------------------------

struct Dims {
  int64_t outer, channels, inner;
  bool spatial;
  int64_t count() const { return outer * inner; }  // values per channel
  int64_t planes() const { return outer * channels; }
};

Dims DimsOf(const Tensor& x, bool spatial) {
  if (spatial) return {x.dim(0), x.dim(1), x.dim(2) * x.dim(3), true};
  return {x.dim(0), x.dim(1), 1, false};
}

// Runs fn(begin, end) over the spatial planes or the flat features, with at
// least kElementwiseGrain values per thread; flat chunks are whole register
// blocks of features (but the last).
template <typename Fn>
void ForWork(const Dims& d, Fn&& fn) {
  if (d.spatial) {
    ParallelFor(d.planes(), std::max<int64_t>(1, kElementwiseGrain / d.inner),
                fn);
    return;
  }
  const int64_t blocks = (d.channels + kColBlock - 1) / kColBlock;
  const int64_t grain =
      std::max<int64_t>(1, kElementwiseGrain / (d.outer * kColBlock));
  ParallelFor(blocks, grain, [&](int64_t b0, int64_t b1) {
    fn(b0 * kColBlock, std::min(d.channels, b1 * kColBlock));
  });
}

// A per-channel tensor as doubles (typed access: GetFlat's dtype switch per
// value is measurable next to a 0.05 ms kernel).
template <typename T>
std::vector<double> PerChannel(const Tensor& t) {
  const T* p = t.data<T>();
  return std::vector<double>(p, p + t.size());
}

// The normalizing statistics per channel: the batch's (train mode) or the
// running ones (test mode).
struct Stats {
  std::vector<double> mean, var;
};

template <typename T>
Stats RunningStats(const BatchnormTensors& in) {
  return Stats{PerChannel<T>(*in.running_mean), PerChannel<T>(*in.running_var)};
}

// Spatial train-mode statistics: per-plane partials merged per channel in
// plane order (Chan et al.).
template <typename T>
Stats SpatialBatchStats(const T* x, const Dims& d, Isa isa) {
  Stats s{std::vector<double>(d.channels), std::vector<double>(d.channels)};
  std::vector<double> sum(d.planes()), m2(d.planes());
  ForWork(d, [&](int64_t p0, int64_t p1) {
    PlaneStats(isa, x, d.inner, p0, p1, sum.data(), m2.data());
  });
  const double count = static_cast<double>(d.count());
  for (int64_t c = 0; c < d.channels; ++c) {
    double total = 0;
    for (int64_t n = 0; n < d.outer; ++n) total += sum[n * d.channels + c];
    const double mean = total / count;
    double m2c = 0;
    for (int64_t n = 0; n < d.outer; ++n) {
      const int64_t p = n * d.channels + c;
      const double delta = sum[p] / d.inner - mean;
      m2c += m2[p] + d.inner * delta * delta;
    }
    s.mean[c] = mean;
    s.var[c] = m2c / count;
  }
  return s;
}

template <typename T>
void Forward(const BatchnormTensors& in, const BatchnormParam& p, const Dims& d,
             Isa isa, Tensor* out, Tensor* new_mean, Tensor* new_var) {
  const T* x = in.x->data<T>();
  T* o = out->data<T>();
  const bool train = p.mode == BatchnormParam::Mode::kTrain;
  const T* gamma = in.gamma->data<T>();
  const T* beta = in.beta->data<T>();
  // out = gamma (x - mean) / sqrt(var + eps) + beta = x a + b.
  std::vector<double> a(d.channels), b(d.channels);
  auto fold = [&](const Stats& s, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      a[c] = static_cast<double>(gamma[c]) / std::sqrt(s.var[c] + p.eps);
      b[c] = static_cast<double>(beta[c]) - s.mean[c] * a[c];
    }
  };
  Stats s;
  if (d.spatial) {
    s = train ? SpatialBatchStats(x, d, isa) : RunningStats<T>(in);
    fold(s, 0, d.channels);
    ForWork(d, [&](int64_t p0, int64_t p1) {
      PlaneNormalize(isa, x, o, d.inner, d.channels, p0, p1, a.data(),
                     b.data());
    });
  } else {
    // Statistics and output of a chunk of features back to back, while its
    // rows are in this core's cache.
    s = train ? Stats{std::vector<double>(d.channels),
                      std::vector<double>(d.channels)}
              : RunningStats<T>(in);
    ForWork(d, [&](int64_t d0, int64_t d1) {
      if (train) {
        ColStats(isa, x, d.outer, d.channels, d0, d1, s.mean.data(),
                 s.var.data());
      }
      fold(s, d0, d1);
      ColNormalize(isa, x, o, d.outer, d.channels, d0, d1, a.data(), b.data());
    });
  }
  // The running statistics, by the naive formula.
  const T* old_mean = in.running_mean->data<T>();
  const T* old_var = in.running_var->data<T>();
  T* nm = new_mean->data<T>();
  T* nv = new_var->data<T>();
  for (int64_t c = 0; c < d.channels; ++c) {
    double rm = old_mean[c], rv = old_var[c];
    if (train) {
      rm = p.momentum * rm + (1 - p.momentum) * s.mean[c];
      rv = p.momentum * rv + (1 - p.momentum) * s.var[c];
    }
    nm[c] = static_cast<T>(rm);
    nv[c] = static_cast<T>(rv);
  }
}

// Backward's per-channel quantities. dx is
//   inv_std / m (m dxhat - g sum dy - xhat g sum dy xhat),  dxhat = g dy,
// computed as k1 dy - k3 x + k0 (k0 = k3 mean - k1 sum dy / m folds the
// mean in); test mode: dx = g inv_std dy.
struct Gradients {
  std::vector<double> sum_dy, sum_dyx;  // sum dy, sum dy (x - mean)
  std::vector<double> k1, k3, k0;
  std::vector<double> dgamma;

  explicit Gradients(int64_t channels)
      : sum_dy(channels),
        sum_dyx(channels),
        k1(channels),
        k3(channels),
        k0(channels),
        dgamma(channels) {}

  // From sum_dy and sum_dyx of channels [c0, c1).
  template <typename T>
  void Coefficients(const Stats& s, const T* gamma, const BatchnormParam& p,
                    double m, int64_t c0, int64_t c1) {
    const bool train = p.mode == BatchnormParam::Mode::kTrain;
    for (int64_t c = c0; c < c1; ++c) {
      const double inv_std = 1.0 / std::sqrt(s.var[c] + p.eps);
      dgamma[c] = sum_dyx[c] * inv_std;  // sum dy xhat
      k1[c] = static_cast<double>(gamma[c]) * inv_std;
      k3[c] = train ? k1[c] * inv_std * dgamma[c] / m : 0;
      k0[c] = train ? k3[c] * s.mean[c] - k1[c] * sum_dy[c] / m : 0;
    }
  }
};

template <typename T>
void Backward(const BatchnormTensors& in, const BatchnormParam& p,
              const Dims& d, Isa isa, const Tensor& doutt, Tensor* dxt,
              Tensor* dgamma, Tensor* dbeta) {
  const T* x = in.x->data<T>();
  const T* dy = doutt.data<T>();
  T* dx = dxt->data<T>();
  const T* gamma = in.gamma->data<T>();
  const bool train = p.mode == BatchnormParam::Mode::kTrain;
  const double m = static_cast<double>(d.count());
  Gradients g(d.channels);
  Stats s;
  if (!d.spatial) {
    s = train ? Stats{std::vector<double>(d.channels),
                      std::vector<double>(d.channels)}
              : RunningStats<T>(in);
    ForWork(d, [&](int64_t d0, int64_t d1) {
      if (train) {
        ColStats(isa, x, d.outer, d.channels, d0, d1, s.mean.data(),
                 s.var.data());
      }
      ColGradSums(isa, x, dy, d.outer, d.channels, d0, d1, s.mean.data(),
                  g.sum_dy.data(), g.sum_dyx.data());
      g.Coefficients(s, gamma, p, m, d0, d1);
      ColDx(isa, x, dy, dx, d.outer, d.channels, d0, d1, g.k1.data(),
            g.k3.data(), g.k0.data(), train);
    });
  } else {
    // One pass over x and dout for the statistics and both sums: per plane,
    // centered at the plane's own mean (train) or the running mean (test),
    // merged per channel in plane order.
    const int64_t planes = d.planes();
    std::vector<double> sum(train ? planes : 0), m2(train ? planes : 0);
    std::vector<double> dy_p(planes), dyx_p(planes);
    s = RunningStats<T>(in);
    ForWork(d, [&](int64_t p0, int64_t p1) {
      PlaneGradSums(isa, x, dy, d.inner, d.channels, p0, p1,
                    train ? nullptr : s.mean.data(), sum.data(), m2.data(),
                    dy_p.data(), dyx_p.data());
    });
    for (int64_t c = 0; c < d.channels; ++c) {
      double total_dy = 0, total = 0;
      for (int64_t n = 0; n < d.outer; ++n) {
        total_dy += dy_p[n * d.channels + c];
      }
      g.sum_dy[c] = total_dy;
      if (!train) {
        for (int64_t n = 0; n < d.outer; ++n)
          total += dyx_p[n * d.channels + c];
        g.sum_dyx[c] = total;
        continue;
      }
      for (int64_t n = 0; n < d.outer; ++n) total += sum[n * d.channels + c];
      const double mean = total / m;
      double m2c = 0, dyx = 0;
      for (int64_t n = 0; n < d.outer; ++n) {
        const int64_t q = n * d.channels + c;
        const double delta = sum[q] / d.inner - mean;
        m2c += m2[q] + d.inner * delta * delta;
        dyx += dyx_p[q] + delta * dy_p[q];
      }
      s.mean[c] = mean;
      s.var[c] = m2c / m;
      g.sum_dyx[c] = dyx;
    }
    g.Coefficients(s, gamma, p, m, 0, d.channels);
    ForWork(d, [&](int64_t p0, int64_t p1) {
      PlaneDx(isa, x, dy, dx, d.inner, d.channels, p0, p1, g.k1.data(),
              g.k3.data(), g.k0.data(), train);
    });
  }
  T* dg = dgamma->data<T>();
  T* db = dbeta->data<T>();
  for (int64_t c = 0; c < d.channels; ++c) {
    dg[c] = static_cast<T>(g.dgamma[c]);
    db[c] = static_cast<T>(g.sum_dy[c]);
  }
}

std::string Name(Isa isa) { return absl::StrCat("bn:", IsaName(isa)); }

}  // namespace

absl::StatusOr<std::string> BatchnormForward(const BatchnormTensors& in,
                                             const BatchnormParam& p,
                                             bool spatial, Tensor* out,
                                             Tensor* new_mean,
                                             Tensor* new_var) {
  const Dims d = DimsOf(*in.x, spatial);
  const Isa isa = BestIsa();
  if (in.x->dtype() == DType::kFloat32) {
    Forward<float>(in, p, d, isa, out, new_mean, new_var);
  } else {
    Forward<double>(in, p, d, isa, out, new_mean, new_var);
  }
  return Name(isa);
}

absl::StatusOr<std::string> BatchnormBackward(const BatchnormTensors& in,
                                              const BatchnormParam& p,
                                              bool spatial, const Tensor& dout,
                                              Tensor* dx, Tensor* dgamma,
                                              Tensor* dbeta) {
  const Dims d = DimsOf(*in.x, spatial);
  const Isa isa = BestIsa();
  if (in.x->dtype() == DType::kFloat32) {
    Backward<float>(in, p, d, isa, dout, dx, dgamma, dbeta);
  } else {
    Backward<double>(in, p, d, isa, dout, dx, dgamma, dbeta);
  }
  return Name(isa);
}

}  // namespace layerserve::fast
