// The naive kernels of the rest of the course's catalog (affine, batchnorm,
// spatial batchnorm, dropout, softmax and SVM losses), checked against the
// course's known values and by float64 numerical gradients.
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/gradcheck.h"
#include "lib/layers/affine.h"
#include "lib/layers/batchnorm.h"
#include "lib/layers/dropout.h"
#include "lib/layers/loss.h"

namespace layerserve {
namespace {

Tensor Randn(Shape s, uint64_t seed) {
  return Tensor::RandomNormal(DType::kFloat64, std::move(s), seed).value();
}
Tensor Zeros(Shape s) {
  return Tensor::Zeros(DType::kFloat64, std::move(s)).value();
}

// Checks the analytic gradient `analytic` of sum(f(x) * dout) w.r.t. `x`.
void ExpectGradient(const std::function<Tensor()>& f, Tensor& x,
                    const Tensor& dout, const Tensor& analytic, double tol,
                    const char* what) {
  Tensor num =
      NumericalGradient(
          [&](const Tensor&) -> absl::StatusOr<Tensor> { return f(); }, x, dout)
          .value();
  EXPECT_LE(RelError(num, analytic).value(), tol) << what;
}

TEST(Affine, ForwardMatchesTheCourseValues) {
  Tensor x = Tensor::Linspace(DType::kFloat64, {2, 4, 5, 6}, -0.1, 0.5).value();
  Tensor w = Tensor::Linspace(DType::kFloat64, {120, 3}, -0.2, 0.3).value();
  Tensor b = Tensor::Linspace(DType::kFloat64, {3}, -0.3, 0.1).value();
  ASSERT_EQ(
      AffineOutputShape("affine", x.shape(), w.shape(), b.shape()).value(),
      (Shape{2, 3}));
  Tensor out = Zeros({2, 3});
  ASSERT_TRUE(naive::AffineForward(x, w, b, &out).ok());
  const double want[] = {1.49834967, 1.70660132, 1.91485297,
                         3.25553199, 3.5141327,  3.77273342};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(out.GetFlat(i), want[i], 5e-9) << i;
}

TEST(Affine, GradientsCheck) {
  Tensor x = Randn({10, 2, 3}, 1), w = Randn({6, 5}, 2), b = Randn({5}, 3);
  Tensor dout = Randn({10, 5}, 4);
  Tensor dx = Zeros({10, 2, 3}), dw = Zeros({6, 5}), db = Zeros({5});
  ASSERT_TRUE(naive::AffineBackward(x, w, dout, &dx, &dw, &db).ok());
  auto f = [&] {
    Tensor out = Zeros({10, 5});
    EXPECT_TRUE(naive::AffineForward(x, w, b, &out).ok());
    return out;
  };
  ExpectGradient(f, x, dout, dx, 1e-8, "dx");
  ExpectGradient(f, w, dout, dw, 1e-8, "dw");
  ExpectGradient(f, b, dout, db, 1e-8, "db");
}

TEST(Affine, ValidationNamesTheFields) {
  EXPECT_THAT(
      AffineOutputShape("affine", {4, 2, 3}, {5, 7}, {7}).status().message(),
      ::testing::HasSubstr("affine: input x has 6 features per sample"));
  EXPECT_THAT(
      AffineOutputShape("affine", {4, 6}, {6, 7}, {8}).status().message(),
      ::testing::HasSubstr("input b has 8 elements but w has 7 outputs"));
  EXPECT_THAT(AffineOutputShape("affine", {4}, {6, 7}, {7}).status().message(),
              ::testing::HasSubstr("input x must have rank >= 2"));
}

struct BnFixture {
  Tensor x, gamma, beta, rm, rv;
  BatchnormTensors in() const { return {&x, &gamma, &beta, &rm, &rv}; }
};

BnFixture MakeBn(bool spatial, uint64_t seed) {
  const Shape xs = spatial ? Shape{4, 3, 5, 6} : Shape{20, 3};
  BnFixture b{Randn(xs, seed), Randn({3}, seed + 1), Randn({3}, seed + 2),
              Randn({3}, seed + 3), Randn({3}, seed + 4)};
  for (int64_t i = 0; i < b.x.size(); ++i)
    b.x.SetFlat(i, 5 + 4 * b.x.GetFlat(i));
  for (int c = 0; c < 3; ++c) b.rv.SetFlat(c, 1 + std::abs(b.rv.GetFlat(c)));
  return b;
}

class Batchnorm : public ::testing::TestWithParam<bool> {};

TEST_P(Batchnorm, TrainModeNormalizesPerFeatureAndUpdatesRunningStats) {
  const bool spatial = GetParam();
  BnFixture b = MakeBn(spatial, 10);
  BatchnormParam p;
  Tensor out = Zeros(b.x.shape()), nm = Zeros({3}), nv = Zeros({3});
  ASSERT_TRUE(naive::BatchnormForward(b.in(), p, spatial, &out, &nm, &nv).ok());
  const int64_t inner = spatial ? 30 : 1, outer = spatial ? 4 : 20;
  for (int64_t c = 0; c < 3; ++c) {
    double s = 0, sq = 0, xs = 0, xsq = 0;
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        const int64_t k = (o * 3 + c) * inner + i;
        s += out.GetFlat(k);
        sq += out.GetFlat(k) * out.GetFlat(k);
        xs += b.x.GetFlat(k);
        xsq += b.x.GetFlat(k) * b.x.GetFlat(k);
      }
    const double m = static_cast<double>(outer * inner);
    const double mean = s / m, var = sq / m - mean * mean;
    // The course's check: means ~ beta, stds ~ |gamma|.
    EXPECT_NEAR(mean, b.beta.GetFlat(c), 1e-12);
    EXPECT_NEAR(std::sqrt(var), std::abs(b.gamma.GetFlat(c)), 1e-5);
    const double bm = xs / m, bv = xsq / m - bm * bm;
    EXPECT_NEAR(nm.GetFlat(c), 0.9 * b.rm.GetFlat(c) + 0.1 * bm, 1e-12);
    EXPECT_NEAR(nv.GetFlat(c), 0.9 * b.rv.GetFlat(c) + 0.1 * bv, 1e-10);
  }
}

TEST_P(Batchnorm, TestModeUsesRunningStats) {
  const bool spatial = GetParam();
  BnFixture b = MakeBn(spatial, 20);
  BatchnormParam p;
  p.mode = BatchnormParam::Mode::kTest;
  Tensor out = Zeros(b.x.shape()), nm = Zeros({3}), nv = Zeros({3});
  ASSERT_TRUE(naive::BatchnormForward(b.in(), p, spatial, &out, &nm, &nv).ok());
  const int64_t k = b.x.size() - 1, c = 2;  // last element is channel 2
  EXPECT_NEAR(out.GetFlat(k),
              b.gamma.GetFlat(c) * (b.x.GetFlat(k) - b.rm.GetFlat(c)) /
                      std::sqrt(b.rv.GetFlat(c) + 1e-5) +
                  b.beta.GetFlat(c),
              1e-12);
  EXPECT_EQ(nm.GetFlat(1), b.rm.GetFlat(1));
  EXPECT_EQ(nv.GetFlat(1), b.rv.GetFlat(1));
}

TEST_P(Batchnorm, GradientsCheckInBothModes) {
  const bool spatial = GetParam();
  for (auto mode :
       {BatchnormParam::Mode::kTrain, BatchnormParam::Mode::kTest}) {
    BnFixture b = MakeBn(spatial, 30);
    BatchnormParam p;
    p.mode = mode;
    Tensor dout = Randn(b.x.shape(), 99);
    Tensor dx = Zeros(b.x.shape()), dg = Zeros({3}), db = Zeros({3});
    ASSERT_TRUE(
        naive::BatchnormBackward(b.in(), p, spatial, dout, &dx, &dg, &db).ok());
    auto f = [&] {
      Tensor out = Zeros(b.x.shape()), nm = Zeros({3}), nv = Zeros({3});
      EXPECT_TRUE(
          naive::BatchnormForward(b.in(), p, spatial, &out, &nm, &nv).ok());
      return out;
    };
    // Train-mode dx sums ~100 cancelling terms per channel, so its small
    // elements carry ~1e-9 absolute noise from the centered difference.
    ExpectGradient(f, b.x, dout, dx, 1e-5, "dx");
    ExpectGradient(f, b.gamma, dout, dg, 1e-8, "dgamma");
    ExpectGradient(f, b.beta, dout, db, 1e-8, "dbeta");
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, Batchnorm, ::testing::Values(false, true),
                         [](const auto& info) {
                           return info.param ? "spatial" : "flat";
                         });

TEST(BatchnormValidation, NamesTheFields) {
  BatchnormParam p;
  EXPECT_THAT(BatchnormOutputShape("spatial_batchnorm", true, {2, 3, 4}, {3},
                                   {3}, {3}, {3}, p)
                  .status()
                  .message(),
              ::testing::HasSubstr("input x must have rank 4 (N, C, H, W)"));
  EXPECT_THAT(
      BatchnormOutputShape("batchnorm", false, {2, 3}, {3}, {3}, {4}, {3}, p)
          .status()
          .message(),
      ::testing::HasSubstr("batchnorm: input running_mean must have shape (3,) "
                           "(x.shape[1]), got (4,)"));
  p.eps = 0;
  EXPECT_THAT(
      BatchnormOutputShape("batchnorm", false, {2, 3}, {3}, {3}, {3}, {3}, p)
          .status()
          .message(),
      ::testing::HasSubstr("bn_param.eps must be finite and > 0, got 0"));
}

TEST(Dropout, KeepsAboutPAndPreservesTheMean) {
  Tensor x = Zeros({100000});
  x.Fill(2.0);
  DropoutParam p{0.3, true, 123};
  Tensor out = Zeros({100000});
  ASSERT_TRUE(naive::DropoutForward(x, p, &out).ok());
  double kept = 0, sum = 0;
  for (int64_t i = 0; i < out.size(); ++i) {
    kept += out.GetFlat(i) != 0;
    sum += out.GetFlat(i);
    ASSERT_TRUE(out.GetFlat(i) == 0 ||
                std::abs(out.GetFlat(i) - 2.0 / 0.3) < 1e-12);
  }
  EXPECT_NEAR(kept / 100000, 0.3, 0.01);  // 7 sigma
  EXPECT_NEAR(sum / 100000, 2.0, 0.07);
  // Same seed, same mask; another seed, another mask.
  Tensor again = Zeros({100000}), other = Zeros({100000});
  ASSERT_TRUE(naive::DropoutForward(x, p, &again).ok());
  ASSERT_TRUE(naive::DropoutForward(x, {0.3, true, 124}, &other).ok());
  EXPECT_EQ(RelError(out, again).value(), 0);
  EXPECT_GT(RelError(out, other).value(), 0.5);
}

TEST(Dropout, TestModeIsIdentityAndGradientsCheck) {
  Tensor x = Randn({4, 50}, 5), dout = Randn({4, 50}, 6);
  Tensor out = Zeros({4, 50});
  ASSERT_TRUE(naive::DropoutForward(x, {0.6, false, 1}, &out).ok());
  EXPECT_EQ(RelError(out, x).value(), 0);
  const DropoutParam p{0.6, true, 77};
  Tensor dx = Zeros({4, 50});
  ASSERT_TRUE(naive::DropoutBackward(x, p, dout, &dx).ok());
  auto f = [&] {
    Tensor o = Zeros({4, 50});
    EXPECT_TRUE(naive::DropoutForward(x, p, &o).ok());
    return o;
  };
  ExpectGradient(f, x, dout, dx, 1e-9, "dx");
  EXPECT_THAT(
      ValidateDropoutParam("dropout", {0, true, 0}).message(),
      ::testing::HasSubstr("dropout_param.p (the keep probability) must "
                           "be in (0, 1], got 0"));
  EXPECT_FALSE(ValidateDropoutParam("dropout", {1.5, true, 0}).ok());
  EXPECT_TRUE(ValidateDropoutParam("dropout", {1, true, 0}).ok());
}

class Losses : public ::testing::TestWithParam<LossKind> {};

TEST_P(Losses, GradientChecksAndKnownValue) {
  const int64_t N = 50, C = 10;
  Tensor x = Randn({N, C}, 7);
  for (int64_t i = 0; i < x.size(); ++i) x.SetFlat(i, 0.001 * x.GetFlat(i));
  std::vector<int64_t> y(N);
  for (int64_t n = 0; n < N; ++n) y[n] = (n * 7) % C;
  ASSERT_TRUE(ValidateLabels("loss", y.data(), N, C).ok());
  double loss = 0;
  Tensor dx = Zeros({N, C});
  ASSERT_TRUE(naive::Loss(GetParam(), x, y.data(), 1.0, &loss, &dx).ok());
  // The course's sanity values for tiny scores: log(C) for softmax, C - 1
  // for the SVM (every margin is ~1).
  if (GetParam() == LossKind::kSoftmax) {
    EXPECT_NEAR(loss, std::log(10.0), 1e-3);
  } else {
    EXPECT_NEAR(loss, 9.0, 0.05);
  }
  Tensor one = Zeros({1});
  one.Fill(1.0);
  auto f = [&] {
    Tensor l = Zeros({1});
    double v = 0;
    Tensor scratch = Zeros({N, C});
    EXPECT_TRUE(naive::Loss(GetParam(), x, y.data(), 1.0, &v, &scratch).ok());
    l.SetFlat(0, v);
    return l;
  };
  ExpectGradient(f, x, one, dx, GetParam() == LossKind::kSoftmax ? 1e-7 : 1e-6,
                 "dx");
  // dloss scales dx.
  Tensor dx3 = Zeros({N, C});
  ASSERT_TRUE(naive::Loss(GetParam(), x, y.data(), 3.0, &loss, &dx3).ok());
  EXPECT_NEAR(dx3.GetFlat(5), 3 * dx.GetFlat(5), 1e-15);
}

INSTANTIATE_TEST_SUITE_P(Kinds, Losses,
                         ::testing::Values(LossKind::kSoftmax, LossKind::kSvm),
                         [](const auto& info) {
                           return info.param == LossKind::kSoftmax ? "softmax"
                                                                   : "svm";
                         });

TEST(LossValidation, LabelsAndShapes) {
  const int64_t y[] = {0, 3, 5};
  EXPECT_THAT(ValidateLabels("softmax_loss", y, 3, 5).message(),
              ::testing::HasSubstr(
                  "softmax_loss: label y[2] = 5 is out of range [0, 5)"));
  const int64_t neg[] = {-1};
  EXPECT_FALSE(ValidateLabels("svm_loss", neg, 1, 5).ok());
  EXPECT_THAT(ValidateLossInputs("svm_loss", {3, 5}, {4}).message(),
              ::testing::HasSubstr("input y must have shape (3,)"));
  EXPECT_THAT(ValidateLossInputs("svm_loss", {3, 5, 1}, {3}).message(),
              ::testing::HasSubstr("input x must have rank 2 (N, C)"));
}

}  // namespace
}  // namespace layerserve
