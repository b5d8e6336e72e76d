// Edge shapes for the naive layers. Forward is checked against an
// independently written formulation (scatter instead of gather, explicit
// padding); backward by float64 gradient checks.
#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/gradcheck.h"
#include "lib/registry.h"
#include "tests/lib/seed_data.h"

namespace layerserve {
namespace {

struct ConvShape {
  int64_t n, c, h, w, f, hh, ww, stride, pad;
  std::string label;
};

// out[n,f,i,j] += x[n,c,h,w] * w[f,c,kh,kw] for every (h, w) that window
// (i, j) covers: the scatter form, over an explicitly zero-padded copy.
std::vector<double> ScatterConv(const ConvShape& s, const Tensor& x,
                                const Tensor& w, const Tensor& b) {
  const int64_t hp = s.h + 2 * s.pad, wp = s.w + 2 * s.pad;
  const int64_t ho = 1 + (hp - s.hh) / s.stride,
                wo = 1 + (wp - s.ww) / s.stride;
  std::vector<double> padded(static_cast<size_t>(s.n * s.c * hp * wp), 0.0);
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t h = 0; h < s.h; ++h)
        for (int64_t v = 0; v < s.w; ++v)
          padded[((n * s.c + c) * hp + h + s.pad) * wp + v + s.pad] =
              x.GetFlat(((n * s.c + c) * s.h + h) * s.w + v);
  std::vector<double> out(static_cast<size_t>(s.n * s.f * ho * wo), 0.0);
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t f = 0; f < s.f; ++f)
      for (int64_t i = 0; i < ho; ++i)
        for (int64_t j = 0; j < wo; ++j)
          out[((n * s.f + f) * ho + i) * wo + j] = b.GetFlat(f);
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t f = 0; f < s.f; ++f)
        for (int64_t kh = 0; kh < s.hh; ++kh)
          for (int64_t kw = 0; kw < s.ww; ++kw)
            for (int64_t i = 0; i < ho; ++i)
              for (int64_t j = 0; j < wo; ++j)
                out[((n * s.f + f) * ho + i) * wo + j] +=
                    padded[((n * s.c + c) * hp + i * s.stride + kh) * wp +
                           j * s.stride + kw] *
                    w.GetFlat(((f * s.c + c) * s.hh + kh) * s.ww + kw);
  return out;
}

class ConvEdges : public ::testing::TestWithParam<ConvShape> {};

