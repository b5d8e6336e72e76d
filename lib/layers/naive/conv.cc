// The reference convolution: plain loops in the seed's structure, every sum
// accumulated in double whatever the storage dtype. It is the oracle the fast
// paths are tested against, so it stays obviously correct rather than fast.
#include "lib/layers/conv.h"

#include <cstdint>

#include "lib/cancel.h"
#include "lib/status_macros.h"

namespace layerserve::naive {
namespace {

template <typename T>
absl::Status Forward(const Tensor& xt, const Tensor& wt, const Tensor& bt,
                     const ConvParam& p, Tensor* outt) {
  const int64_t N = xt.dim(0), C = xt.dim(1), H = xt.dim(2), W = xt.dim(3);
  const int64_t F = wt.dim(0), HH = wt.dim(2), WW = wt.dim(3);
  const int64_t Ho = outt->dim(2), Wo = outt->dim(3);
  const int64_t S = p.stride, P = p.pad;
  const T* x = xt.data<T>();
  const T* w = wt.data<T>();
  const T* b = bt.data<T>();
  T* out = outt->data<T>();

  for (int64_t n = 0; n < N; ++n) {
    for (int64_t f = 0; f < F; ++f) {
      for (int64_t i = 0; i < Ho; ++i) {
        // A big layer runs for minutes here; let an abandoned call stop.
        LS_RETURN_IF_ERROR(CheckCancelled());
        for (int64_t j = 0; j < Wo; ++j) {
          double sum = b[f];
          for (int64_t c = 0; c < C; ++c) {
            for (int64_t kh = 0; kh < HH; ++kh) {
              const int64_t h = i * S + kh - P;  // row in unpadded x
              if (h < 0 || h >= H) continue;     // zero padding
              for (int64_t kw = 0; kw < WW; ++kw) {
                const int64_t v = j * S + kw - P;
                if (v < 0 || v >= W) continue;
                sum +=
                    static_cast<double>(x[((n * C + c) * H + h) * W + v]) *
                    static_cast<double>(w[((f * C + c) * HH + kh) * WW + kw]);
              }
            }
          }
          out[((n * F + f) * Ho + i) * Wo + j] = static_cast<T>(sum);
        }
      }
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status Backward(const Tensor& xt, const Tensor& wt, const ConvParam& p,
                      const Tensor& doutt, Tensor* dxt, Tensor* dwt,
                      Tensor* dbt) {
  const int64_t N = xt.dim(0), C = xt.dim(1), H = xt.dim(2), W = xt.dim(3);
  const int64_t F = wt.dim(0), HH = wt.dim(2), WW = wt.dim(3);
  const int64_t Ho = doutt.dim(2), Wo = doutt.dim(3);
  const int64_t S = p.stride, P = p.pad;
  const T* x = xt.data<T>();
  const T* w = wt.data<T>();
  const T* dout = doutt.data<T>();

  // Accumulate in double, round once at the end: float32 results are then
  // the correctly rounded float64 gradient.
  std::vector<double> dx(static_cast<size_t>(xt.size()), 0.0);
  std::vector<double> dw(static_cast<size_t>(wt.size()), 0.0);
  std::vector<double> db(static_cast<size_t>(F), 0.0);

  for (int64_t n = 0; n < N; ++n) {
    for (int64_t f = 0; f < F; ++f) {
      for (int64_t i = 0; i < Ho; ++i) {
        LS_RETURN_IF_ERROR(CheckCancelled());
        for (int64_t j = 0; j < Wo; ++j) {
          const double g = dout[((n * F + f) * Ho + i) * Wo + j];
          db[f] += g;
          for (int64_t c = 0; c < C; ++c) {
            for (int64_t kh = 0; kh < HH; ++kh) {
              const int64_t h = i * S + kh - P;
              if (h < 0 || h >= H) continue;
              for (int64_t kw = 0; kw < WW; ++kw) {
                const int64_t v = j * S + kw - P;
                if (v < 0 || v >= W) continue;
                const int64_t xi = ((n * C + c) * H + h) * W + v;
                const int64_t wi = ((f * C + c) * HH + kh) * WW + kw;
                dw[wi] += static_cast<double>(x[xi]) * g;
                dx[xi] += static_cast<double>(w[wi]) * g;
              }
            }
          }
        }
      }
    }
  }
  for (size_t i = 0; i < dx.size(); ++i)
    dxt->data<T>()[i] = static_cast<T>(dx[i]);
  for (size_t i = 0; i < dw.size(); ++i)
    dwt->data<T>()[i] = static_cast<T>(dw[i]);
  for (size_t i = 0; i < db.size(); ++i)
    dbt->data<T>()[i] = static_cast<T>(db[i]);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ConvForward(const Tensor& x, const Tensor& w,
                                        const Tensor& b, const ConvParam& p,
                                        Tensor* out) {
  LS_RETURN_IF_ERROR(x.dtype() == DType::kFloat32
                         ? Forward<float>(x, w, b, p, out)
                         : Forward<double>(x, w, b, p, out));
  return std::string("naive");
}

absl::StatusOr<std::string> ConvBackward(const Tensor& x, const Tensor& w,
                                         const ConvParam& p, const Tensor& dout,
                                         Tensor* dx, Tensor* dw, Tensor* db) {
  LS_RETURN_IF_ERROR(x.dtype() == DType::kFloat32
                         ? Backward<float>(x, w, p, dout, dx, dw, db)
                         : Backward<double>(x, w, p, dout, dx, dw, db));
  return std::string("naive");
}

}  // namespace layerserve::naive
