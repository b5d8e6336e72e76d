#include "lib/gradcheck.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/registry.h"

namespace layerserve {
namespace {

TEST(NumericalGradient, OfASmoothFunctionIsItsDerivative) {
  // f(x) = x^3 elementwise: d/dx sum(f(x) * dout) = 3 x^2 dout.
  Tensor x = Tensor::Linspace(DType::kFloat64, {2, 3}, -1.5, 2.0).value();
  Tensor dout = Tensor::Linspace(DType::kFloat64, {2, 3}, 0.5, -0.7).value();
  auto f = [](const Tensor& in) -> absl::StatusOr<Tensor> {
    Tensor out = in.Clone();
    for (int64_t i = 0; i < out.size(); ++i) {
      out.SetFlat(i, std::pow(in.GetFlat(i), 3));
    }
    return out;
  };
  Tensor g = NumericalGradient(f, x, dout).value();
  for (int64_t i = 0; i < x.size(); ++i) {
    const double want = 3 * x.GetFlat(i) * x.GetFlat(i) * dout.GetFlat(i);
    // Truncation error of the centered difference is h^2 f''' / 6 = 1e-10.
    EXPECT_NEAR(g.GetFlat(i), want, 1e-8) << i;
  }
  // x was restored.
  EXPECT_EQ(x.GetFlat(0), -1.5);
}

TEST(GradCheck, FindsAWrongGradientAndPointsAtIt) {
  // The check itself must fail loudly: compare numeric conv gradients with
  // a deliberately corrupted analytic one through the same metric.
  TensorMap in;
  in.emplace("x",
             Tensor::RandomNormal(DType::kFloat64, {1, 2, 4, 4}, 1).value());
  in.emplace("w",
             Tensor::RandomNormal(DType::kFloat64, {2, 2, 3, 3}, 2).value());
  in.emplace("b", Tensor::RandomNormal(DType::kFloat64, {2}, 3).value());
  LayerSpec spec;
  spec.name = "conv";
  spec.conv = {1, 1};
  GradCheckOptions opt;
  opt.return_gradients = true;
  opt.seed = 9;
  GradCheckReport rep = GradCheck(spec, Impl::kNaive, in, opt).value();
  ASSERT_EQ(rep.results.size(), 3u);
  EXPECT_EQ(rep.impl_name, "naive");
  const GradCheckResult& dx = rep.results[0];
  EXPECT_EQ(dx.input, "x");
  EXPECT_LT(dx.rel_error, 1e-7);
  ASSERT_EQ(dx.worst_index.size(), 4u);
  ASSERT_EQ(dx.numeric.shape(), (Shape{1, 2, 4, 4}));
  Tensor corrupted = dx.analytic.Clone();
  corrupted.SetFlat(corrupted.Offset({0, 1, 2, 3}),
                    1.0 + corrupted.GetFlat(corrupted.Offset({0, 1, 2, 3})));
  EXPECT_GT(RelError(dx.numeric, corrupted).value(), 1e-3);
  // Same dout from the same seed: the result is reproducible.
  GradCheckReport again = GradCheck(spec, Impl::kNaive, in, opt).value();
  EXPECT_EQ(again.results[1].rel_error, rep.results[1].rel_error);
}

TEST(GradCheck, UsesTheGivenDout) {
  TensorMap in;
  in.emplace("x",
             Tensor::Linspace(DType::kFloat64, {1, 1, 2, 2}, -1, 2).value());
  Tensor dout = Tensor::Linspace(DType::kFloat64, {1, 1, 2, 2}, 1, 4).value();
  LayerSpec spec;
  spec.name = "relu";
  GradCheckOptions opt;
  opt.dout = &dout;
  opt.return_gradients = true;
  GradCheckReport rep = GradCheck(spec, Impl::kNaive, in, opt).value();
  // x = [-1, 0, 1, 2]: relu' = [0, *, 1, 1]; at 0 the centered difference
  // sees half a slope (0.5 * dout) while the analytic gradient is 0.
  const Tensor& num = rep.results[0].numeric;
  EXPECT_NEAR(num.GetFlat(0), 0, 1e-12);
  EXPECT_NEAR(num.GetFlat(1), 1.0, 1e-9);  // 0.5 * dout[1] = 0.5 * 2
  EXPECT_NEAR(num.GetFlat(2), 3.0, 1e-9);
  EXPECT_NEAR(num.GetFlat(3), 4.0, 1e-9);
  EXPECT_EQ(rep.results[0].worst_index, (std::vector<int64_t>{0, 0, 0, 1}));
  EXPECT_NEAR(rep.results[0].rel_error, 1.0, 1e-9);
}

}  // namespace
}  // namespace layerserve
