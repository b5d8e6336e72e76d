// Fast vs naive for the rest of the catalog: affine, affine_relu, batchnorm,
// spatial_batchnorm, dropout, softmax_loss, svm_loss, conv_batchnorm_relu
// and affine_batchnorm_relu. Every case runs forward and backward through
// the registry with Impl::kNaive and Impl::kFast on the same seeded inputs
// and compares every output (the running statistics included) and every
// gradient, with the tolerances of tests/fast/tolerances.h (dropout exact).
//
// The generator is seeded; the seed is printed, and LAYERSERVE_PARITY_SEED
// overrides it (as for fast_parity_sweep_test) so a failure replays:
//   LAYERSERVE_PARITY_SEED=<seed> ./fast_catalog_parity_test
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "lib/layers/dropout.h"
#include "lib/registry.h"
#include "lib/tensor.h"
#include "lib/threading.h"
#include "tests/fast/parity.h"
#include "tests/fast/tolerances.h"

namespace layerserve::testing {
namespace {

constexpr uint64_t kDefaultSeed = 20240611;

uint64_t SweepSeed() {
  const char* env = std::getenv("LAYERSERVE_PARITY_SEED");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : kDefaultSeed;
}

// One case: a layer, its shapes and params, and how x is drawn. Written
// with chained setters, like LayerCase in parity.h.
class CatalogCase {
 public:
  explicit CatalogCase(std::string layer) : layer_(std::move(layer)) {}

  CatalogCase& x(Shape s) {
    x_ = std::move(s);
    return *this;
  }
  // Affine outputs M, or conv filters F.
  CatalogCase& outputs(int64_t m) {
    outputs_ = m;
    return *this;
  }
  CatalogCase& kernel(int64_t kh, int64_t kw) {
    kh_ = kh;
    kw_ = kw;
    return *this;
  }
  CatalogCase& conv(int64_t stride, int64_t pad) {
    conv_ = ConvParam{stride, pad};
    return *this;
  }
  CatalogCase& bn(BatchnormParam::Mode mode, double eps, double momentum) {
    bn_ = BatchnormParam{mode, eps, momentum};
    return *this;
  }
  CatalogCase& dropout(double p, bool train, uint64_t seed) {
    dropout_ = DropoutParam{p, train, seed};
    return *this;
  }
  // x = offset + scale * standard normal.
  CatalogCase& data(double offset, double scale) {
    offset_ = offset;
    scale_ = scale;
    return *this;
  }

  const std::string& layer() const { return layer_; }
  const Shape& x_shape() const { return x_; }
  bool is_conv() const { return layer_ == "conv_batchnorm_relu"; }
  bool is_affine() const { return absl::StartsWith(layer_, "affine"); }
  bool is_loss() const { return absl::EndsWith(layer_, "_loss"); }
  bool has_bn() const { return absl::StrContains(layer_, "batchnorm"); }
  bool has_relu() const { return absl::EndsWith(layer_, "relu"); }
  // Dropout only selects and scales (the same division): exact.
  bool exact() const { return layer_ == "dropout"; }

  int64_t features() const {  // prod of x.shape[1:]
    int64_t d = 1;
    for (size_t i = 1; i < x_.size(); ++i) d *= x_[i];
    return d;
  }
  // Values per batchnorm channel in the layer.
  int64_t bn_channels() const {
    return is_conv() || is_affine() ? outputs_ : x_[1];
  }

  LayerSpec Spec() const {
    LayerSpec spec;
    spec.name = layer_;
    spec.conv = conv_;
    spec.bn = bn_;
    spec.dropout = dropout_;
    return spec;
  }

  std::string ToString() const {
    std::string s = absl::StrCat(layer_, " x(", absl::StrJoin(x_, ","), ")");
    if (is_affine()) absl::StrAppend(&s, " w(", features(), ",", outputs_, ")");
    if (is_conv()) {
      absl::StrAppend(&s, " w(", outputs_, ",", x_[1], ",", kh_, ",", kw_,
                      ") stride=", conv_.stride, " pad=", conv_.pad);
    }
    if (has_bn()) {
      absl::StrAppend(
          &s,
          " mode=", bn_.mode == BatchnormParam::Mode::kTrain ? "train" : "test",
          " eps=", bn_.eps, " momentum=", bn_.momentum);
    }
    if (layer_ == "dropout") {
      absl::StrAppend(&s, " p=", dropout_.p,
                      " mode=", dropout_.train ? "train" : "test",
                      " seed=", dropout_.seed);
    }
    if (offset_ != 0 || scale_ != 1) {
      absl::StrAppend(&s, " x=", offset_, "+", scale_, "*N(0,1)");
    }
    return s;
  }