TEST_P(ConvEdges, ForwardMatchesScatterAndGradientsCheck) {
  const ConvShape& s = GetParam();
  TensorMap in;
  in.emplace(
      "x",
      Tensor::RandomNormal(DType::kFloat64, {s.n, s.c, s.h, s.w}, 1).value());
  in.emplace(
      "w",
      Tensor::RandomNormal(DType::kFloat64, {s.f, s.c, s.hh, s.ww}, 2).value());
  in.emplace("b", Tensor::RandomNormal(DType::kFloat64, {s.f}, 3).value());
  LayerSpec spec;
  spec.name = "conv";
  spec.conv = {s.stride, s.pad};
  ForwardResult r = Forward(spec, Impl::kNaive, in).value();
  const Tensor& out = r.outputs.at("out");
  const std::vector<double> want =
      ScatterConv(s, in.at("x"), in.at("w"), in.at("b"));
  ASSERT_EQ(out.size(), static_cast<int64_t>(want.size()));
  for (int64_t i = 0; i < out.size(); ++i) {
    ASSERT_NEAR(out.GetFlat(i), want[static_cast<size_t>(i)], 1e-12)
        << "at " << ::testing::PrintToString(out.Unravel(i));
  }
  GradCheckReport rep = GradCheck(spec, Impl::kNaive, in, {}).value();
  for (const GradCheckResult& g : rep.results) {
    EXPECT_LE(g.rel_error, testing::kF64ConvGradTol) << g.input;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvEdges,
    ::testing::Values(
        ConvShape{2, 3, 7, 8, 2, 3, 3, 2, 1, "stride2_nondivisible"},
        ConvShape{1, 2, 9, 7, 3, 3, 2, 3, 0, "stride3_pad0_nonsquare"},
        ConvShape{2, 4, 5, 5, 3, 1, 1, 1, 0, "kernel1x1"},
        ConvShape{2, 3, 4, 4, 2, 6, 6, 1, 1, "kernel_equals_padded_input"},
        ConvShape{1, 1, 6, 6, 1, 3, 3, 1, 1, "batch1_single_channel"},
        ConvShape{3, 2, 5, 6, 2, 2, 4, 2, 3, "pad_larger_than_kernel_half"},
        ConvShape{1, 1, 1, 1, 1, 1, 1, 1, 0, "all_ones"}),
    [](const auto& info) { return info.param.label; });

Tensor Values(Shape shape, const std::vector<double>& v) {
  Tensor t = Tensor::Zeros(DType::kFloat64, std::move(shape)).value();
  for (size_t i = 0; i < v.size(); ++i)
    t.SetFlat(static_cast<int64_t>(i), v[i]);
  return t;
}

LayerSpec Pool(int64_t ph, int64_t pw, int64_t stride) {
  LayerSpec s;
  s.name = "max_pool";
  s.pool = {ph, pw, stride};
  return s;
}

TEST(PoolEdges, TiesSendTheGradientToTheFirstMaximum) {
  // One 4x4 plane of equal values: each 2x2 window's first element wins.
  TensorMap in;
  in.emplace("x", Values({1, 1, 4, 4}, std::vector<double>(16, 0.5)));
  Tensor dout = Values({1, 1, 2, 2}, {1, 2, 3, 4});
  BackwardResult g = Backward(Pool(2, 2, 2), Impl::kNaive, in, dout).value();
  const std::vector<double> want = {1, 0, 2, 0, 0, 0, 0, 0,
                                    3, 0, 4, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < 16; ++i) {
    EXPECT_EQ(g.grads.at("dx").GetFlat(i), want[static_cast<size_t>(i)]) << i;
  }
}

TEST(PoolEdges, OverlappingWindowsAccumulate) {
  // 3x3 input, 2x2 pool, stride 1: four windows all containing the centre
  // maximum 9, which therefore receives the sum of dout.
  TensorMap in;
  in.emplace("x", Values({1, 1, 3, 3}, {1, 2, 3, 4, 9, 5, 6, 7, 8}));
  ForwardResult f = Forward(Pool(2, 2, 1), Impl::kNaive, in).value();
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(f.outputs.at("out").GetFlat(i), 9);
  Tensor dout = Values({1, 1, 2, 2}, {1, 10, 100, 1000});
  BackwardResult g = Backward(Pool(2, 2, 1), Impl::kNaive, in, dout).value();
  for (int64_t i = 0; i < 9; ++i) {
    EXPECT_EQ(g.grads.at("dx").GetFlat(i), i == 4 ? 1111 : 0) << i;
  }
}

TEST(PoolEdges, NonDivisibleSizesDropTheRemainder) {
  // 5x5, 2x2 pool, stride 2: output 2x2; row/col 4 is never pooled.
  std::vector<double> v(25);
  for (int i = 0; i < 25; ++i) v[static_cast<size_t>(i)] = i;
  TensorMap in;
  in.emplace("x", Values({1, 1, 5, 5}, v));
  ForwardResult f = Forward(Pool(2, 2, 2), Impl::kNaive, in).value();
  ASSERT_EQ(f.outputs.at("out").shape(), (Shape{1, 1, 2, 2}));
  const double want[] = {6, 8, 16, 18};
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(f.outputs.at("out").GetFlat(i), want[i]);
}

TEST(PoolEdges, GradCheckOnOverlappingNonSquareWindows) {
  TensorMap in;
  in.emplace("x",
             Tensor::RandomNormal(DType::kFloat64, {2, 3, 7, 9}, 11).value());
  GradCheckReport rep = GradCheck(Pool(3, 2, 2), Impl::kNaive, in, {}).value();
  EXPECT_LE(rep.results.at(0).rel_error, testing::kF64PoolGradTol);
}

TEST(ReluEdges, ZeroGetsZeroGradient) {
  TensorMap in;
  in.emplace("x", Values({4}, {-1, 0, 2, -0.0}));
  LayerSpec s;
  s.name = "relu";
  ForwardResult f = Forward(s, Impl::kNaive, in).value();
  BackwardResult g =
      Backward(s, Impl::kNaive, in, Values({4}, {5, 6, 7, 8})).value();
  const double out[] = {0, 0, 2, 0}, dx[] = {0, 0, 7, 0};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(f.outputs.at("out").GetFlat(i), out[i]);
    EXPECT_EQ(g.grads.at("dx").GetFlat(i), dx[i]);
  }
}

}  // namespace
}  // namespace layerserve
