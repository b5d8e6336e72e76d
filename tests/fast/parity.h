// The fast-vs-naive tester: one case is a layer and its shapes, written the
// way XNNPACK's testers read,
//
//   ConvCase().batch(2).channels(17).filters(5).input(9, 11).kernel(3, 5)
//       .stride(2).pad(1)
//
// and RunParity(case, dtype, seed) runs the registry's Forward and Backward
// with Impl::kNaive and Impl::kFast on the same seeded inputs and compares
// every output and gradient (tolerances.h says how close is close enough).
//
// Inputs are standard normal, except where an exact comparison needs exact
// arithmetic: float32 conv_relu and conv_relu_pool take a relu and max-pool
// *decision* on conv outputs that oneDNN (float32 accumulation) and naive
// (float64, rounded once) compute a few ulps apart, so a value within an ulp
// of 0 or of its window's maximum would flip and move a gradient. For those,
// as benchdnn does, values are multiples of 1/8 in [-1, 1]: every product is
// a multiple of 1/64 and every sum in the sweep stays below 2^24 of those
// units, so float32 arithmetic is exact in any order and both sides take the
// same decisions (ties included, which then exercises the first-maximum
// rule). Max-pool cases alternate between the two kinds of data for the same
// reason: quantized data has ties.
//
// Thread-safety: a LayerCase is a value; RunParity may run concurrently.
#ifndef LAYERSERVE_TESTS_FAST_PARITY_H_
#define LAYERSERVE_TESTS_FAST_PARITY_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/registry.h"
#include "lib/tensor.h"
#include "tests/fast/tolerances.h"

namespace layerserve::testing {

enum class Data { kNormal, kQuantized };

class LayerCase {
 public:
  explicit LayerCase(std::string layer) : layer_(std::move(layer)) {}

  LayerCase& batch(int64_t n) {
    n_ = n;
    return *this;
  }
  LayerCase& channels(int64_t c) {
    c_ = c;
    return *this;
  }
  LayerCase& filters(int64_t f) {
    f_ = f;
    return *this;
  }
  LayerCase& input(int64_t h, int64_t w) {
    h_ = h;
    w_ = w;
    return *this;
  }
  LayerCase& kernel(int64_t kh, int64_t kw) {
    kh_ = kh;
    kw_ = kw;
    return *this;
  }
  LayerCase& stride(int64_t s) {
    stride_ = s;
    return *this;
  }
  LayerCase& pad(int64_t p) {
    pad_ = p;
    return *this;
  }
  LayerCase& pool(int64_t ph, int64_t pw, int64_t stride) {
    ph_ = ph;
    pw_ = pw;
    pool_stride_ = stride;
    return *this;
  }
  LayerCase& data(Data d) {
    data_ = d;
    return *this;
  }

  const std::string& layer() const { return layer_; }
  bool has_conv() const { return layer_.rfind("conv", 0) == 0; }
  bool has_pool() const {
    return layer_ == "max_pool" || layer_ == "conv_relu_pool";
  }
  // relu and max_pool only select values: fast must equal naive exactly.
  bool exact() const { return layer_ == "relu" || layer_ == "max_pool"; }

  Shape x_shape() const { return {n_, c_, h_, w_}; }
  Shape w_shape() const { return {f_, c_, kh_, kw_}; }
  int64_t conv_out_h() const { return (h_ + 2 * pad_ - kh_) / stride_ + 1; }
  int64_t conv_out_w() const { return (w_ + 2 * pad_ - kw_) / stride_ + 1; }
  // Multiply-adds of one conv forward pass (0 without a conv).
  int64_t conv_macs() const {
    return has_conv() ? n_ * f_ * c_ * kh_ * kw_ * conv_out_h() * conv_out_w()
                      : 0;
  }

  Data data_for(DType dtype) const {
    if (dtype == DType::kFloat32 &&
        (layer_ == "conv_relu" || layer_ == "conv_relu_pool")) {
      return Data::kQuantized;
    }
    return data_;
  }

