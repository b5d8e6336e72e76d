// The seed notebook's naive cells, through the library, in float64 at the
// seed's precision and in float32 at float32's.
#include <cstdint>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/gradcheck.h"
#include "lib/registry.h"
#include "tests/lib/seed_data.h"

namespace layerserve {
namespace {

using ::layerserve::testing::SeedConvCorrectOut;
using ::layerserve::testing::SeedPoolCorrectOut;

Tensor FromValues(DType dtype, Shape shape, const std::vector<double>& v) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape)).value();
  EXPECT_EQ(t.size(), static_cast<int64_t>(v.size()));
  for (size_t i = 0; i < v.size(); ++i)
    t.SetFlat(static_cast<int64_t>(i), v[i]);
  return t;
}

Tensor Randn(DType dtype, Shape shape, uint64_t seed) {
  return Tensor::RandomNormal(dtype, std::move(shape), seed).value();
}

LayerSpec Conv(int64_t stride, int64_t pad) {
  LayerSpec s;
  s.name = "conv";
  s.conv = {stride, pad};
  return s;
}

LayerSpec Pool(int64_t h, int64_t w, int64_t stride) {
  LayerSpec s;
  s.name = "max_pool";
  s.pool = {h, w, stride};
  return s;
}

class SeedCells : public ::testing::TestWithParam<DType> {
 protected:
  DType dtype() const { return GetParam(); }
  bool f64() const { return dtype() == DType::kFloat64; }
};

// In [14]: "Testing conv_forward_naive ... difference should be around 1e-8".
TEST_P(SeedCells, ConvForwardMatchesCorrectOut) {
  TensorMap in;
  in.emplace("x", Tensor::Linspace(dtype(), {2, 3, 4, 4}, -0.1, 0.5).value());
  in.emplace("w", Tensor::Linspace(dtype(), {3, 3, 4, 4}, -0.2, 0.3).value());
  in.emplace("b", Tensor::Linspace(dtype(), {3}, -0.1, 0.2).value());
  ForwardResult r = Forward(Conv(2, 1), Impl::kNaive, in).value();
  const Tensor& out = r.outputs.at("out");
  ASSERT_EQ(out.shape(), (Shape{2, 3, 2, 2}));
  Tensor want = FromValues(DType::kFloat64, {2, 3, 2, 2}, SeedConvCorrectOut());
  const double err = RelError(out, want).value();
  EXPECT_LE(err, f64() ? testing::kF64VectorTol : testing::kF32VectorTol);
  if (f64()) {
    // The notebook printed 2.2121476417505994e-08: a correct float64 conv
    // reproduces it to the digits the 8-decimal literal allows.
    EXPECT_NEAR(err, 2.2121476417505994e-08, 1e-12);
  }
  EXPECT_EQ(r.impl_name, "naive");
}

// In [16]: "Testing max_pool_forward_naive function".
TEST_P(SeedCells, MaxPoolForwardMatchesCorrectOut) {
  TensorMap in;
  in.emplace("x", Tensor::Linspace(dtype(), {2, 3, 4, 4}, -0.3, 0.4).value());
  ForwardResult r = Forward(Pool(2, 2, 2), Impl::kNaive, in).value();
  Tensor want = FromValues(DType::kFloat64, {2, 3, 2, 2}, SeedPoolCorrectOut());
  const double err = RelError(r.outputs.at("out"), want).value();
  EXPECT_LE(err, f64() ? testing::kF64VectorTol : testing::kF32VectorTol);
  if (f64()) EXPECT_NEAR(err, 4.1666665157267834e-08, 1e-12);
}

struct GradCase {
  LayerSpec spec;
  std::vector<std::pair<std::string, Shape>> inputs;
  double f64_tol[3];  // per input, in input order
};

// float64: the seed's check, numeric vs analytic at h = 1e-5.
// float32: a centered difference in float32 measures float32's rounding
// more than the gradient, and a large step would cross relu kinks and swap
// pool maxima. So the float32 analytic gradient is checked against the
// float64 numeric gradient of the same (float32-representable) inputs.
void RunGradCheck(const GradCase& c, DType dtype, uint64_t seed) {
  TensorMap in32, in64;
  uint64_t s = seed;
  for (const auto& [name, shape] : c.inputs) {
    Tensor t = Randn(DType::kFloat32, shape, ++s);
    in64.emplace(name, t.CastTo(DType::kFloat64));
    in32.emplace(name, std::move(t));
  }
  const Shape out_shape = InferOutput(c.spec, DescsOf(in64)).value().shape;
  Tensor dout32 = Randn(DType::kFloat32, out_shape, seed + 100);
  Tensor dout64 = dout32.CastTo(DType::kFloat64);
  GradCheckOptions opt;
  opt.dout = &dout64;
  opt.return_gradients = true;
  GradCheckReport rep = GradCheck(c.spec, Impl::kNaive, in64, opt).value();
  ASSERT_EQ(rep.results.size(), c.inputs.size());
  BackwardResult g32;
  if (dtype == DType::kFloat32) {
    g32 = Backward(c.spec, Impl::kNaive, in32, dout32).value();
  }
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const GradCheckResult& r = rep.results[i];
    ASSERT_EQ(r.input, c.inputs[i].first);
    double err = r.rel_error;
    double tol = c.f64_tol[i];
    if (dtype == DType::kFloat32) {
      err = RelError(g32.grads.at("d" + r.input), r.numeric).value();
      tol = testing::kF32VsF64GradTol;
    }
    EXPECT_LE(err, tol) << c.spec.name << " d" << r.input
                        << " worst at element "
                        << ::testing::PrintToString(r.worst_index);
    std::printf("%s %s d%s error: %.3e\n", c.spec.name.c_str(),
                std::string(DTypeName(dtype)).c_str(), r.input.c_str(), err);
  }
}

