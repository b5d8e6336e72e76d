// The cost model of lib/limits (elements per tensor and per call, the
// multiply-adds of a forward pass and of a gradient check) and the element
// sampling of the gradient check's sampled mode.
#include "lib/limits.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/gradcheck.h"
#include "lib/registry.h"

namespace layerserve {
namespace {

using ::testing::HasSubstr;

DescMap ConvDescs(Shape x, Shape w) {
  const int64_t f = w[0];
  return {{"x", {DType::kFloat64, std::move(x)}},
          {"w", {DType::kFloat64, std::move(w)}},
          {"b", {DType::kFloat64, {f}}}};
}

LayerSpec Conv(int64_t stride, int64_t pad) {
  LayerSpec s;
  s.name = "conv";
  s.conv = {stride, pad};
  return s;
}

TEST(ForwardMacsTest, ConvIsOutputTimesKernelVolumePlusElementwise) {
  // out (2, 4, 8, 8) = 512 elements, each a dot product of 3 * 3 * 3.
  const DescMap d = ConvDescs({2, 3, 8, 8}, {4, 3, 3, 3});
  const int64_t elementwise = (384 + 108 + 4) + 512 + 512;
  EXPECT_EQ(ForwardMacs(Conv(1, 1), d), 512 * 27 + elementwise);
}

TEST(ForwardMacsTest, PoolAndRelu) {
  LayerSpec pool;
  pool.name = "max_pool";
  pool.pool = {2, 3, 1};
  const DescMap x = {{"x", {DType::kFloat32, {1, 2, 6, 6}}}};
  // out (1, 2, 5, 4) = 40 elements, each a max over 2 * 3.
  EXPECT_EQ(ForwardMacs(pool, x), 40 + 72 + 40 * 6);
  LayerSpec relu;
  relu.name = "relu";
  EXPECT_EQ(ForwardMacs(relu, x), 72 + 72);
}

TEST(ForwardMacsTest, SaturatesInsteadOfOverflowing) {
  // Each tensor fits int64 (2^44 elements); the work, 2^44 outputs times
  // 2^20 channels, does not.
  const DescMap d =
      ConvDescs({1, 1 << 20, 1 << 12, 1 << 12}, {1 << 20, 1 << 20, 1, 1});
  EXPECT_EQ(ForwardMacs(Conv(1, 0), d), std::numeric_limits<int64_t>::max());
  EXPECT_THAT(std::string(CheckGradCheckCost(Conv(1, 0), d, 1, {}).message()),
              HasSubstr("9223372036854775807 in all"));
}

TEST(GradCheckCostTest, FullAndSampled) {
  const DescMap d = ConvDescs({2, 3, 8, 8}, {4, 3, 3, 3});
  EXPECT_EQ(GradCheckElements(Conv(1, 1), d, 0), 384 + 108 + 4);
  EXPECT_EQ(GradCheckElements(Conv(1, 1), d, 10), 10 + 10 + 4);
  CallLimits limits;
  limits.max_gradcheck_macs = 2 * 24 * ForwardMacs(Conv(1, 1), d);
  EXPECT_TRUE(CheckGradCheckCost(Conv(1, 1), d, 10, limits).ok());
  const absl::Status over = CheckGradCheckCost(Conv(1, 1), d, 11, limits);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(over.message()),
              HasSubstr("would run 52 forward passes (2 for each of the 26 "
                        "checked elements of x, w, b, at most 11 per input)"));
  // Invalid requests are INVALID_ARGUMENT first, whatever their cost.
  EXPECT_EQ(CheckGradCheckCost(Conv(0, 1), d, 0, limits).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CallLimitsTest, PerTensorThenPerCallByKind) {
  LayerSpec relu;
  relu.name = "relu";
  const DescMap x = {{"x", {DType::kFloat64, {1000}}}};
  CallLimits limits;
  limits.max_tensor_elements = 1000;
  limits.max_request_elements = 3000;
  // Forward holds x and out; Backward adds dout and dx.
  EXPECT_TRUE(CheckCallLimits(relu, x, CallKind::kForward, limits).ok());
  const absl::Status backward =
      CheckCallLimits(relu, x, CallKind::kBackward, limits);
  EXPECT_EQ(backward.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(backward.message()),
              HasSubstr("relu: this Backward call would hold 4000 tensor "
                        "elements at once"));
  limits.max_tensor_elements = 999;
  EXPECT_THAT(
      std::string(
          CheckCallLimits(relu, x, CallKind::kForward, limits).message()),
      HasSubstr("relu: input x would have 1000 elements (shape (1000,)), more "
                "than the limit of 999 elements (--max_tensor_elements)"));
}

TEST(SampleIndicesTest, DistinctAscendingInRangeAndReproducible) {
  const std::vector<int64_t> a = SampleIndices(1000, 50, 7, 0);
  ASSERT_EQ(a.size(), 50u);
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 50u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_GE(a.front(), 0);
  EXPECT_LT(a.back(), 1000);
  EXPECT_EQ(SampleIndices(1000, 50, 7, 0), a);
  EXPECT_NE(SampleIndices(1000, 50, 8, 0), a);  // another seed
  EXPECT_NE(SampleIndices(1000, 50, 7, 1), a);  // another input
  // As many as there are: every index.
  EXPECT_EQ(SampleIndices(4, 9, 7, 0), (std::vector<int64_t>{0, 1, 2, 3}));
  // Not biased to one end: both halves get some of 50 draws from 1000.
  EXPECT_LT(a.front(), 500);
  EXPECT_GE(a.back(), 500);
}

}  // namespace
}  // namespace layerserve
