// The loss family: validation (and, with the registry, its rows).
#include "lib/layers/loss.h"

#include "absl/strings/str_cat.h"

namespace layerserve {

absl::Status ValidateLossInputs(absl::string_view layer, const Shape& x,
                                const Shape& y) {
  if (x.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input x must have rank 2 (N, C), got rank ",
                     x.size(), " (shape ", ShapeString(x), ")"));
  }
  if (y != Shape{x[0]}) {
    return absl::InvalidArgumentError(
        absl::StrCat(layer, ": input y must have shape (", x[0],
                     ",) (one label per row of x), got ", ShapeString(y)));
  }
  return absl::OkStatus();
}

absl::Status ValidateLabels(absl::string_view layer, const int64_t* y,
                            int64_t n, int64_t classes) {
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] < 0 || y[i] >= classes) {
      return absl::InvalidArgumentError(
          absl::StrCat(layer, ": label y[", i, "] = ", y[i],
                       " is out of range [0, ", classes, ") (x.shape[1])"));
    }
  }
  return absl::OkStatus();
}

}  // namespace layerserve