// The float32 gradient check itself (numeric in float32): meaningful on
// conv, which is linear in each input, so a large step is exact but for
// float32 rounding of the outputs.
TEST(SeedCellsF32, ConvGradCheckInFloat32) {
  TensorMap in;
  in.emplace("x", Randn(DType::kFloat32, {4, 3, 5, 5}, 1));
  in.emplace("w", Randn(DType::kFloat32, {2, 3, 3, 3}, 2));
  in.emplace("b", Randn(DType::kFloat32, {2}, 3));
  GradCheckOptions opt;
  opt.h = testing::kF32GradStep;
  opt.seed = 4;
  LayerSpec spec;
  spec.name = "conv";
  spec.conv = {1, 1};
  GradCheckReport rep = GradCheck(spec, Impl::kNaive, in, opt).value();
  for (const GradCheckResult& r : rep.results) {
    EXPECT_LE(r.rel_error, testing::kF32ConvGradTol) << r.input;
  }
}

// In [15]: conv backward, x (4,3,5,5), w (2,3,3,3), stride 1, pad 1.
TEST_P(SeedCells, ConvBackwardGradCheck) {
  const double t = testing::kF64ConvGradTol;
  RunGradCheck({Conv(1, 1),
                {{"x", {4, 3, 5, 5}}, {"w", {2, 3, 3, 3}}, {"b", {2}}},
                {t, t, t}},
               dtype(), 15);
}

// In [17]: max-pool backward, x (3,2,8,8), 2x2 pool, stride 2.
TEST_P(SeedCells, MaxPoolBackwardGradCheck) {
  RunGradCheck(
      {Pool(2, 2, 2), {{"x", {3, 2, 8, 8}}}, {testing::kF64PoolGradTol}},
      dtype(), 17);
}

// In [4]: conv_relu_pool, x (2,3,16,16), w (3,3,3,3), conv s1 p1, pool 2x2/2.
TEST_P(SeedCells, ConvReluPoolGradCheck) {
  LayerSpec s;
  s.name = "conv_relu_pool";
  s.conv = {1, 1};
  s.pool = {2, 2, 2};
  const double t = testing::kF64CompositeGradTol;
  RunGradCheck(
      {s, {{"x", {2, 3, 16, 16}}, {"w", {3, 3, 3, 3}}, {"b", {3}}}, {t, t, t}},
      dtype(), 4);
}

// In [5]: conv_relu, x (2,3,8,8), w (3,3,3,3), s1 p1.
TEST_P(SeedCells, ConvReluGradCheck) {
  LayerSpec s;
  s.name = "conv_relu";
  s.conv = {1, 1};
  const double t = testing::kF64CompositeGradTol;
  RunGradCheck(
      {s, {{"x", {2, 3, 8, 8}}, {"w", {3, 3, 3, 3}}, {"b", {3}}}, {t, t, t}},
      dtype(), 5);
}

INSTANTIATE_TEST_SUITE_P(BothDTypes, SeedCells,
                         ::testing::Values(DType::kFloat64, DType::kFloat32),
                         [](const auto& info) {
                           return std::string(DTypeName(info.param));
                         });

// float32 analytic gradients agree with float64 ones on the same inputs.
TEST(SeedCellsF32, ConvBackwardFloat32MatchesFloat64) {
  TensorMap in64, in32;
  const std::pair<const char*, Shape> shapes[] = {
      {"x", {4, 3, 5, 5}}, {"w", {2, 3, 3, 3}}, {"b", {2}}};
  uint64_t seed = 40;
  for (const auto& [name, shape] : shapes) {
    Tensor t = Randn(DType::kFloat32, shape, ++seed);
    in64.emplace(name, t.CastTo(DType::kFloat64));
    in32.emplace(name, std::move(t));
  }
  Tensor dout32 = Randn(DType::kFloat32, {4, 2, 5, 5}, 99);
  Tensor dout64 = dout32.CastTo(DType::kFloat64);
  BackwardResult g64 = Backward(Conv(1, 1), Impl::kNaive, in64, dout64).value();
  BackwardResult g32 = Backward(Conv(1, 1), Impl::kNaive, in32, dout32).value();
  for (const char* g : {"dx", "dw", "db"}) {
    EXPECT_LE(RelError(g32.grads.at(g), g64.grads.at(g)).value(),
              testing::kF32VsF64GradTol)
        << g;
  }
}

}  // namespace
}  // namespace layerserve
