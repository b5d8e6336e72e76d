// The batchnorm family: validation (and, with the registry, its rows).
#include "lib/layers/batchnorm.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"

namespace layerserve {

absl::StatusOr<Shape> BatchnormOutputShape(
    absl::string_view layer, bool spatial, const Shape& x, const Shape& gamma,
    const Shape& beta, const Shape& running_mean, const Shape& running_var,
    const BatchnormParam& p) {
  const size_t rank = spatial ? 4 : 2;
  if (x.size() != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input x must have rank ", rank,
                     spatial ? " (N, C, H, W)" : " (N, D)", ", got rank ",
                     x.size(), " (shape ", ShapeString(x), ")"));
  }
  const int64_t features = x[1];
  const struct {
    const char* name;
    const Shape& shape;
  } per_feature[] = {{"gamma", gamma},
                     {"beta", beta},
                     {"running_mean", running_mean},
                     {"running_var", running_var}};
  for (const auto& f : per_feature) {
    if (f.shape != Shape{features}) {
      return absl::InvalidArgumentError(absl::StrCat(
          layer, ": input ", f.name, " must have shape (", features,
          ",) (x.shape[1]), got ", ShapeString(f.shape)));
    }
  }
  if (!(std::isfinite(p.eps) && p.eps > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": bn_param.eps must be finite and > 0, got ", p.eps));
  }
  if (!(p.momentum >= 0 && p.momentum <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        layer, ": bn_param.momentum must be in [0, 1], got ", p.momentum));
  }
  return x;
}

}  // namespace layerserve
