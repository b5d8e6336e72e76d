// The reference batch normalization. Both layouts are (outer, C, inner)
// views of x: (N, D, 1) for batchnorm, (N, C, H*W) for the spatial variant,
// so one set of loops serves both. Everything is computed in double.
#include "lib/layers/batchnorm.h"

#include <cmath>
#include <vector>

#include "lib/cancel.h"
#include "lib/status_macros.h"

namespace layerserve::naive {
namespace {

struct Layout {
  int64_t outer, channels, inner;
  int64_t count() const { return outer * inner; }  // values per channel
  int64_t at(int64_t o, int64_t c, int64_t i) const {
    return (o * channels + c) * inner + i;
  }
};

Layout LayoutOf(const Tensor& x, bool spatial) {
  if (spatial) return {x.dim(0), x.dim(1), x.dim(2) * x.dim(3)};
  return {x.dim(0), x.dim(1), 1};
}

// Per channel: the mean and variance used to normalize (batch statistics in
// train mode, running ones in test mode).
struct Stats {
  std::vector<double> mean, var;
};

Stats NormalizingStats(const BatchnormTensors& in, const BatchnormParam& p,
                       const Layout& l) {
  Stats s{std::vector<double>(l.channels), std::vector<double>(l.channels)};
  for (int64_t c = 0; c < l.channels; ++c) {
    if (p.mode == BatchnormParam::Mode::kTest) {
      s.mean[c] = in.running_mean->GetFlat(c);
      s.var[c] = in.running_var->GetFlat(c);
      continue;
    }
    double sum = 0;
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t i = 0; i < l.inner; ++i) sum += in.x->GetFlat(l.at(o, c, i));
    const double mean = sum / static_cast<double>(l.count());
    double sq = 0;
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t i = 0; i < l.inner; ++i) {
        const double d = in.x->GetFlat(l.at(o, c, i)) - mean;
        sq += d * d;
      }
    s.mean[c] = mean;
    s.var[c] = sq / static_cast<double>(l.count());  // biased, as np.var
  }
  return s;
}

}  // namespace

absl::StatusOr<std::string> BatchnormForward(const BatchnormTensors& in,
                                             const BatchnormParam& p,
                                             bool spatial, Tensor* out,
                                             Tensor* new_mean,
                                             Tensor* new_var) {
  const Layout l = LayoutOf(*in.x, spatial);
  LS_RETURN_IF_ERROR(CheckCancelled());
  const Stats s = NormalizingStats(in, p, l);
  for (int64_t c = 0; c < l.channels; ++c) {
    const double inv_std = 1.0 / std::sqrt(s.var[c] + p.eps);
    const double g = in.gamma->GetFlat(c), b = in.beta->GetFlat(c);
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t i = 0; i < l.inner; ++i) {
        const int64_t k = l.at(o, c, i);
        out->SetFlat(k, g * (in.x->GetFlat(k) - s.mean[c]) * inv_std + b);
      }
    double rm = in.running_mean->GetFlat(c), rv = in.running_var->GetFlat(c);
    if (p.mode == BatchnormParam::Mode::kTrain) {
      rm = p.momentum * rm + (1 - p.momentum) * s.mean[c];
      rv = p.momentum * rv + (1 - p.momentum) * s.var[c];
    }
    new_mean->SetFlat(c, rm);
    new_var->SetFlat(c, rv);
  }
  return std::string("naive");
}

absl::StatusOr<std::string> BatchnormBackward(const BatchnormTensors& in,
                                              const BatchnormParam& p,
                                              bool spatial, const Tensor& dout,
                                              Tensor* dx, Tensor* dgamma,
                                              Tensor* dbeta) {
  const Layout l = LayoutOf(*in.x, spatial);
  LS_RETURN_IF_ERROR(CheckCancelled());
  const Stats s = NormalizingStats(in, p, l);
  const double m = static_cast<double>(l.count());
  for (int64_t c = 0; c < l.channels; ++c) {
    const double inv_std = 1.0 / std::sqrt(s.var[c] + p.eps);
    const double g = in.gamma->GetFlat(c);
    double sum_dout = 0, sum_dout_xhat = 0;
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t i = 0; i < l.inner; ++i) {
        const int64_t k = l.at(o, c, i);
        const double xhat = (in.x->GetFlat(k) - s.mean[c]) * inv_std;
        sum_dout += dout.GetFlat(k);
        sum_dout_xhat += dout.GetFlat(k) * xhat;
      }
    dgamma->SetFlat(c, sum_dout_xhat);
    dbeta->SetFlat(c, sum_dout);
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t i = 0; i < l.inner; ++i) {
        const int64_t k = l.at(o, c, i);
        const double dxhat = dout.GetFlat(k) * g;
        if (p.mode == BatchnormParam::Mode::kTest) {
          // The statistics are constants: a per-channel affine map.
          dx->SetFlat(k, dxhat * inv_std);
          continue;
        }
        // Train mode: mean and variance depend on every x of the channel.
        //   dx = inv_std / m * (m dxhat - sum(dxhat) - xhat sum(dxhat xhat))
        const double xhat = (in.x->GetFlat(k) - s.mean[c]) * inv_std;
        dx->SetFlat(k,
                    inv_std / m *
                        (m * dxhat - g * sum_dout - xhat * g * sum_dout_xhat));
      }
  }
  return std::string("naive");
}

}  // namespace layerserve::naive