  // The same inputs for any caller with the same seed.
  TensorMap MakeInputs(DType dtype, uint64_t seed) const {
    TensorMap in;
    Tensor x = Tensor::RandomNormal(dtype, x_, seed).value();
    for (int64_t i = 0; i < x.size(); ++i) {
      x.SetFlat(i, offset_ + scale_ * x.GetFlat(i));
    }
    in.emplace("x", std::move(x));
    if (is_affine()) {
      in.emplace("w", Normal(dtype, {features(), outputs_}, seed + 1));
      in.emplace("b", Normal(dtype, {outputs_}, seed + 2));
    }
    if (is_conv()) {
      in.emplace("w", Normal(dtype, {outputs_, x_[1], kh_, kw_}, seed + 1));
      in.emplace("b", Normal(dtype, {outputs_}, seed + 2));
    }
    if (has_bn()) {
      const int64_t c = bn_channels();
      in.emplace("gamma", Normal(dtype, {c}, seed + 3));
      in.emplace("beta", Normal(dtype, {c}, seed + 4));
      in.emplace("running_mean", Normal(dtype, {c}, seed + 5));
      Tensor var = Normal(dtype, {c}, seed + 6);
      for (int64_t i = 0; i < c; ++i) {
        var.SetFlat(i, 0.25 + std::abs(var.GetFlat(i)));
      }
      in.emplace("running_var", std::move(var));
    }
    if (is_loss()) {
      Tensor y = Tensor::Zeros(DType::kInt64, {x_[0]}).value();
      std::mt19937_64 rng(seed + 7);
      std::uniform_int_distribution<int64_t> label(0, x_[1] - 1);
      for (int64_t i = 0; i < x_[0]; ++i) y.SetFlat(i, label(rng));
      in.emplace("y", std::move(y));
    }
    return in;
  }

 private:
  static Tensor Normal(DType dtype, const Shape& shape, uint64_t seed) {
    return Tensor::RandomNormal(dtype, shape, seed).value();
  }

  std::string layer_;
  Shape x_ = {1, 1};
  int64_t outputs_ = 1, kh_ = 1, kw_ = 1;
  ConvParam conv_;
  BatchnormParam bn_;
  DropoutParam dropout_;
  double offset_ = 0, scale_ = 1;
};

// ---- the composites' intermediates ------------------------------------------

Tensor RunNaive(const LayerSpec& spec, const TensorMap& in) {
  return std::move(Forward(spec, Impl::kNaive, in).value().outputs.at("out"));
}

TensorMap Pick(const TensorMap& in, std::vector<const char*> names) {
  TensorMap picked;
  for (const char* name : names) picked.emplace(name, Input(in, name).Clone());
  return picked;
}

LayerSpec Stage(const CatalogCase& c, const char* name) {
  LayerSpec spec = c.Spec();
  spec.name = name;
  return spec;
}
const char* LinearName(const CatalogCase& c) {
  return c.is_conv() ? "conv" : "affine";
}
const char* BnName(const CatalogCase& c) {
  return c.is_conv() ? "spatial_batchnorm" : "batchnorm";
}

// A composite's naive intermediates: a = linear(x), s = batchnorm(a) (a
// itself without batchnorm), through the registry's own stage layers.
struct Stages {
  Tensor a, s;
};
Stages NaiveStages(const CatalogCase& c, const TensorMap& in) {
  Stages st;
  st.a = RunNaive(Stage(c, LinearName(c)), Pick(in, {"x", "w", "b"}));
  if (!c.has_bn()) {
    st.s = st.a.Clone();
    return st;
  }
  TensorMap bn_in = Pick(in, {"gamma", "beta", "running_mean", "running_var"});
  bn_in.emplace("x", st.a.Clone());
  st.s = RunNaive(Stage(c, BnName(c)), bn_in);
  return st;
}

// ds = d loss / d s for dout, through the naive relu.
Tensor NaiveDs(const CatalogCase& c, const Stages& st, const Tensor& dout) {
  TensorMap relu_in;
  relu_in.emplace("x", st.s.Clone());
  return std::move(Backward(Stage(c, "relu"), Impl::kNaive, relu_in, dout)
                       .value()
                       .grads.at("dx"));
}

// The relu of the composites takes a decision on the pre-activation s that
// naive (double, rounded once) and fast (float32 GEMMs, another order)
// compute a few ulps apart; an s within that of 0 may fall on either side
// and pass dout or not. Where |s| is that close to 0, dout is zeroed, so
// both decisions give the same gradient (the forward outputs then differ by
// at most |s|, far inside the tolerance).
constexpr double kReluMargin = 1e-5;  // relative to max |s|

void MaskReluTies(const Tensor& s, Tensor* dout) {
  double max_abs = 0;
  for (int64_t i = 0; i < s.size(); ++i) {
    max_abs = std::max(max_abs, std::abs(s.GetFlat(i)));
  }
  for (int64_t i = 0; i < s.size(); ++i) {
    if (std::abs(s.GetFlat(i)) <= kReluMargin * max_abs) dout->SetFlat(i, 0.0);
  }
}

// A batchnorm input x as (outer, C, inner), with the statistics it is
// normalized by (batch statistics in train mode, running ones in test).
class BnView {
 public:
  BnView(const Tensor& x, const TensorMap& in, const BatchnormParam& bn)
      : x_(x),
        outer_(x.dim(0)),
        channels_(x.dim(1)),
        inner_(x.rank() == 4 ? x.dim(2) * x.dim(3) : 1),
        train_(bn.mode == BatchnormParam::Mode::kTrain),
        center_(channels_),
        spread_(channels_),
        inv_std_(channels_) {
    for (int64_t c = 0; c < channels_; ++c) {
      double sum = 0, sq = 0;
      for (int64_t o = 0; o < outer_; ++o)
        for (int64_t i = 0; i < inner_; ++i) sum += x_.GetFlat(At(o, c, i));
      center_[c] =
          train_ ? sum / count() : Input(in, "running_mean").GetFlat(c);
      for (int64_t o = 0; o < outer_; ++o)
        for (int64_t i = 0; i < inner_; ++i) {
          const double d = x_.GetFlat(At(o, c, i)) - center_[c];
          sq += d * d;
        }
      spread_[c] = std::sqrt(sq / count());
      const double var =
          train_ ? sq / count() : Input(in, "running_var").GetFlat(c);
      inv_std_[c] = 1.0 / std::sqrt(var + bn.eps);
    }
  }

