// ReLU over a flat array: memory-bound, so the only things that matter are a
// vectorizable loop body and threads on large arrays.
#include "lib/layers/relu.h"

#include <cstdint>

#include "lib/threading.h"

namespace layerserve::fast {
namespace {

template <typename T>
void Forward(const T* x, T* out, int64_t n) {
  ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // NaN propagates (x != x), like np.maximum.
      out[i] = (x[i] > T(0) || x[i] != x[i]) ? x[i] : T(0);
    }
  });
}

template <typename T>
void Backward(const T* x, const T* dout, T* dx, int64_t n) {
  ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dx[i] = x[i] > T(0) ? dout[i] : T(0);
  });
}

}  // namespace

absl::StatusOr<std::string> ReluForward(const Tensor& x, Tensor* out) {
  if (x.dtype() == DType::kFloat32) {
    Forward(x.data<float>(), out->data<float>(), x.size());
  } else {
    Forward(x.data<double>(), out->data<double>(), x.size());
  }
  return std::string("relu:simd");
}

absl::StatusOr<std::string> ReluBackward(const Tensor& x, const Tensor& dout,
                                         Tensor* dx) {
  if (x.dtype() == DType::kFloat32) {
    Backward(x.data<float>(), dout.data<float>(), dx->data<float>(), x.size());
  } else {
    Backward(x.data<double>(), dout.data<double>(), dx->data<double>(),
             x.size());
  }
  return std::string("relu:simd");
}

}  // namespace layerserve::fast
