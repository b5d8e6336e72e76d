// Float64 convolution by im2col + GEMM on OpenBLAS (oneDNN 2.6 has no f64).
//
// Forward, per image n and per band of output rows:
//   col = im2col(x[n], band)              (C*HH*WW) x (rows*W')
//   out[n][:, band] = w (F x C*HH*WW) * col + b   (then relu, when fused)
// Backward, per image n and band:
//   dw += dout[n][:, band] * col^T,  db += row sums of dout[n][:, band],
//   dcol = w^T * dout[n][:, band],   dx[n] += col2im(dcol).
// Bands are sized so a band's columns stay in cache between im2col and the
// GEMM that reads them. 1x1 stride-1 unpadded convolutions skip im2col: x[n]
// already is the column matrix.
//
// Threads: work items (images, or image bands in forward) are spread over
// ThreadsForThisCall() threads, each running single-threaded GEMMs (OpenBLAS's
// OpenMP build runs one thread inside a parallel region); with a single work
// item the GEMM itself runs multithreaded. dw/db partial sums are reduced in
// a fixed order, so results do not depend on thread timing.
//
// Preconditions as for layerserve::fast::ConvForward: validated, float64,
// outputs allocated with the right shapes.
// Thread-safety: may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_FAST_CONV_IM2COL_H_
#define LAYERSERVE_LIB_LAYERS_FAST_CONV_IM2COL_H_

#include <string>

#include "absl/status/statusor.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve::fast::im2col {

inline constexpr absl::string_view kImplName = "im2col+openblas";

// Returns kImplName.
absl::StatusOr<std::string> ConvForwardF64(const Tensor& x, const Tensor& w,
                                           const Tensor& b, const ConvParam& p,
                                           bool fuse_relu, Tensor* out);
// Returns kImplName.
absl::StatusOr<std::string> ConvBackwardF64(const Tensor& x, const Tensor& w,
                                            const ConvParam& p,
                                            const Tensor& dout, Tensor* dx,
                                            Tensor* dw, Tensor* db);

}  // namespace layerserve::fast::im2col

#endif  // LAYERSERVE_LIB_LAYERS_FAST_CONV_IM2COL_H_