  // kBatchnormCondition's kappa (tolerances.h): the largest ratio of the
  // magnitude of a channel's values (|x_i| + |center|) to the smaller of
  // their spread around the center (what x - center loses digits to) and
  // sqrt(var + eps) (what the output is in units of).
  double Kappa() const {
    double kappa = 1;
    for (int64_t c = 0; c < channels_; ++c) {
      const double unit = spread_[c] > 0 ? std::min(spread_[c], 1 / inv_std_[c])
                                         : 1 / inv_std_[c];
      for (int64_t o = 0; o < outer_; ++o)
        for (int64_t i = 0; i < inner_; ++i) {
          kappa = std::max(kappa, (std::abs(x_.GetFlat(At(o, c, i))) +
                                   std::abs(center_[c])) /
                                      unit);
        }
    }
    return kappa;
  }

  // The error scale of batchnorm's dx (tolerances.h: the sum of |terms|).
  // Train mode computes
  //   dx_i = inv_std g (dy_i - sum(dy) / m - xhat_i sum(dy xhat) / m),
  // whose terms cancel by construction for tiny batches (m = 2: xhat is
  // +-1 and dx ~0 in exact arithmetic), so |dx| itself is no scale. This is
  //   inv_std |g| (|dy_i| + sum |dy| / m + |xhat_i| sum |dy xhat| / m).
  Tensor DxScale(const Tensor& dy, const Tensor& gamma) const {
    Tensor scale = dy.Clone();
    for (int64_t c = 0; c < channels_; ++c) {
      double sum_dy = 0, sum_dy_xhat = 0;
      for (int64_t o = 0; o < outer_; ++o)
        for (int64_t i = 0; i < inner_; ++i) {
          const int64_t k = At(o, c, i);
          sum_dy += std::abs(dy.GetFlat(k));
          sum_dy_xhat += std::abs(dy.GetFlat(k) * Xhat(k, c));
        }
      const double g = std::abs(gamma.GetFlat(c)) * inv_std_[c];
      for (int64_t o = 0; o < outer_; ++o)
        for (int64_t i = 0; i < inner_; ++i) {
          const int64_t k = At(o, c, i);
          double terms = std::abs(dy.GetFlat(k));
          if (train_) {
            terms += (sum_dy + std::abs(Xhat(k, c)) * sum_dy_xhat) / count();
          }
          scale.SetFlat(k, g * terms);
        }
    }
    return scale;
  }

 private:
  double count() const { return static_cast<double>(outer_ * inner_); }
  int64_t At(int64_t o, int64_t c, int64_t i) const {
    return (o * channels_ + c) * inner_ + i;
  }
  double Xhat(int64_t k, int64_t c) const {
    return (x_.GetFlat(k) - center_[c]) * inv_std_[c];
  }

