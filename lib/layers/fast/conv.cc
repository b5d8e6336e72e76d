// The fast convolution: float32 on oneDNN (conv_onednn.cc), float64 by
// im2col + OpenBLAS (conv_im2col.cc). This file only picks the path and
// applies the thread budget.
#include "lib/layers/conv.h"

#include <omp.h>

#include <algorithm>

#include "lib/layers/fast/conv_im2col.h"
#include "lib/layers/fast/conv_onednn.h"
#include "lib/threading.h"

namespace layerserve::fast {
namespace {

// oneDNN and OpenBLAS (OpenMP builds) size their thread teams from the
// calling thread's omp_get_max_threads(). ComputeSlot sets it when a request
// starts; setting it again per call to ThreadsForThisCall() keeps them in
// step with lib/threading.h when the slot count has changed since, or when
// no slot is held at all (tests, benchmarks). Restored on exit because the
// setting belongs to the calling thread, not to us.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(n);
  }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  const int saved_;
};

// Work (flops) below which another thread costs more than it saves: waking
// an OpenMP team, splitting a GEMM or a reorder of a few kilobytes. On a
// loaded machine a parallel region can wait a whole scheduler tick for its
// second thread, which small problems cannot amortize.
constexpr double kMinFlopsPerThread = 4e6;

// Threads for a conv whose output (or dout) is `out`: the budget from
// lib/threading.h, fewer for small problems.
int ConvThreads(const Tensor& w, const Tensor& out) {
  const double flops = 2.0 * static_cast<double>(out.size()) *
                       static_cast<double>(w.dim(1) * w.dim(2) * w.dim(3));
  const int by_work = static_cast<int>(
      std::min<double>(flops / kMinFlopsPerThread, ThreadsForThisCall()));
  return std::max(1, by_work);
}

absl::StatusOr<std::string> Forward(const Tensor& x, const Tensor& w,
                                    const Tensor& b, const ConvParam& p,
                                    bool relu, Tensor* out) {
  ScopedOmpThreads threads(ConvThreads(w, *out));
  if (x.dtype() == DType::kFloat32) {
    return onednn::ConvForwardF32(x, w, b, p, relu, out);
  }
  return im2col::ConvForwardF64(x, w, b, p, relu, out);
}

}  // namespace

absl::StatusOr<std::string> ConvForward(const Tensor& x, const Tensor& w,
                                        const Tensor& b, const ConvParam& p,
                                        Tensor* out) {
  return Forward(x, w, b, p, /*relu=*/false, out);
}

absl::StatusOr<std::string> ConvReluForward(const Tensor& x, const Tensor& w,
                                            const Tensor& b, const ConvParam& p,
                                            Tensor* out) {
  return Forward(x, w, b, p, /*relu=*/true, out);
}

absl::StatusOr<std::string> ConvBackward(const Tensor& x, const Tensor& w,
                                         const ConvParam& p, const Tensor& dout,
                                         Tensor* dx, Tensor* dw, Tensor* db) {
  ScopedOmpThreads threads(ConvThreads(w, dout));
  if (x.dtype() == DType::kFloat32) {
    return onednn::ConvBackwardF32(x, w, p, dout, dx, dw, db);
  }
  return im2col::ConvBackwardF64(x, w, p, dout, dx, dw, db);
}

}  // namespace layerserve::fast
