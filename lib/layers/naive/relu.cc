#include "lib/layers/relu.h"

#include <cstdint>

namespace layerserve::naive {
namespace {

template <typename T>
void Forward(const Tensor& xt, Tensor* outt) {
  const T* x = xt.data<T>();
  T* out = outt->data<T>();
  // np.maximum(0, x) propagates NaN; a bare x > 0 test would turn it into 0.
  for (int64_t i = 0; i < xt.size(); ++i) {
    out[i] = (x[i] > 0 || x[i] != x[i]) ? x[i] : T(0);
  }
}

template <typename T>
void Backward(const Tensor& xt, const Tensor& doutt, Tensor* dxt) {
  const T* x = xt.data<T>();
  const T* dout = doutt.data<T>();
  T* dx = dxt->data<T>();
  for (int64_t i = 0; i < xt.size(); ++i) dx[i] = x[i] > 0 ? dout[i] : T(0);
}

}  // namespace

absl::StatusOr<std::string> ReluForward(const Tensor& x, Tensor* out) {
  if (x.dtype() == DType::kFloat32) {
    Forward<float>(x, out);
  } else {
    Forward<double>(x, out);
  }
  return std::string("naive");
}

absl::StatusOr<std::string> ReluBackward(const Tensor& x, const Tensor& dout,
                                         Tensor* dx) {
  if (x.dtype() == DType::kFloat32) {
    Backward<float>(x, dout, dx);
  } else {
    Backward<double>(x, dout, dx);
  }
  return std::string("naive");
}

}  // namespace layerserve::naive