  const Tensor& x_;
  const int64_t outer_, channels_, inner_;
  const bool train_;
  std::vector<double> center_, spread_, inv_std_;
};

// Beyond this kappa a batchnorm channel's spread is rounding noise.
constexpr double kNoiseKappa = 1e8;

// Runs `c` through naive and fast, forward and backward, on inputs drawn
// from `seed`; compares every output and gradient.
ParityOutcome RunCatalogParity(const CatalogCase& c, DType dtype, uint64_t seed,
                               const std::string& replay = "") {
  ParityOutcome out;
  const std::string where =
      absl::StrCat(c.ToString(), " dtype=", DTypeName(dtype),
                   " case_seed=", seed, replay.empty() ? "" : " ", replay);
  auto fail = [&](const std::string& what) {
    out.pass = false;
    absl::StrAppend(&out.failure, where, ": ", what, "\n");
  };
  const LayerSpec spec = c.Spec();
  const TensorMap in = c.MakeInputs(dtype, seed);
  auto naive_f = Forward(spec, Impl::kNaive, in);
  auto fast_f = Forward(spec, Impl::kFast, in);
  if (!naive_f.ok() || !fast_f.ok()) {
    fail(absl::StrCat("forward failed: naive ", naive_f.status().ToString(),
                      "; fast ", fast_f.status().ToString()));
    return out;
  }
  out.fast_impl = fast_f->impl_name;
  const std::string primary = c.is_loss() ? "loss" : "out";
  Tensor dout = Tensor::RandomNormal(
                    dtype, naive_f->outputs.at(primary).shape(), seed + 11)
                    .value();
  Stages stages;
  if (c.has_relu()) {
    stages = NaiveStages(c, in);
    MaskReluTies(stages.s, &dout);
  }
  auto naive_b = Backward(spec, Impl::kNaive, in, dout);
  auto fast_b = Backward(spec, Impl::kFast, in, dout);
  if (!naive_b.ok() || !fast_b.ok()) {
    fail(absl::StrCat("backward failed: naive ", naive_b.status().ToString(),
                      "; fast ", fast_b.status().ToString()));
    return out;
  }
  for (const std::string* impl : {&fast_f->impl_name, &fast_b->impl_name}) {
    if (absl::StrContains(*impl, "no fast path") || *impl == "naive") {
      fail(absl::StrCat("FAST ran the naive code: impl '", *impl, "'"));
    }
  }

  // The error scale (tolerances.h): the naive layer on |inputs|, |dout|.
  TensorMap abs_in;
  for (const auto& [name, t] : in) abs_in.emplace(name, Abs(t));
  auto scale_f = Forward(spec, Impl::kNaive, abs_in);
  auto scale_b = Backward(spec, Impl::kNaive, abs_in, Abs(dout));
  if (!scale_f.ok() || !scale_b.ok()) {
    fail(absl::StrCat("naive on |inputs| failed: ", scale_f.status().ToString(),
                      "; ", scale_b.status().ToString()));
    return out;
  }
  // Batchnorm's dx cancels for tiny batches: its scale is the sum of |terms|
  // of its formula. The composites' linear gradients are sums over da,
  // which train-mode batchnorm makes cancel (db is exactly 0 in exact
  // arithmetic: the mean subtraction removes any bias); their scale is the
  // naive linear backward on |x|, |w| and da's scale.
  double tol = ScaledTolerance(dtype);
  auto condition = [&](const BnView& bn) {
    const double kappa = bn.Kappa();
    tol = std::max(tol, kBatchnormCondition * kappa);
    // A channel whose spread is rounding noise (e.g. a conv whose outputs
    // all read padding: a constant channel, summed in a different order)
    // normalizes that noise; both sides are right and the comparison says
    // nothing.
    if (kappa > kNoiseKappa) out.meaningful = false;
  };
  if (c.has_bn() && !c.has_relu()) {
    const BnView bn(Input(in, "x"), in, spec.bn);
    scale_b->grads["dx"] = bn.DxScale(dout, Input(in, "gamma"));
    condition(bn);
  }
  if (c.has_relu()) {
    const Tensor ds = NaiveDs(c, stages, dout);
    Tensor da_scale = Abs(ds);
    if (c.has_bn()) {
      const BnView bn(stages.a, in, spec.bn);
      da_scale = bn.DxScale(ds, Input(in, "gamma"));
      condition(bn);
    }
    auto lin = Backward(Stage(c, LinearName(c)), Impl::kNaive,
                        Pick(abs_in, {"x", "w", "b"}), da_scale);
    if (!lin.ok()) {
      fail(
          absl::StrCat("naive linear stage failed: ", lin.status().ToString()));
      return out;
    }
    for (auto& [name, g] : lin->grads) scale_b->grads[name] = std::move(g);
  }

  auto check = [&](const std::string& name, const Tensor& got,
                   const Tensor& want, const Tensor& scale,
                   const std::string& impl) {
    const TensorComparison r = Compare(got, want, &scale, c.exact(), tol);
    out.worst_error = std::max(out.worst_error, r.error);
    // A one-element loss is never "mostly zero"; its dx may be.
    if (r.zero_fraction > kMostlyZeroFraction && want.size() > 1) {
      out.meaningful = false;
    }
    if (!r.pass) {
      fail(absl::StrCat(
          name, " at ", IndexString(want, r.worst), ": expected ",
          want.GetFlat(r.worst), " got ", got.GetFlat(r.worst),
          c.exact() ? " (exact comparison)"
                    : absl::StrCat(" scaled error ", r.error, " > ", tol),
          " [fast impl ", impl, "]"));
    }
  };
  for (const auto& [name, want] : naive_f->outputs) {
    auto got = fast_f->outputs.find(name);
    if (got == fast_f->outputs.end()) {
      fail(absl::StrCat("fast forward is missing output ", name));
      continue;
    }
    check(name, got->second, want, scale_f->outputs.at(name),
          fast_f->impl_name);
  }
  if (fast_f->outputs.size() != naive_f->outputs.size()) {
    fail("fast forward returned other outputs than naive");
  }
  for (const auto& [name, want] : naive_b->grads) {
    check(name, fast_b->grads.at(name), want, scale_b->grads.at(name),
          fast_b->impl_name);
  }
  return out;
}

// ---- the generated sweep ----------------------------------------------------

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  int64_t Uniform(int64_t lo, int64_t hi) {  // inclusive
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  double Real(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng_);
  }
  // Sizes lean towards odd "tails" of SIMD widths and lane counts half of
  // the time; otherwise anything in [1, hi].
  int64_t Size(int64_t hi) {
    static constexpr int64_t kTails[] = {1, 3, 7, 9, 15, 17, 31, 33, 63, 65};
    const int64_t t = kTails[Uniform(0, 9)];
    return Uniform(0, 1) && t <= hi ? t : Uniform(1, hi);
  }
  // Mostly standard data; sometimes a large spread, or a large offset (the
  // variance is then a small difference of large numbers). Not the offset
  // for the composites: there batchnorm's input is a float32 GEMM's output,
  // whose rounding (relative to sum |x| |w|) batchnorm would magnify by
  // offset / spread; that is the GEMM's conditioning, not something either
  // side can do better.
  CatalogCase& Data(CatalogCase& c) {
    switch (Uniform(0, 3)) {
      case 0:
        if (c.has_relu()) return c;
        return c.data(Real(-50, 50), Real(0.01, 0.5));
      case 1:
        return c.data(0, Real(2, 20));
      default:
        return c;
    }
  }
  CatalogCase& Bn(CatalogCase& c) {
    static constexpr double kEps[] = {1e-5, 1e-3, 0.1};
    return c.bn(Uniform(0, 2) == 0 ? BatchnormParam::Mode::kTest
                                   : BatchnormParam::Mode::kTrain,
                kEps[Uniform(0, 2)], Real(0, 1));
  }

