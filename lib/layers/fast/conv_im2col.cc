#include "lib/layers/fast/conv_im2col.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lib/layers/fast/openblas_kernels.h"
#include "lib/status_macros.h"
#include "lib/threading.h"

namespace layerserve::fast::im2col {
namespace {

// Bytes of column matrix per band. L2 is 1-4 MiB per core on the machines we
// target; half of 2 MiB leaves room for the GEMM's packed panels of w.
constexpr int64_t kBandBytes = 1 << 20;

struct Geom {
  int64_t n, c, h, w;  // x
  int64_t f, kh, kw;   // weights
  int64_t s, p;        // stride, pad
  int64_t ho, wo;      // output
  int64_t k;           // c * kh * kw: GEMM inner dimension
  int64_t band_rows;   // output rows per band
  int64_t bands;       // ceil(ho / band_rows)
  bool pointwise;      // 1x1, stride 1, pad 0: x[n] is the column matrix

  Geom(const Tensor& x, const Tensor& wt, const ConvParam& cp, int64_t ho_,
       int64_t wo_)
      : n(x.dim(0)),
        c(x.dim(1)),
        h(x.dim(2)),
        w(x.dim(3)),
        f(wt.dim(0)),
        kh(wt.dim(2)),
        kw(wt.dim(3)),
        s(cp.stride),
        p(cp.pad),
        ho(ho_),
        wo(wo_),
        k(c * kh * kw) {
    pointwise = kh == 1 && kw == 1 && s == 1 && p == 0;
    const int64_t row_bytes = k * wo * static_cast<int64_t>(sizeof(double));
    band_rows = std::clamp<int64_t>(kBandBytes / row_bytes, 1, ho);
    bands = (ho + band_rows - 1) / band_rows;
  }
  int64_t RowsEnd(int64_t i0) const { return std::min(ho, i0 + band_rows); }
  int64_t BandCols() const { return band_rows * wo; }
  int64_t ImageSize() const { return c * h * w; }
  int64_t OutImageSize() const { return f * ho * wo; }
};

// The output columns j whose input column j*s + kw_i - p lies inside
// [0, w): [lo, hi), possibly empty.
struct ColRange {
  int64_t lo, hi;
};
ColRange ValidCols(const Geom& g, int64_t kw_i) {
  const int64_t first = g.p - kw_i;  // need j*s >= first
  const int64_t lo = first <= 0 ? 0 : std::min(g.wo, (first + g.s - 1) / g.s);
  const int64_t last = g.w - 1 + g.p - kw_i;  // need j*s <= last
  const int64_t hi = last < 0 ? 0 : std::min(g.wo, last / g.s + 1);
  return {lo, std::max(lo, hi)};
}

// col[(ci*kh + a)*kw + b][(i - i0)*wo + j] = x[ci, i*s + a - p, j*s + b - p],
// zero outside x. Rows of col are (i1 - i0) * wo long.
void Im2ColBand(const Geom& g, const double* x, int64_t i0, int64_t i1,
                double* col) {
  const int64_t cols = (i1 - i0) * g.wo;
  for (int64_t ci = 0; ci < g.c; ++ci) {
    for (int64_t a = 0; a < g.kh; ++a) {
      for (int64_t b = 0; b < g.kw; ++b) {
        double* row = col + ((ci * g.kh + a) * g.kw + b) * cols;
        const ColRange r = ValidCols(g, b);
        for (int64_t i = i0; i < i1; ++i) {
          double* dst = row + (i - i0) * g.wo;
          const int64_t hh = i * g.s + a - g.p;
          if (hh < 0 || hh >= g.h) {
            std::fill(dst, dst + g.wo, 0.0);
            continue;
          }
          // Input column of output column j: j*s + shift (>= 0 on [lo, hi)).
          const double* src = x + (ci * g.h + hh) * g.w;
          const int64_t shift = b - g.p;
          std::fill(dst, dst + r.lo, 0.0);
          if (g.s == 1) {
            std::copy(src + r.lo + shift, src + r.hi + shift, dst + r.lo);
          } else {
            for (int64_t j = r.lo; j < r.hi; ++j) dst[j] = src[j * g.s + shift];
          }
          std::fill(dst + r.hi, dst + g.wo, 0.0);
        }
      }
    }
  }
}

// The adjoint of Im2ColBand: dx[ci, i*s + a - p, j*s + b - p] += dcol[...].
void Col2ImBand(const Geom& g, const double* dcol, int64_t i0, int64_t i1,
                double* dx) {
  const int64_t cols = (i1 - i0) * g.wo;
  for (int64_t ci = 0; ci < g.c; ++ci) {
    for (int64_t a = 0; a < g.kh; ++a) {
      for (int64_t b = 0; b < g.kw; ++b) {
        const double* row = dcol + ((ci * g.kh + a) * g.kw + b) * cols;
        const ColRange r = ValidCols(g, b);
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t hh = i * g.s + a - g.p;
          if (hh < 0 || hh >= g.h) continue;
          const double* src = row + (i - i0) * g.wo;
          double* dst = dx + (ci * g.h + hh) * g.w;
          const int64_t shift = b - g.p;
          for (int64_t j = r.lo; j < r.hi; ++j) dst[j * g.s + shift] += src[j];
        }
      }
    }
  }
}

// Items per chunk so that `items` split into at most omp_get_max_threads()
// chunks: the caller (conv.cc) sets that from lib/threading.h and the size
// of the problem; ParallelFor caps it by the budget again.
int64_t Grain(int64_t items) {
  const int64_t threads = std::max(1, omp_get_max_threads());
  return std::max<int64_t>(1, (items + threads - 1) / threads);
}

// A per-thread buffer; nullptr when the allocation failed.
std::unique_ptr<double[]> Allocate(int64_t n) {
  return std::unique_ptr<double[]>(
      new (std::nothrow) double[static_cast<size_t>(n)]);
}

absl::Status OutOfMemory(absl::string_view what, int64_t doubles) {
  return absl::ResourceExhaustedError(absl::StrCat(
      what, ": cannot allocate ", doubles * 8, " bytes of im2col workspace"));
}

// The B operand of a band's GEMM: x[n] itself for pointwise convs, else the
// band's im2col columns written into `col`. Sets *ld to its row stride.
const double* Columns(const Geom& g, const double* xn, int64_t i0, int64_t i1,
                      double* col, int64_t* ld) {
  if (g.pointwise) {
    *ld = g.ho * g.wo;
    return xn + i0 * g.wo;
  }
  Im2ColBand(g, xn, i0, i1, col);
  *ld = (i1 - i0) * g.wo;
  return col;
}

// OpenBLAS (LP64) takes int dimensions and leading dimensions.
absl::Status CheckBlasDims(absl::string_view what, const Geom& g) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (g.k > kMax || g.f > kMax || g.ho * g.wo > kMax) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": w.shape[1]*w.shape[2]*w.shape[3] = ", g.k,
                     ", filters = ", g.f, " and H'*W' = ", g.ho * g.wo,
                     " must each be at most ", kMax, " for BLAS"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ConvForwardF64(const Tensor& xt, const Tensor& wt,
                                           const Tensor& bt, const ConvParam& p,
                                           bool fuse_relu, Tensor* outt) {
  EnsureOpenBlasKernels();
  const Geom g(xt, wt, p, outt->dim(2), outt->dim(3));
  LS_RETURN_IF_ERROR(CheckBlasDims("conv forward (float64)", g));
  const double* x = xt.data<double>();
  const double* w = wt.data<double>();
  const double* b = bt.data<double>();
  double* out = outt->data<double>();
  const int64_t howo = g.ho * g.wo;
  const int64_t col_size = g.pointwise ? 0 : g.k * g.BandCols();

  std::atomic<bool> oom{false};
  // Work items are (image, band) pairs: they write disjoint outputs.
  const int64_t items = g.n * g.bands;
  ParallelFor(items, Grain(items), [&](int64_t begin, int64_t end) {
    std::unique_ptr<double[]> col;
    if (col_size > 0 && (col = Allocate(col_size)) == nullptr) {
      oom = true;
      return;
    }
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / g.bands;
      const int64_t i0 = (item % g.bands) * g.band_rows;
      const int64_t i1 = g.RowsEnd(i0);
      const int64_t cols = (i1 - i0) * g.wo;
      int64_t ldb = 0;
      const double* bmat =
          Columns(g, x + n * g.ImageSize(), i0, i1, col.get(), &ldb);
      double* y = out + n * g.OutImageSize() + i0 * g.wo;
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.f, cols, g.k,
                  1.0, w, g.k, bmat, ldb, 0.0, y, howo);
      // Bias and relu while the band is still in cache.
      for (int64_t f = 0; f < g.f; ++f) {
        double* row = y + f * howo;
        const double bias = b[f];
        if (fuse_relu) {
          for (int64_t j = 0; j < cols; ++j) {
            const double v = row[j] + bias;
            row[j] = (v > 0.0 || v != v) ? v : 0.0;  // NaN propagates
          }
        } else {
          for (int64_t j = 0; j < cols; ++j) row[j] += bias;
        }
      }
    }
  });
  if (oom) return OutOfMemory("conv forward (float64)", col_size);
  return std::string(kImplName);
}

