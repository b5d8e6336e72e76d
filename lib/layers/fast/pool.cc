// TEMPORARY scaffolding while the fast pooling is being written.
#include "lib/layers/pool.h"

namespace layerserve::fast {

absl::StatusOr<std::string> MaxPoolForward(const Tensor& x, const PoolParam& p,
                                           Tensor* out) {
  return naive::MaxPoolForward(x, p, out);
}

absl::StatusOr<std::string> MaxPoolBackward(const Tensor& x,
                                            const PoolParam& p,
                                            const Tensor& dout, Tensor* dx) {
  return naive::MaxPoolBackward(x, p, dout, dx);
}

}  // namespace layerserve::fast