  // x of rank 2..4 whose trailing dims multiply to about `d`.
  Shape AffineX(int64_t n, int64_t d) {
    switch (Uniform(0, 2)) {
      case 0:
        return {n, d};
      case 1: {
        const int64_t a = Uniform(1, 4);
        return {n, a, std::max<int64_t>(1, d / a)};
      }
      default: {
        const int64_t a = Uniform(1, 3), b = Uniform(1, 3);
        return {n, a, b, std::max<int64_t>(1, d / (a * b))};
      }
    }
  }

  CatalogCase Affine(const std::string& layer) {
    CatalogCase c(layer);
    int64_t n = Uniform(1, 48), d = Size(300), m = Size(80);
    while (n * d * m > 300'000) n = (n + 1) / 2, m = (m + 1) / 2;
    c.x(AffineX(n, d)).outputs(m);
    if (layer == "affine_batchnorm_relu") Bn(c);
    return Data(c);
  }

  CatalogCase Batchnorm() {
    CatalogCase c("batchnorm");
    c.x({Uniform(1, 64), Size(300)});
    Bn(c);
    return Data(c);
  }

  CatalogCase SpatialBatchnorm() {
    CatalogCase c("spatial_batchnorm");
    c.x({Uniform(1, 8), Size(17), Uniform(1, 20), Uniform(1, 20)});
    Bn(c);
    return Data(c);
  }

  CatalogCase ConvBatchnormRelu() {
    CatalogCase c("conv_batchnorm_relu");
    const int64_t h = Uniform(1, 14), w = Uniform(1, 14);
    const int64_t pad = Uniform(0, 2), stride = Uniform(1, 2);
    const int64_t kh = Uniform(1, std::min<int64_t>(5, h + 2 * pad));
    const int64_t kw = Uniform(1, std::min<int64_t>(5, w + 2 * pad));
    c.x({Uniform(1, 4), Size(9), h, w})
        .outputs(Size(9))
        .kernel(kh, kw)
        .conv(stride, pad);
    Bn(c);
    return Data(c);
  }

  CatalogCase Dropout() {
    CatalogCase c("dropout");
    Shape x;
    const int64_t rank = Uniform(1, 4);
    for (int64_t i = 0; i < rank; ++i)
      x.push_back(Uniform(1, rank > 2 ? 17 : 200));
    static constexpr double kP[] = {1.0, 0.5, 0.8, 0.25};
    const double p = Uniform(0, 1) ? kP[Uniform(0, 3)] : Real(0.2, 1.0);
    return c.x(x).dropout(p, Uniform(0, 4) != 0, rng_());
  }

  CatalogCase Loss(const std::string& layer) {
    CatalogCase c(layer);
    c.x({Uniform(1, 64), Size(1000)});
    if (Uniform(0, 2) == 0) c.data(Real(-5, 5), Real(5, 40));
    return c;
  }

 private:
  std::mt19937_64 rng_;
};

// Generated cases per dtype and layer.
const std::vector<std::pair<std::string, int>>& Mix() {
  static const auto* const mix = new std::vector<std::pair<std::string, int>>{
      {"affine", 100},
      {"affine_relu", 50},
      {"batchnorm", 100},
      {"spatial_batchnorm", 100},
      {"dropout", 80},
      {"softmax_loss", 80},
      {"svm_loss", 60},
      {"conv_batchnorm_relu", 60},
      {"affine_batchnorm_relu", 50},
  };
  return *mix;
}
// Meaningful (not mostly zero) cases per dtype the sweep must reach.
constexpr int kMinMeaningful = 550;

std::vector<CatalogCase> GenerateCases(uint64_t seed) {
  Generator gen(seed);
  std::vector<CatalogCase> cases;
  for (const auto& [layer, count] : Mix()) {
    for (int i = 0; i < count; ++i) {
      if (absl::StartsWith(layer, "affine")) {
        cases.push_back(gen.Affine(layer));
      } else if (layer == "batchnorm") {
        cases.push_back(gen.Batchnorm());
      } else if (layer == "spatial_batchnorm") {
        cases.push_back(gen.SpatialBatchnorm());
      } else if (layer == "conv_batchnorm_relu") {
        cases.push_back(gen.ConvBatchnormRelu());
      } else if (layer == "dropout") {
        cases.push_back(gen.Dropout());
      } else {
        cases.push_back(gen.Loss(layer));
      }
    }
  }
  return cases;
}

void Sweep(DType dtype) {
  const uint64_t seed = SweepSeed();
  std::printf("catalog parity sweep %s: LAYERSERVE_PARITY_SEED=%llu\n",
              std::string(DTypeName(dtype)).c_str(),
              static_cast<unsigned long long>(seed));
  const std::string replay =
      absl::StrCat("(replay: LAYERSERVE_PARITY_SEED=", seed, ")");
  const std::vector<CatalogCase> cases = GenerateCases(seed);
  struct Tally {
    int meaningful = 0, mostly_zero = 0, failed = 0;
    double worst = 0;
    std::string impl;
  };
  std::map<std::string, Tally> tally;
  int meaningful = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const CatalogCase& c = cases[i];
    const ParityOutcome r = RunCatalogParity(c, dtype, seed * 7919 + i,
                                             absl::StrCat("#", i, " ", replay));
    Tally& t = tally[c.layer()];
    if (r.meaningful) t.worst = std::max(t.worst, r.worst_error);
    if (!r.fast_impl.empty()) t.impl = r.fast_impl;
    if (!r.pass) {
      ++t.failed;
      ADD_FAILURE() << r.failure;
    } else if (r.meaningful) {
      ++t.meaningful;
      ++meaningful;
    } else {
      ++t.mostly_zero;
    }
  }
  for (const auto& [layer, t] : tally) {
    std::printf(
        "  %-22s meaningful %3d  mostly-zero/noise %3d  failed %3d  worst "
        "scaled error (meaningful) %.3g  [%s]\n",
        layer.c_str(), t.meaningful, t.mostly_zero, t.failed, t.worst,
        t.impl.c_str());
  }
  EXPECT_GE(meaningful, kMinMeaningful)
      << "too few cases with a meaningful (not mostly zero) reference";
}

TEST(CatalogParitySweep, Float32) { Sweep(DType::kFloat32); }
TEST(CatalogParitySweep, Float64) { Sweep(DType::kFloat64); }

// The generator covers what the sweep claims: both batchnorm modes, rank 3
// and 4 affine inputs, offset data, test-mode dropout, tails.
TEST(CatalogParitySweep, GeneratorCoversTheRanges) {
  std::map<std::string, int> seen;
  for (const CatalogCase& c : GenerateCases(SweepSeed())) {
    const LayerSpec s = c.Spec();
    const std::string text = c.ToString();
    if (c.has_bn()) {
      ++seen[s.bn.mode == BatchnormParam::Mode::kTrain ? "bn train"
                                                       : "bn test"];
    }
    if (c.is_affine() && c.x_shape().size() > 2) ++seen["affine rank>2"];
    if (absl::StrContains(text, " x=")) ++seen["scaled data"];
    if (c.layer() == "dropout")
      ++seen[s.dropout.train ? "drop train" : "drop test"];
    if (c.layer() == "dropout" && s.dropout.p == 1.0) ++seen["drop p=1"];
  }
  for (const char* what :
       {"bn train", "bn test", "affine rank>2", "scaled data", "drop train",
        "drop test", "drop p=1"}) {
    EXPECT_GE(seen[what], 3) << what;
  }
}

// ---- named cases
// --------------------------------------------------------------

struct Named {
  const char* name;
  CatalogCase c;
};

std::vector<Named> NamedCases() {
  using Mode = BatchnormParam::Mode;
  return {
      // The benchmark shapes, scaled down.
      {"affine_cifar_fc", CatalogCase("affine").x({16, 3, 8, 8}).outputs(100)},
      {"affine_one_by_one", CatalogCase("affine").x({1, 1}).outputs(1)},
      {"affine_relu_tail", CatalogCase("affine_relu").x({17, 33}).outputs(65)},
      {"batchnorm_train",
       CatalogCase("batchnorm").x({64, 130}).bn(Mode::kTrain, 1e-5, 0.9)},
      {"batchnorm_test",
       CatalogCase("batchnorm").x({5, 17}).bn(Mode::kTest, 1e-5, 0.9)},
      // One sample: zero variance, the output is beta; eps carries it.
      {"batchnorm_single_row",
       CatalogCase("batchnorm").x({1, 9}).bn(Mode::kTrain, 1e-3, 0.5)},
      // A variance that is a tiny difference of large numbers: a one-pass
      // sum of squares would lose every digit here.
      {"batchnorm_offset", CatalogCase("batchnorm")
                               .x({32, 40})
                               .bn(Mode::kTrain, 1e-5, 0.9)
                               .data(1000, 0.01)},
      {"spatial_offset", CatalogCase("spatial_batchnorm")
                             .x({4, 3, 9, 7})
                             .bn(Mode::kTrain, 1e-5, 0.9)
                             .data(-300, 0.05)},
      {"spatial_one_pixel", CatalogCase("spatial_batchnorm")
                                .x({6, 17, 1, 1})
                                .bn(Mode::kTrain, 1e-5, 0.1)},
      {"spatial_test", CatalogCase("spatial_batchnorm")
                           .x({2, 5, 11, 13})
                           .bn(Mode::kTest, 1e-5, 0.9)},
      {"spatial_big_plane", CatalogCase("spatial_batchnorm")
                                .x({2, 2, 64, 64})
                                .bn(Mode::kTrain, 1e-5, 0.9)},
      {"dropout_half",
       CatalogCase("dropout").x({4, 3, 17, 19}).dropout(0.5, true, 42)},
      {"dropout_keep_all",
       CatalogCase("dropout").x({3, 1000}).dropout(1.0, true, 7)},
      {"dropout_test",
       CatalogCase("dropout").x({2, 3, 5, 7}).dropout(0.3, false, 1)},
      {"softmax_cifar", CatalogCase("softmax_loss").x({50, 10})},
      {"softmax_imagenet", CatalogCase("softmax_loss").x({8, 1000})},
      {"softmax_wide_spread",
       CatalogCase("softmax_loss").x({16, 37}).data(0, 200)},
      {"svm_cifar", CatalogCase("svm_loss").x({50, 10})},
      {"svm_two_classes", CatalogCase("svm_loss").x({33, 2})},
      {"conv_bn_relu", CatalogCase("conv_batchnorm_relu")
                           .x({2, 3, 8, 8})
                           .outputs(5)
                           .kernel(3, 3)
                           .conv(1, 1)
                           .bn(Mode::kTrain, 1e-5, 0.9)},
      {"conv_bn_relu_test", CatalogCase("conv_batchnorm_relu")
                                .x({2, 4, 7, 9})
                                .outputs(3)
                                .kernel(3, 2)
                                .conv(2, 1)
                                .bn(Mode::kTest, 1e-5, 0.9)},
      {"affine_bn_relu", CatalogCase("affine_batchnorm_relu")
                             .x({20, 2, 3, 5})
                             .outputs(17)
                             .bn(Mode::kTrain, 1e-5, 0.9)},
  };
}

TEST(CatalogParityNamed, AllPassInBothDtypes) {
  uint64_t seed = SweepSeed();
  for (const Named& n : NamedCases()) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      const ParityOutcome r = RunCatalogParity(n.c, dtype, ++seed);
      EXPECT_TRUE(r.pass) << n.name << ": " << r.failure;
      // One sample has zero variance (dx is 0); a wide spread makes the
      // softmax one-hot (dx is 0 but at two classes per row).
      const bool may_be_zero = absl::StrContains(n.name, "single_row") ||
                               absl::StrContains(n.name, "wide_spread");
      if (!may_be_zero) {
        EXPECT_TRUE(r.meaningful) << n.name << " has a mostly-zero reference";
      }
    }
  }
}