  LayerSpec Spec() const {
    LayerSpec spec;
    spec.name = layer_;
    spec.conv = ConvParam{stride_, pad_};
    spec.pool = PoolParam{ph_, pw_, pool_stride_};
    return spec;
  }

  std::string ToString() const {
    std::string s =
        absl::StrCat(layer_, " x(", n_, ",", c_, ",", h_, ",", w_, ")");
    if (has_conv()) {
      absl::StrAppend(&s, " w(", f_, ",", c_, ",", kh_, ",", kw_,
                      ") stride=", stride_, " pad=", pad_);
    }
    if (has_pool()) {
      absl::StrAppend(&s, " pool=", ph_, "x", pw_, "/", pool_stride_);
    }
    if (data_ == Data::kQuantized) absl::StrAppend(&s, " data=quantized");
    return s;
  }

  // The same inputs for any caller with the same seed.
  TensorMap MakeInputs(DType dtype, uint64_t seed) const {
    TensorMap in;
    in.emplace("x", Make(dtype, x_shape(), seed));
    if (has_conv()) {
      in.emplace("w", Make(dtype, w_shape(), seed + 1));
      in.emplace("b", Make(dtype, {f_}, seed + 2));
    }
    return in;
  }
  Tensor MakeDout(DType dtype, const Shape& shape, uint64_t seed) const {
    return Make(dtype, shape, seed + 3);
  }

 private:
  Tensor Make(DType dtype, const Shape& shape, uint64_t seed) const {
    Tensor t = Tensor::RandomNormal(dtype, shape, seed).value();
    if (data_for(dtype) == Data::kQuantized) {
      for (int64_t i = 0; i < t.size(); ++i) {
        const double q = std::clamp(std::round(t.GetFlat(i) * 3.0), -8.0, 8.0);
        t.SetFlat(i, q / 8.0);
      }
    }
    return t;
  }

