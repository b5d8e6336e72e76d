#include "lib/tensor.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerserve {
namespace {

using ::testing::HasSubstr;

TEST(Tensor, ZerosHasShapeDtypeAlignmentAndZeros) {
  Tensor t = Tensor::Zeros(DType::kFloat32, {2, 3, 4, 5}).value();
  EXPECT_EQ(t.shape(), (Shape{2, 3, 4, 5}));
  EXPECT_EQ(t.size(), 120);
  EXPECT_EQ(t.nbytes(), 480u);
  EXPECT_EQ(t.rank(), 4);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  for (int64_t i = 0; i < t.size(); ++i) ASSERT_EQ(t.data<float>()[i], 0.0f);
}

TEST(Tensor, RejectsBadShapes) {
  struct Case {
    Shape shape;
    const char* message;
  } cases[] = {
      {{}, "rank must be 1..4, got 0"},
      {{1, 2, 3, 4, 5}, "rank must be 1..4, got 5"},
      {{2, 0, 3}, "dim 1 must be >= 1, got 0"},
      {{-4}, "dim 0 must be >= 1, got -4"},
      {{1 << 30, 1 << 30, 1 << 30, 1 << 30}, "overflows int64"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Tensor> t = Tensor::Zeros(DType::kFloat64, c.shape);
    ASSERT_FALSE(t.ok()) << ShapeString(c.shape);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr(c.message));
  }
}

TEST(Tensor, HugeButValidShapeFailsCleanlyNotCrash) {
  absl::StatusOr<Tensor> t =
      Tensor::Zeros(DType::kFloat64, {int64_t{1} << 40, 1 << 20});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(Tensor, LinspaceMatchesNumpy) {
  // numpy.linspace(-0.1, 0.5, num=96): start + i * step, last == stop.
  Tensor t = Tensor::Linspace(DType::kFloat64, {2, 3, 4, 4}, -0.1, 0.5).value();
  const double step = 0.6 / 95;
  EXPECT_EQ(t.GetFlat(0), -0.1);
  EXPECT_EQ(t.GetFlat(1), 1 * step + -0.1);
  EXPECT_EQ(t.GetFlat(50), 50 * step + -0.1);
  EXPECT_EQ(t.GetFlat(95), 0.5);
  // Exactly the values numpy 1.24 gives for np.linspace(-0.1, 0.5, 96)[[1,
  // 47]].
  EXPECT_EQ(t.GetFlat(1), -0.0936842105263158);
  EXPECT_EQ(t.GetFlat(47), 0.1968421052631579);
  Tensor one = Tensor::Linspace(DType::kFloat32, {1}, 3.0, 7.0).value();
  EXPECT_EQ(one.GetFlat(0), 3.0);
}

TEST(Tensor, RandomNormalIsSeededAndStandard) {
  Tensor a = Tensor::RandomNormal(DType::kFloat64, {100000}, 7).value();
  Tensor b = Tensor::RandomNormal(DType::kFloat64, {100000}, 7).value();
  Tensor c = Tensor::RandomNormal(DType::kFloat64, {100000}, 8).value();
  double mean = 0, sq = 0;
  bool same = true, differs = false;
  for (int64_t i = 0; i < a.size(); ++i) {
    same &= a.GetFlat(i) == b.GetFlat(i);
    differs |= a.GetFlat(i) != c.GetFlat(i);
    mean += a.GetFlat(i);
    sq += a.GetFlat(i) * a.GetFlat(i);
  }
  mean /= a.size();
  const double var = sq / a.size() - mean * mean;
  EXPECT_TRUE(same);
  EXPECT_TRUE(differs);
  EXPECT_NEAR(mean, 0.0, 0.015);  // 1/sqrt(1e5) = 0.003: 5 sigma
  EXPECT_NEAR(var, 1.0, 0.025);
  // Odd sizes fill the last element too.
  Tensor odd = Tensor::RandomNormal(DType::kFloat32, {3}, 1).value();
  EXPECT_NE(odd.GetFlat(2), 0.0);
}

TEST(Tensor, CloneAndCastAreDeep) {
  Tensor a = Tensor::Linspace(DType::kFloat64, {2, 2}, 0.1, 0.4).value();
  Tensor b = a.Clone();
  b.SetFlat(0, 9);
  EXPECT_EQ(a.GetFlat(0), 0.1);
  Tensor f = a.CastTo(DType::kFloat32);
  EXPECT_EQ(f.dtype(), DType::kFloat32);
  EXPECT_EQ(f.GetFlat(3), static_cast<double>(0.4f));
}

TEST(Tensor, OffsetAndUnravelAreInverse) {
  Tensor t = Tensor::Zeros(DType::kFloat32, {2, 3, 4, 5}).value();
  for (int64_t i = 0; i < t.size(); ++i) ASSERT_EQ(t.Offset(t.Unravel(i)), i);
  EXPECT_EQ(t.Unravel(119), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(t.Offset({1, 0, 0, 0}), 60);
}

TEST(RelError, IsTheSeedsDefinition) {
  Tensor a = Tensor::Zeros(DType::kFloat64, {3}).value();
  Tensor b = Tensor::Zeros(DType::kFloat64, {3}).value();
  a.SetFlat(0, 1.0);
  b.SetFlat(0, 1.1);  // 0.1 / 2.1
  EXPECT_DOUBLE_EQ(RelError(a, b).value(), (1.1 - 1.0) / 2.1);
  // Near zero the 1e-8 floor applies: 1e-9 / max(1e-8, 1e-9) = 0.1.
  a.SetFlat(1, 1e-9);
  EXPECT_DOUBLE_EQ(RelError(a, b).value(), 0.1);
  EXPECT_DOUBLE_EQ(MaxAbsError(a, b).value(), 1.1 - 1.0);
  // Symmetric, and zero on equal tensors.
  EXPECT_DOUBLE_EQ(RelError(b, a).value(), 0.1);
  EXPECT_EQ(RelError(a, a).value(), 0.0);
}

TEST(RelError, NaNIsNotHidden) {
  Tensor a = Tensor::Zeros(DType::kFloat64, {2}).value();
  Tensor b = Tensor::Zeros(DType::kFloat64, {2}).value();
  a.SetFlat(1, std::numeric_limits<double>::quiet_NaN());
  EXPECT_TRUE(std::isnan(RelError(a, b).value()));
}

TEST(RelError, ShapeMismatchIsAnError) {
  Tensor a = Tensor::Zeros(DType::kFloat64, {2, 3}).value();
  Tensor b = Tensor::Zeros(DType::kFloat32, {3, 2}).value();
  absl::StatusOr<double> e = RelError(a, b);
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(e.status().message(), HasSubstr("(2, 3) vs (3, 2)"));
}

TEST(DType, ParsesAndNames) {
  EXPECT_EQ(ParseDType("float32").value(), DType::kFloat32);
  EXPECT_EQ(ParseDType("f64").value(), DType::kFloat64);
  EXPECT_THAT(ParseDType("int8").status().message(),
              HasSubstr("expected float32, float64 or int64, got 'int8'"));
  EXPECT_EQ(ParseDType("int64").value(), DType::kInt64);
  EXPECT_EQ(DTypeName(DType::kInt64), "int64");
  EXPECT_EQ(ItemSize(DType::kInt64), 8u);
  EXPECT_FALSE(Tensor::RandomNormal(DType::kInt64, {2}, 1).ok());
  Tensor labels = Tensor::Zeros(DType::kInt64, {3}).value();
  labels.SetFlat(2, 9007199254740992.0);  // 2^53 round-trips
  EXPECT_EQ(labels.data<int64_t>()[2], int64_t{1} << 53);
  EXPECT_EQ(DTypeName(DType::kFloat32), "float32");
  EXPECT_EQ(ItemSize(DType::kFloat64), 8u);
  EXPECT_EQ(ShapeString({3}), "(3,)");
}

}  // namespace
}  // namespace layerserve

namespace layerserve {
namespace {

TEST(ScaledError, IsMaxDiffOverTheReferencesScale) {
  Tensor ref = Tensor::Zeros(DType::kFloat64, {3}).value();
  Tensor b = Tensor::Zeros(DType::kFloat64, {3}).value();
  ref.SetFlat(0, 4.0);
  ref.SetFlat(1, 1e-12);  // cancels to ~0: rel_error blows up here
  b.SetFlat(0, 4.0);
  b.SetFlat(1, 2e-12);
  EXPECT_DOUBLE_EQ(ScaledError(ref, b).value(), 1e-12 / 4.0);
  EXPECT_GT(RelError(ref, b).value(), 1e-5);
  // All-zero reference: the absolute difference.
  Tensor zero = Tensor::Zeros(DType::kFloat64, {3}).value();
  EXPECT_DOUBLE_EQ(ScaledError(zero, b).value(), 4.0);
  EXPECT_FALSE(
      ScaledError(ref, Tensor::Zeros(DType::kFloat64, {2}).value()).ok());
}

}  // namespace
}  // namespace layerserve