// ---- implementation names
// -----------------------------------------------------

std::string FastImpl(const CatalogCase& c, DType dtype, bool backward) {
  const TensorMap in = c.MakeInputs(dtype, 1);
  const LayerSpec spec = c.Spec();
  auto f = Forward(spec, Impl::kFast, in);
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return "";
  if (!backward) return f->impl_name;
  const Tensor& out = f->outputs.at(c.is_loss() ? "loss" : "out");
  const Tensor dout = Tensor::RandomNormal(dtype, out.shape(), 2).value();
  auto b = Backward(spec, Impl::kFast, in, dout);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? b->impl_name : "";
}

TEST(CatalogImplNames, SayWhichImplementationRan) {
  const CatalogCase affine = CatalogCase("affine").x({4, 6}).outputs(5);
  for (bool backward : {false, true}) {
    EXPECT_TRUE(absl::StartsWith(FastImpl(affine, DType::kFloat32, backward),
                                 "onednn:"));
    EXPECT_EQ(FastImpl(affine, DType::kFloat64, backward), "openblas");
  }
  const struct {
    CatalogCase c;
    const char* prefix;
  } kOthers[] = {
      {CatalogCase("batchnorm").x({4, 6}), "bn:"},
      {CatalogCase("spatial_batchnorm").x({2, 3, 4, 4}), "bn:"},
      {CatalogCase("dropout").x({4, 6}).dropout(0.5, true, 1), "dropout:"},
      {CatalogCase("softmax_loss").x({4, 6}), "softmax:"},
      {CatalogCase("svm_loss").x({4, 6}), "svm:"},
  };
  for (const auto& o : kOthers) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      for (bool backward : {false, true}) {
        const std::string impl = FastImpl(o.c, dtype, backward);
        EXPECT_TRUE(absl::StartsWith(impl, o.prefix))
            << o.c.ToString() << ": " << impl;
        // The vector ISA the kernels ran with is part of the name.
        EXPECT_TRUE(absl::EndsWith(impl, ":avx512") ||
                    absl::EndsWith(impl, ":avx2") ||
                    absl::EndsWith(impl, ":sse2"))
            << impl;
      }
    }
  }
  // Composites name each distinct stage once, in order.
  const CatalogCase abr = CatalogCase("affine_batchnorm_relu")
                              .x({4, 6})
                              .outputs(5)
                              .bn(BatchnormParam::Mode::kTrain, 1e-5, 0.9);
  const std::vector<std::string> stages =
      absl::StrSplit(FastImpl(abr, DType::kFloat64, false), '+');
  ASSERT_EQ(stages.size(), 3u) << absl::StrJoin(stages, "+");
  EXPECT_EQ(stages[0], "openblas");
  EXPECT_TRUE(absl::StartsWith(stages[1], "bn:"));
  EXPECT_EQ(stages[2], "relu:simd");
  const CatalogCase cbr = CatalogCase("conv_batchnorm_relu")
                              .x({2, 3, 6, 6})
                              .outputs(4)
                              .kernel(3, 3)
                              .conv(1, 1);
  const std::string conv_impl = FastImpl(cbr, DType::kFloat32, true);
  EXPECT_TRUE(absl::StartsWith(conv_impl, "onednn:")) << conv_impl;
  EXPECT_TRUE(absl::StrContains(conv_impl, "+bn:")) << conv_impl;
}

