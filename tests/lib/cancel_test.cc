#include "lib/cancel.h"

#include <atomic>
#include <chrono>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/gradcheck.h"
#include "lib/registry.h"

namespace layerserve {
namespace {

TensorMap BigConvInputs() {
  TensorMap in;
  in.emplace("x",
             Tensor::RandomNormal(DType::kFloat64, {8, 16, 64, 64}, 1).value());
  in.emplace("w",
             Tensor::RandomNormal(DType::kFloat64, {16, 16, 5, 5}, 2).value());
  in.emplace("b", Tensor::RandomNormal(DType::kFloat64, {16}, 3).value());
  return in;
}

LayerSpec ConvSpec() {
  LayerSpec s;
  s.name = "conv";
  s.conv = {1, 2};
  return s;
}

TEST(Cancel, NoScopeMeansGoOn) { EXPECT_TRUE(CheckCancelled().ok()); }

TEST(Cancel, NaiveConvStopsSoonAfterCancellation) {
  // ~1.7 GFLOP of naive conv: seconds of work if it ran to the end.
  TensorMap in = BigConvInputs();
  std::atomic<int> checks{0};
  CancellationScope scope([&]() -> absl::Status {
    if (++checks > 10) return absl::CancelledError("client went away");
    return absl::OkStatus();
  });
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<ForwardResult> r = Forward(ConvSpec(), Impl::kNaive, in);
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(checks.load(), 11);  // stopped at the first failed check
  // Not a timing assertion on the kernel: only that it did not run to the
  // end (which takes several seconds).
  EXPECT_LT(elapsed, std::chrono::seconds(2));
}

TEST(Cancel, BackwardAndGradCheckStopToo) {
  TensorMap in = BigConvInputs();
  CancellationScope scope(
      [] { return absl::DeadlineExceededError("deadline passed"); });
  Tensor dout = Tensor::Zeros(DType::kFloat64, {8, 16, 64, 64}).value();
  EXPECT_EQ(Backward(ConvSpec(), Impl::kNaive, in, dout).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(GradCheck(ConvSpec(), Impl::kNaive, in, {}).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  LayerSpec pool;
  pool.name = "max_pool";
  pool.pool = {2, 2, 2};
  TensorMap px;
  px.emplace("x", Tensor::Zeros(DType::kFloat64, {2, 2, 4, 4}).value());
  EXPECT_EQ(Forward(pool, Impl::kNaive, px).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(Cancel, ScopesNestAndRestore) {
  {
    CancellationScope outer([] { return absl::CancelledError("outer"); });
    {
      CancellationScope inner([] { return absl::OkStatus(); });
      EXPECT_TRUE(CheckCancelled().ok());
    }
    EXPECT_EQ(CheckCancelled().message(), "outer");
  }
  EXPECT_TRUE(CheckCancelled().ok());
}

}  // namespace
}  // namespace layerserve
