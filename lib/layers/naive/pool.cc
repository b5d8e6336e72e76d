// The reference max pooling: the seed's loops. Comparisons are exact in any
// dtype, so no widening is needed here.
#include "lib/layers/pool.h"

#include <cstdint>

#include "lib/cancel.h"
#include "lib/status_macros.h"

namespace layerserve::naive {
namespace {

template <typename T>
absl::Status Forward(const Tensor& xt, const PoolParam& p, Tensor* outt) {
  const int64_t N = xt.dim(0), C = xt.dim(1), H = xt.dim(2), W = xt.dim(3);
  const int64_t Ho = outt->dim(2), Wo = outt->dim(3);
  const T* x = xt.data<T>();
  T* out = outt->data<T>();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      LS_RETURN_IF_ERROR(CheckCancelled());
      const T* plane = x + (n * C + c) * H * W;
      for (int64_t i = 0; i < Ho; ++i) {
        for (int64_t j = 0; j < Wo; ++j) {
          T best = plane[(i * p.stride) * W + j * p.stride];
          for (int64_t ph = 0; ph < p.pool_height; ++ph) {
            for (int64_t pw = 0; pw < p.pool_width; ++pw) {
              const T v = plane[(i * p.stride + ph) * W + j * p.stride + pw];
              // Strict >, and NaN wins: like np.max, a NaN in the window
              // makes the window's max NaN.
              if (v > best || (v != v && best == best)) best = v;
            }
          }
          out[((n * C + c) * Ho + i) * Wo + j] = best;
        }
      }
    }
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status Backward(const Tensor& xt, const PoolParam& p, const Tensor& doutt,
                      Tensor* dxt) {
  const int64_t N = xt.dim(0), C = xt.dim(1), H = xt.dim(2), W = xt.dim(3);
  const int64_t Ho = doutt.dim(2), Wo = doutt.dim(3);
  const T* x = xt.data<T>();
  const T* dout = doutt.data<T>();
  T* dx = dxt->data<T>();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      LS_RETURN_IF_ERROR(CheckCancelled());
      const int64_t base = (n * C + c) * H * W;
      for (int64_t i = 0; i < Ho; ++i) {
        for (int64_t j = 0; j < Wo; ++j) {
          // np.argmax: the first maximum in row-major window order.
          int64_t arg = base + (i * p.stride) * W + j * p.stride;
          for (int64_t ph = 0; ph < p.pool_height; ++ph) {
            for (int64_t pw = 0; pw < p.pool_width; ++pw) {
              const int64_t k =
                  base + (i * p.stride + ph) * W + j * p.stride + pw;
              if (x[k] > x[arg] || (x[k] != x[k] && x[arg] == x[arg])) arg = k;
            }
          }
          dx[arg] += dout[((n * C + c) * Ho + i) * Wo + j];
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> MaxPoolForward(const Tensor& x, const PoolParam& p,
                                           Tensor* out) {
  LS_RETURN_IF_ERROR(x.dtype() == DType::kFloat32 ? Forward<float>(x, p, out)
                                                  : Forward<double>(x, p, out));
  return std::string("naive");
}

absl::StatusOr<std::string> MaxPoolBackward(const Tensor& x, const PoolParam& p,
                                            const Tensor& dout, Tensor* dx) {
  LS_RETURN_IF_ERROR(x.dtype() == DType::kFloat32
                         ? Backward<float>(x, p, dout, dx)
                         : Backward<double>(x, p, dout, dx));
  return std::string("naive");
}

}  // namespace layerserve::naive