// Every layer of the catalog now has a fast path: FAST never falls back.
TEST(CatalogImplNames, EveryLayerHasAFastPath) {
  for (const LayerDef* def : AllLayers()) {
    EXPECT_TRUE(def->has_fast) << def->name;
  }
}

// ---- dropout: the mask itself
// -------------------------------------------------

// The fast mask is DropoutKeeps element by element, at the edges of p too:
// p = 1 keeps everything, a p of a few 2^-53 keeps (almost) nothing, and
// p one ulp below 1/2 must not round the threshold up.
TEST(CatalogDropout, FastMaskIsDropoutKeeps) {
  const double kPs[] = {1.0,
                        0.5,
                        std::nextafter(0.5, 0.0),
                        0.1,
                        std::ldexp(3.0, -53),
                        1.0 - std::ldexp(1.0, -53)};
  for (double p : kPs) {
    for (uint64_t seed : {0ull, 1ull, 0xdeadbeefcafef00dull}) {
      LayerSpec spec;
      spec.name = "dropout";
      spec.dropout = DropoutParam{p, true, seed};
      TensorMap in;
      Tensor x = Tensor::Zeros(DType::kFloat64, {3, 7, 1031}).value();
      x.Fill(1.0);
      in.emplace("x", std::move(x));
      auto f = Forward(spec, Impl::kFast, in);
      ASSERT_TRUE(f.ok()) << f.status();
      const Tensor& out = f->outputs.at("out");
      int64_t kept = 0, mismatches = 0;
      for (int64_t i = 0; i < out.size(); ++i) {
        const bool keep = DropoutKeeps(spec.dropout, i);
        kept += keep;
        if (out.GetFlat(i) != (keep ? 1.0 / p : 0.0)) ++mismatches;
      }
      EXPECT_EQ(mismatches, 0) << "p=" << p << " seed=" << seed;
      if (p == 1.0) {
        EXPECT_EQ(kept, out.size());
      }
      if (p < 1e-10) {
        EXPECT_LE(kept, 1);
      }
    }
  }
}

