// Float32 convolution on oneDNN 2.6: forward (optionally with relu fused as
// a post-op), backward data, backward weights + bias.
//
// oneDNN picks its own (blocked) memory layouts (format_tag::any); we reorder
// our NCHW / OIHW tensors into them and back, which measured faster end to
// end than asking oneDNN to work on plain NCHW (im2col+GEMM there).
// Primitives, their descriptors and the reorders are built once per problem
// and kept in a bounded LRU cache keyed by the full problem: shapes, stride,
// pad, direction, fused relu and the OpenMP thread count they were built for
// (oneDNN sizes its work split at creation time). oneDNN's own primitive
// cache (1024 primitives by default) sits below ours and is bounded too.
//
// The caller has validated the inputs (ConvOutputShape) and allocated the
// outputs; all tensors are float32. Errors from oneDNN come back as INTERNAL.
//
// Thread-safety: all functions may be called concurrently. Cached primitives
// run in user-scratchpad mode with a scratchpad and a stream per call, so one
// primitive can execute on several threads at once.
#ifndef LAYERSERVE_LIB_LAYERS_FAST_CONV_ONEDNN_H_
#define LAYERSERVE_LIB_LAYERS_FAST_CONV_ONEDNN_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve::fast::onednn {

// Returns "onednn:<impl_info_str>", e.g. "onednn:jit:avx2".
absl::StatusOr<std::string> ConvForwardF32(const Tensor& x, const Tensor& w,
                                           const Tensor& b, const ConvParam& p,
                                           bool fuse_relu, Tensor* out);

// Returns "onednn:<impl>" of the backward-data primitive, followed by
// "+onednn:<impl>" of backward-weights when the two differ.
absl::StatusOr<std::string> ConvBackwardF32(const Tensor& x, const Tensor& w,
                                            const ConvParam& p,
                                            const Tensor& dout, Tensor* dx,
                                            Tensor* dw, Tensor* db);

// Plans kept per direction (forward, backward); the least recently used is
// dropped beyond this.
inline constexpr size_t kConvPlanCacheCapacity = 64;

struct ConvPlanCacheStats {
  size_t forward_entries = 0;
  size_t backward_entries = 0;
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t evictions = 0;
};
ConvPlanCacheStats GetConvPlanCacheStats();

// oneDNN takes explicit left/right padding and requires
//   (in + pad_l + pad_r - kernel) / stride + 1 == out.
// Ours pads `pad` on both sides and floors, so the last (in + 2 pad - kernel)
// % stride padded elements are never read. This returns the right padding
// that reaches exactly the last element read, (out - 1) * stride + kernel -
// in - pad: between pad - stride + 1 and pad, negative when the unread tail
// reaches into the input itself (e.g. in 11, kernel 1, stride 3, pad 0 ->
// -1), which oneDNN accepts (it requires pad_r > -stride).
int64_t RightPad(int64_t in, int64_t kernel, int64_t stride, int64_t pad);

}  // namespace layerserve::fast::onednn

#endif  // LAYERSERVE_LIB_LAYERS_FAST_CONV_ONEDNN_H_
