// The reference losses: per-sample loops, in double.
#include "lib/layers/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace layerserve::naive {

absl::Status Loss(LossKind kind, const Tensor& x, const int64_t* y,
                  double dloss, double* loss, Tensor* dx) {
  const int64_t N = x.dim(0), C = x.dim(1);
  double total = 0;
  std::vector<double> row(static_cast<size_t>(C));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) row[c] = x.GetFlat(n * C + c);
    const int64_t label = y[n];
    if (kind == LossKind::kSoftmax) {
      // Shift by the max so exp() cannot overflow (log-sum-exp).
      const double mx = *std::max_element(row.begin(), row.end());
      double z = 0;
      for (double v : row) z += std::exp(v - mx);
      const double log_z = std::log(z) + mx;
      total += log_z - row[label];
      for (int64_t c = 0; c < C; ++c) {
        const double prob = std::exp(row[c] - log_z);
        dx->SetFlat(n * C + c, dloss * (prob - (c == label ? 1.0 : 0.0)) / N);
      }
    } else {
      // Multiclass hinge with margin 1; the correct class is excluded.
      int64_t positive = 0;
      for (int64_t c = 0; c < C; ++c) {
        if (c == label) continue;
        const double margin = row[c] - row[label] + 1.0;
        if (margin > 0) {
          total += margin;
          ++positive;
          dx->SetFlat(n * C + c, dloss / N);
        } else {
          dx->SetFlat(n * C + c, 0.0);
        }
      }
      dx->SetFlat(n * C + label, -dloss * positive / N);
    }
  }
  *loss = total / N;
  return absl::OkStatus();
}

}  // namespace layerserve::naive