// ---- determinism
// --------------------------------------------------------------

// The batchnorm statistics and the loss sums have a fixed order: results do
// not depend on how many threads ran (dropout is elementwise anyway).
TEST(CatalogDeterminism, SameBitsOnOneAndTwoThreads) {
  using Mode = BatchnormParam::Mode;
  const CatalogCase cases[] = {
      CatalogCase("spatial_batchnorm")
          .x({8, 5, 48, 48})
          .bn(Mode::kTrain, 1e-5, 0.9),
      CatalogCase("batchnorm").x({300, 500}).bn(Mode::kTrain, 1e-5, 0.9),
      CatalogCase("softmax_loss").x({200, 700}),
      CatalogCase("svm_loss").x({200, 700}),
      CatalogCase("dropout").x({300, 500}).dropout(0.6, true, 3),
  };
  const int saved = MaxThreads();
  for (const CatalogCase& c : cases) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      const TensorMap in = c.MakeInputs(dtype, 5);
      const LayerSpec spec = c.Spec();
      std::vector<TensorMap> results;
      for (int threads : {1, 2}) {
        SetMaxThreads(threads);
        auto f = Forward(spec, Impl::kFast, in);
        ASSERT_TRUE(f.ok()) << f.status();
        const Tensor& out = f->outputs.at(c.is_loss() ? "loss" : "out");
        const Tensor dout = Tensor::RandomNormal(dtype, out.shape(), 9).value();
        auto b = Backward(spec, Impl::kFast, in, dout);
        ASSERT_TRUE(b.ok()) << b.status();
        TensorMap all = std::move(f->outputs);
        for (auto& [name, g] : b->grads) all.emplace(name, std::move(g));
        results.push_back(std::move(all));
      }
      SetMaxThreads(saved);
      for (const auto& [name, t] : results[0]) {
        EXPECT_TRUE(Compare(results[1].at(name), t, nullptr, true, 0).pass)
            << c.ToString() << " " << DTypeName(dtype) << " " << name;
      }
    }
  }
  SetMaxThreads(saved);
}

}  // namespace
}  // namespace layerserve::testing
