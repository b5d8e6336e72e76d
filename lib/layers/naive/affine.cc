// The reference affine layer: the seed course's affine_forward/backward as
// plain loops, sums in double.
#include "lib/layers/affine.h"

#include <vector>

#include "lib/cancel.h"
#include "lib/status_macros.h"

namespace layerserve::naive {
namespace {

template <typename T>
absl::Status Forward(const Tensor& xt, const Tensor& wt, const Tensor& bt,
                     Tensor* outt) {
  const int64_t N = xt.dim(0), D = wt.dim(0), M = wt.dim(1);
  const T *x = xt.data<T>(), *w = wt.data<T>(), *b = bt.data<T>();
  T* out = outt->data<T>();
  for (int64_t n = 0; n < N; ++n) {
    LS_RETURN_IF_ERROR(CheckCancelled());
    for (int64_t m = 0; m < M; ++m) {
      double sum = b[m];
      for (int64_t d = 0; d < D; ++d) {
        sum += static_cast<double>(x[n * D + d]) *
               static_cast<double>(w[d * M + m]);
      }
      out[n * M + m] = static_cast<T>(sum);
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status Backward(const Tensor& xt, const Tensor& wt, const Tensor& doutt,
                      Tensor* dxt, Tensor* dwt, Tensor* dbt) {
  const int64_t N = xt.dim(0), D = wt.dim(0), M = wt.dim(1);
  const T *x = xt.data<T>(), *w = wt.data<T>(), *dout = doutt.data<T>();
  // dx = dout w^T, dw = x^T dout, db = sum_n dout.
  for (int64_t n = 0; n < N; ++n) {
    LS_RETURN_IF_ERROR(CheckCancelled());
    for (int64_t d = 0; d < D; ++d) {
      double sum = 0;
      for (int64_t m = 0; m < M; ++m) {
        sum += static_cast<double>(dout[n * M + m]) *
               static_cast<double>(w[d * M + m]);
      }
      dxt->data<T>()[n * D + d] = static_cast<T>(sum);
    }
  }
  for (int64_t d = 0; d < D; ++d) {
    LS_RETURN_IF_ERROR(CheckCancelled());
    for (int64_t m = 0; m < M; ++m) {
      double sum = 0;
      for (int64_t n = 0; n < N; ++n) {
        sum += static_cast<double>(x[n * D + d]) *
               static_cast<double>(dout[n * M + m]);
      }
      dwt->data<T>()[d * M + m] = static_cast<T>(sum);
    }
  }
  for (int64_t m = 0; m < M; ++m) {
    double sum = 0;
    for (int64_t n = 0; n < N; ++n) sum += dout[n * M + m];
    dbt->data<T>()[m] = static_cast<T>(sum);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> AffineForward(const Tensor& x, const Tensor& w,
                                          const Tensor& b, Tensor* out) {
  LS_RETURN_IF_ERROR(x.dtype() == DType::kFloat32
                         ? Forward<float>(x, w, b, out)
                         : Forward<double>(x, w, b, out));
  return std::string("naive");
}

absl::StatusOr<std::string> AffineBackward(const Tensor& x, const Tensor& w,
                                           const Tensor& dout, Tensor* dx,
                                           Tensor* dw, Tensor* db) {
  LS_RETURN_IF_ERROR(x.dtype() == DType::kFloat32
                         ? Backward<float>(x, w, dout, dx, dw, db)
                         : Backward<double>(x, w, dout, dx, dw, db));
  return std::string("naive");
}

}  // namespace layerserve::naive
