// TEMPORARY scaffolding while the fast conv is being written: delegates to
// the naive code so the rest of the tree builds. Replaced by the oneDNN
// (float32) and im2col+BLAS (float64) paths.
#include "lib/layers/conv.h"
#include "lib/layers/relu.h"
#include "lib/status_macros.h"

namespace layerserve::fast {

absl::StatusOr<std::string> ConvForward(const Tensor& x, const Tensor& w,
                                        const Tensor& b, const ConvParam& p,
                                        Tensor* out) {
  return naive::ConvForward(x, w, b, p, out);
}

absl::StatusOr<std::string> ConvReluForward(const Tensor& x, const Tensor& w,
                                            const Tensor& b,
                                            const ConvParam& p, Tensor* out) {
  LS_ASSIGN_OR_RETURN(Tensor a, Tensor::Zeros(out->dtype(), out->shape()));
  LS_ASSIGN_OR_RETURN(std::string name, naive::ConvForward(x, w, b, p, &a));
  LS_RETURN_IF_ERROR(naive::ReluForward(a, out).status());
  return name;
}

absl::StatusOr<std::string> ConvBackward(const Tensor& x, const Tensor& w,
                                         const ConvParam& p,
                                         const Tensor& dout, Tensor* dx,
                                         Tensor* dw, Tensor* db) {
  return naive::ConvBackward(x, w, p, dout, dx, dw, db);
}

}  // namespace layerserve::fast