absl::StatusOr<std::string> ConvBackwardF64(const Tensor& xt, const Tensor& wt,
                                            const ConvParam& p,
                                            const Tensor& doutt, Tensor* dxt,
                                            Tensor* dwt, Tensor* dbt) {
  EnsureOpenBlasKernels();
  const Geom g(xt, wt, p, doutt.dim(2), doutt.dim(3));
  LS_RETURN_IF_ERROR(CheckBlasDims("conv backward (float64)", g));
  const double* x = xt.data<double>();
  const double* w = wt.data<double>();
  const double* dout = doutt.data<double>();
  double* dx = dxt->data<double>();
  const int64_t howo = g.ho * g.wo;
  const int64_t col_size = g.pointwise ? 0 : g.k * g.BandCols();
  const int64_t dw_size = g.f * g.k;

  // Each chunk of images sums its own dw and db; chunks are keyed by their
  // first image so the final reduction runs in a fixed order.
  struct Partial {
    int64_t begin;
    std::unique_ptr<double[]> dw;  // dw_size, then f for db
  };
  absl::Mutex mu;
  std::vector<Partial> partials;
  std::atomic<bool> oom{false};

  // Work items are whole images: bands of one image overlap in dx.
  ParallelFor(g.n, Grain(g.n), [&](int64_t begin, int64_t end) {
    std::unique_ptr<double[]> col, dcol;
    std::unique_ptr<double[]> sums = Allocate(dw_size + g.f);
    if (sums == nullptr ||
        (col_size > 0 && ((col = Allocate(col_size)) == nullptr ||
                          (dcol = Allocate(col_size)) == nullptr))) {
      oom = true;
      return;
    }
    double* dw = sums.get();
    double* db = dw + dw_size;
    std::fill(dw, dw + dw_size + g.f, 0.0);
    for (int64_t n = begin; n < end; ++n) {
      const double* xn = x + n * g.ImageSize();
      double* dxn = dx + n * g.ImageSize();
      if (!g.pointwise) std::fill(dxn, dxn + g.ImageSize(), 0.0);
      for (int64_t band = 0; band < g.bands; ++band) {
        const int64_t i0 = band * g.band_rows;
        const int64_t i1 = g.RowsEnd(i0);
        const int64_t cols = (i1 - i0) * g.wo;
        const double* dy = dout + n * g.OutImageSize() + i0 * g.wo;
        int64_t ldb = 0;
        const double* bmat = Columns(g, xn, i0, i1, col.get(), &ldb);
        // dw (f x k) += dy (f x cols) * columns^T (cols x k).
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.f, g.k, cols,
                    1.0, dy, howo, bmat, ldb, 1.0, dw, g.k);
        // dcol (k x cols) = w^T (k x f) * dy (f x cols). Pointwise: dcol is
        // the band of dx itself.
        if (g.pointwise) {
          cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.k, cols, g.f,
                      1.0, w, g.k, dy, howo, 0.0, dxn + i0 * g.wo, howo);
        } else {
          cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.k, cols, g.f,
                      1.0, w, g.k, dy, howo, 0.0, dcol.get(), cols);
          Col2ImBand(g, dcol.get(), i0, i1, dxn);
        }
        for (int64_t f = 0; f < g.f; ++f) {
          const double* row = dy + f * howo;
          double s = 0.0;
          for (int64_t j = 0; j < cols; ++j) s += row[j];
          db[f] += s;
        }
      }
    }
    absl::MutexLock lock(&mu);
    partials.push_back(Partial{begin, std::move(sums)});
  });
  if (oom) {
    return OutOfMemory("conv backward (float64)",
                       std::max(col_size * 2, dw_size + g.f));
  }

  std::sort(
      partials.begin(), partials.end(),
      [](const Partial& a, const Partial& b) { return a.begin < b.begin; });
  double* dw = dwt->data<double>();
  double* db = dbt->data<double>();
  std::fill(dw, dw + dw_size, 0.0);
  std::fill(db, db + g.f, 0.0);
  for (const Partial& part : partials) {
    for (int64_t i = 0; i < dw_size; ++i) dw[i] += part.dw[i];
    for (int64_t f = 0; f < g.f; ++f) db[f] += part.dw[dw_size + f];
  }
  return std::string(kImplName);
}

}  // namespace layerserve::fast::im2col