  std::string layer_;
  int64_t n_ = 1, c_ = 1, h_ = 1, w_ = 1;
  int64_t f_ = 1, kh_ = 1, kw_ = 1, stride_ = 1, pad_ = 0;
  int64_t ph_ = 1, pw_ = 1, pool_stride_ = 1;
  Data data_ = Data::kNormal;
};

inline LayerCase ConvCase() { return LayerCase("conv"); }
inline LayerCase ConvReluCase() { return LayerCase("conv_relu"); }
inline LayerCase ConvReluPoolCase() { return LayerCase("conv_relu_pool"); }
inline LayerCase ReluCase() { return LayerCase("relu"); }
inline LayerCase MaxPoolCase() { return LayerCase("max_pool"); }

// "(n, c, h, w)" of a flat offset.
inline std::string IndexString(const Tensor& t, int64_t flat) {
  return absl::StrCat("(", absl::StrJoin(t.Unravel(flat), ", "), ")");
}

struct TensorComparison {
  double error = 0;          // ScaledError, or 1 at the first exact mismatch
  int64_t worst = 0;         // flat index of the worst element
  double zero_fraction = 0;  // of the reference
  bool pass = true;
};

// The metric of tolerances.h: max |got - want| / max(|want|, |scale|) over
// the tensor, `scale` being the same layer evaluated on |inputs| (the sums of
// absolute terms); or exact equality. `scale` may be null (then |want| alone).
inline TensorComparison Compare(const Tensor& got, const Tensor& want,
                                const Tensor* scale, bool exact,
                                double tolerance) {
  TensorComparison r;
  double max_scale = 0, max_diff = 0;
  int64_t zeros = 0;
  for (int64_t i = 0; i < want.size(); ++i) {
    const double g = got.GetFlat(i), w = want.GetFlat(i);
    if (w == 0) ++zeros;
    max_scale = std::max(max_scale, std::abs(w));
    if (scale != nullptr) {
      max_scale = std::max(max_scale, std::abs(scale->GetFlat(i)));
    }
    const double d = std::abs(g - w);
    // NaN in either side counts as the worst possible difference.
    if (!(d <= max_diff)) {
      max_diff = std::isnan(d) ? INFINITY : d;
      r.worst = i;
    }
  }
  r.zero_fraction = want.size() ? double(zeros) / double(want.size()) : 0;
  if (exact) {
    r.error = max_diff == 0 ? 0 : 1;
    r.pass = max_diff == 0;
  } else {
    r.error = max_scale > 0 ? max_diff / max_scale : max_diff;
    r.pass = r.error <= tolerance;
  }
  return r;
}

inline Tensor Abs(const Tensor& t) {
  Tensor a = t.Clone();
  for (int64_t i = 0; i < a.size(); ++i) a.SetFlat(i, std::abs(a.GetFlat(i)));
  return a;
}

struct ParityOutcome {
  bool pass = true;
  bool meaningful = true;  // no reference tensor mostly zero
  double worst_error = 0;  // worst ScaledError over the compared tensors
  std::string fast_impl;   // forward's impl_name on the fast side
  std::string failure;     // what failed, with the case, index and seed
};

// Runs `c` through naive and fast, forward and backward, on inputs drawn
// from `seed`. `replay` is appended to failure messages (how to reproduce).
inline ParityOutcome RunParity(const LayerCase& c, DType dtype, uint64_t seed,
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
  const Tensor& want_out = naive_f->outputs.at("out");
  const Tensor dout = c.MakeDout(dtype, want_out.shape(), seed);
  auto naive_b = Backward(spec, Impl::kNaive, in, dout);
  auto fast_b = Backward(spec, Impl::kFast, in, dout);
  if (!naive_b.ok() || !fast_b.ok()) {
    fail(absl::StrCat("backward failed: naive ", naive_b.status().ToString(),
                      "; fast ", fast_b.status().ToString()));
    return out;
  }

  // The error scale: the naive layer on |inputs| and |dout|. For a conv
  // that is, element by element, the sum of |terms| its rounding error is
  // proportional to; through relu and pooling it is of the same magnitude.
  TensorMap abs_in;
  for (const auto& [name, t] : in) abs_in.emplace(name, Abs(t));
  auto scale_f = Forward(spec, Impl::kNaive, abs_in);
  auto scale_b = Backward(spec, Impl::kNaive, abs_in, Abs(dout));
  if (!scale_f.ok() || !scale_b.ok()) {
    fail(absl::StrCat("naive on |inputs| failed: ", scale_f.status().ToString(),
                      "; ", scale_b.status().ToString()));
    return out;
  }

  const double tol = ScaledTolerance(dtype);
  auto check = [&](const std::string& name, const Tensor& got,
                   const Tensor& want, const Tensor& scale,
                   const std::string& impl) {
    const TensorComparison r = Compare(got, want, &scale, c.exact(), tol);
    out.worst_error = std::max(out.worst_error, r.error);
    if (r.zero_fraction > kMostlyZeroFraction) out.meaningful = false;
    if (!r.pass) {
      fail(absl::StrCat(
          name, " at ", IndexString(want, r.worst), ": expected ",
          want.GetFlat(r.worst), " got ", got.GetFlat(r.worst),
          c.exact() ? " (exact comparison)"
                    : absl::StrCat(" scaled error ", r.error, " > ", tol),
          " [fast impl ", impl, "]"));
    }
  };
  check("out", fast_f->outputs.at("out"), want_out, scale_f->outputs.at("out"),
        fast_f->impl_name);
  for (const auto& [name, want] : naive_b->grads) {
    check(name, fast_b->grads.at(name), want, scale_b->grads.at(name),
          fast_b->impl_name);
  }
  return out;
}

}  // namespace layerserve::testing

#endif  // LAYERSERVE_TESTS_FAST_PARITY_H_
