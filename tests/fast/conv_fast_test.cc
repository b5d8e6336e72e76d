// The fast convolution beyond the sweep: the seed notebook's fast-vs-naive
// cells, implementation names, the primitive cache (bounded, hit, safe under
// concurrency), oneDNN's right padding, the thread budget and error mapping.
#include <atomic>
#include <cstring>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/layers/conv.h"
#include "lib/layers/fast/conv_im2col.h"
#include "lib/layers/fast/conv_onednn.h"
#include "lib/layers/fast/onednn_engine.h"
#include "lib/registry.h"
#include "lib/threading.h"
#include "tests/fast/parity.h"

namespace layerserve {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Tensor Normal(DType dtype, const Shape& shape, uint64_t seed) {
  return Tensor::RandomNormal(dtype, shape, seed).value();
}

TensorMap ConvInputs(DType dtype, const Shape& x, const Shape& w,
                     uint64_t seed) {
  TensorMap in;
  in.emplace("x", Normal(dtype, x, seed));
  in.emplace("w", Normal(dtype, w, seed + 1));
  in.emplace("b", Normal(dtype, {w[0]}, seed + 2));
  return in;
}

LayerSpec Spec(const std::string& name, int64_t stride, int64_t pad) {
  LayerSpec s;
  s.name = name;
  s.conv = ConvParam{stride, pad};
  return s;
}

// ---- the seed's cells ------------------------------------------------------

// The seed notebook: x (100,3,31,31), w (25,3,3,3), stride 2, pad 1, dout
// (100,25,16,16); it printed rel_error 6e-11 (out), 3e-11 (dx), 2e-11 (dw),
// 0 (db) between its fast and naive layers.
TEST(ConvFastSeed, MatchesNaiveLikeTheNotebook) {
  const LayerSpec spec = Spec("conv", 2, 1);
  const TensorMap in =
      ConvInputs(DType::kFloat64, {100, 3, 31, 31}, {25, 3, 3, 3}, 231);
  const Tensor dout = Normal(DType::kFloat64, {100, 25, 16, 16}, 232);

  auto naive_f = Forward(spec, Impl::kNaive, in);
  auto fast_f = Forward(spec, Impl::kFast, in);
  ASSERT_TRUE(naive_f.ok()) << naive_f.status();
  ASSERT_TRUE(fast_f.ok()) << fast_f.status();
  EXPECT_EQ(fast_f->impl_name, "im2col+openblas");
  const double out_err =
      RelError(naive_f->outputs.at("out"), fast_f->outputs.at("out")).value();

  auto naive_b = Backward(spec, Impl::kNaive, in, dout);
  auto fast_b = Backward(spec, Impl::kFast, in, dout);
  ASSERT_TRUE(naive_b.ok()) << naive_b.status();
  ASSERT_TRUE(fast_b.ok()) << fast_b.status();
  std::map<std::string, double> err;
  for (const char* g : {"dx", "dw", "db"}) {
    err[g] = RelError(naive_b->grads.at(g), fast_b->grads.at(g)).value();
  }
  std::printf("seed conv cell: out %.3g dx %.3g dw %.3g db %.3g\n", out_err,
              err["dx"], err["dw"], err["db"]);
  // The seed's rel_error is per element, so it is set by the output closest
  // to zero (cancellation), here ~5e-10; the error scaled by the largest
  // output (tolerances.h) is ~1e-16.
  EXPECT_LT(out_err, 1e-8);
  const testing::TensorComparison scaled = testing::Compare(
      fast_f->outputs.at("out"), naive_f->outputs.at("out"), nullptr,
      /*exact=*/false, testing::kFloat64ScaledTolerance);
  EXPECT_TRUE(scaled.pass) << "scaled error " << scaled.error;
  EXPECT_LT(err["dx"], 1e-9);
  EXPECT_LT(err["dw"], 1e-9);
  EXPECT_LT(err["db"], 1e-9);
  // Not vacuous: the outputs are real numbers of order 1 and more.
  EXPECT_GT(
      MaxAbsError(naive_f->outputs.at("out"),
                  Tensor::Zeros(DType::kFloat64, {100, 25, 16, 16}).value())
          .value(),
      1.0);
}

// The seed's pooling cell: (100,3,32,32) 2x2 stride 2, difference 0.
TEST(ConvFastSeed, PoolMatchesNaiveExactly) {
  LayerSpec spec;
  spec.name = "max_pool";
  spec.pool = PoolParam{2, 2, 2};
  TensorMap in;
  in.emplace("x", Normal(DType::kFloat64, {100, 3, 32, 32}, 321));
  const Tensor dout = Normal(DType::kFloat64, {100, 3, 16, 16}, 322);
  auto naive_f = Forward(spec, Impl::kNaive, in);
  auto fast_f = Forward(spec, Impl::kFast, in);
  ASSERT_TRUE(naive_f.ok() && fast_f.ok());
  EXPECT_EQ(
      RelError(naive_f->outputs.at("out"), fast_f->outputs.at("out")).value(),
      0.0);
  auto naive_b = Backward(spec, Impl::kNaive, in, dout);
  auto fast_b = Backward(spec, Impl::kFast, in, dout);
  ASSERT_TRUE(naive_b.ok() && fast_b.ok());
  EXPECT_EQ(RelError(naive_b->grads.at("dx"), fast_b->grads.at("dx")).value(),
            0.0);
}

// ---- implementation names ---------------------------------------------------

TEST(ConvFastImpl, Float32RunsOnOneDnnAndFloat64OnOpenBlas) {
  for (const char* layer : {"conv", "conv_relu"}) {
    const LayerSpec spec = Spec(layer, 1, 1);
    const TensorMap f32 =
        ConvInputs(DType::kFloat32, {2, 8, 10, 10}, {16, 8, 3, 3}, 5);
    const TensorMap f64 =
        ConvInputs(DType::kFloat64, {2, 8, 10, 10}, {16, 8, 3, 3}, 5);
    const Tensor dout32 = Normal(DType::kFloat32, {2, 16, 10, 10}, 6);
    const Tensor dout64 = Normal(DType::kFloat64, {2, 16, 10, 10}, 6);

    auto f = Forward(spec, Impl::kFast, f32);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_THAT(f->impl_name, StartsWith("onednn:")) << layer;
    auto b = Backward(spec, Impl::kFast, f32, dout32);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_THAT(b->impl_name, HasSubstr("onednn:")) << layer;

    f = Forward(spec, Impl::kFast, f64);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->impl_name, "im2col+openblas") << layer;
    b = Backward(spec, Impl::kFast, f64, dout64);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_THAT(b->impl_name, HasSubstr("im2col+openblas")) << layer;
  }
  // The plain conv layer reports exactly the conv's name.
  Tensor out = Tensor::Zeros(DType::kFloat32, {1, 4, 6, 6}).value();
  const TensorMap in =
      ConvInputs(DType::kFloat32, {1, 4, 6, 6}, {4, 4, 3, 3}, 9);
  auto name = fast::ConvForward(in.at("x"), in.at("w"), in.at("b"),
                                ConvParam{1, 1}, &out);
  ASSERT_TRUE(name.ok());
  EXPECT_THAT(*name, StartsWith("onednn:"));
  EXPECT_GT(name->size(), std::string("onednn:").size());
}

// ---- oneDNN's right padding -------------------------------------------------

TEST(ConvFastOneDnn, RightPadReachesExactlyTheLastElementRead) {
  EXPECT_EQ(fast::onednn::RightPad(31, 3, 2, 1), 1);  // the seed's conv
  EXPECT_EQ(fast::onednn::RightPad(32, 3, 2, 1), 0);
  EXPECT_EQ(fast::onednn::RightPad(11, 1, 3, 0), -1);
  EXPECT_EQ(fast::onednn::RightPad(56, 3, 1, 1), 1);
  for (int64_t in = 1; in <= 20; ++in) {
    for (int64_t pad = 0; pad <= 3; ++pad) {
      for (int64_t k = 1; k <= std::min<int64_t>(7, in + 2 * pad); ++k) {
        for (int64_t s = 1; s <= 3; ++s) {
          const int64_t out = (in + 2 * pad - k) / s + 1;
          const int64_t r = fast::onednn::RightPad(in, k, s, pad);
          SCOPED_TRACE(absl::StrCat("in ", in, " k ", k, " s ", s, " p ", pad));
          EXPECT_LE(r, pad);
          EXPECT_GT(r, -s);  // oneDNN's own requirement
          EXPECT_EQ((in + pad + r - k) % s, 0);
          EXPECT_EQ((in + pad + r - k) / s + 1, out);
        }
      }
    }
  }
}

TEST(ConvFastOneDnn, ErrorsBecomeInternalStatuses) {
  const absl::Status s = fast::onednn::ErrorToStatus(
      "conv forward (float32)",
      dnnl::error(dnnl_invalid_arguments, "could not create a descriptor"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("conv forward (float32): oneDNN error"));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("could not create a descriptor"));
}

// ---- the primitive cache
// ------------------------------------------------------

TEST(ConvFastCache, HitsOnTheSameProblemAndStaysBounded) {
  const TensorMap in =
      ConvInputs(DType::kFloat32, {1, 3, 9, 9}, {2, 3, 3, 3}, 11);
  const LayerSpec spec = Spec("conv", 1, 0);
  ASSERT_TRUE(Forward(spec, Impl::kFast, in).ok());
  const auto before = fast::onednn::GetConvPlanCacheStats();
  ASSERT_TRUE(Forward(spec, Impl::kFast, in).ok());
  const auto after = fast::onednn::GetConvPlanCacheStats();
  EXPECT_EQ(after.hits, before.hits + 1);
  EXPECT_EQ(after.misses, before.misses);

  // A stream of distinct problems cannot grow the cache past its capacity.
  const int distinct =
      static_cast<int>(fast::onednn::kConvPlanCacheCapacity) + 8;
  for (int i = 0; i < distinct; ++i) {
    const TensorMap x =
        ConvInputs(DType::kFloat32, {1, 2, 4 + i, 3}, {2, 2, 3, 3}, i);
    ASSERT_TRUE(Forward(Spec("conv", 1, 1), Impl::kFast, x).ok());
  }
  const auto full = fast::onednn::GetConvPlanCacheStats();
  EXPECT_LE(full.forward_entries, fast::onednn::kConvPlanCacheCapacity);
  EXPECT_GE(full.evictions, after.evictions + 8);
}

// Four threads run several different problems (f32 and f64, forward and
// backward, fused relu) at once, sharing cached primitives: every result is
// bit-identical to the same computation run alone.
TEST(ConvFastConcurrency, ConcurrentCallsMatchSequentialBitForBit) {
  struct Problem {
    LayerSpec spec;
    TensorMap in;
    Tensor dout;
    TensorMap want;  // "out", "dx", "dw", "db"
  };
  std::vector<Problem> problems;
  auto add = [&](const char* layer, DType dt, Shape x, Shape w, int64_t s,
                 int64_t p) {
    Problem pr;
    pr.spec = Spec(layer, s, p);
    pr.in = ConvInputs(dt, x, w, problems.size() * 10 + 1);
    const Shape out =
        ConvOutputShape("conv", x, w, {w[0]}, pr.spec.conv).value();
    pr.dout = Normal(dt, out, problems.size() * 10 + 5);
    problems.push_back(std::move(pr));
  };
  add("conv", DType::kFloat32, {4, 16, 20, 20}, {16, 16, 3, 3}, 1, 1);
  add("conv", DType::kFloat32, {3, 3, 31, 31}, {25, 3, 3, 3}, 2, 1);
  add("conv_relu", DType::kFloat32, {2, 7, 13, 11}, {9, 7, 5, 3}, 2, 2);
  add("conv", DType::kFloat32, {2, 4, 11, 11}, {3, 4, 1, 1}, 3, 0);
  add("conv", DType::kFloat64, {4, 16, 20, 20}, {16, 16, 3, 3}, 1, 1);
  add("conv_relu", DType::kFloat64, {3, 5, 17, 9}, {6, 5, 3, 5}, 3, 1);
  add("conv", DType::kFloat64, {1, 8, 12, 12}, {4, 8, 1, 1}, 1, 0);

  auto run = [](const Problem& pr, TensorMap* got) -> absl::Status {
    auto f = Forward(pr.spec, Impl::kFast, pr.in);
    if (!f.ok()) return f.status();
    auto b = Backward(pr.spec, Impl::kFast, pr.in, pr.dout);
    if (!b.ok()) return b.status();
    got->clear();
    got->emplace("out", std::move(f->outputs.at("out")));
    for (auto& [name, g] : b->grads) got->emplace(name, std::move(g));
    return absl::OkStatus();
  };
  for (Problem& pr : problems) ASSERT_TRUE(run(pr, &pr.want).ok());

  std::atomic<int> mismatches{0}, errors{0}, runs{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep) {
        for (size_t i = 0; i < problems.size(); ++i) {
          const Problem& pr = problems[(i + t) % problems.size()];
          TensorMap got;
          if (!run(pr, &got).ok()) {
            ++errors;
            continue;
          }
          ++runs;
          for (const auto& [name, want] : pr.want) {
            const Tensor& g = got.at(name);
            if (std::memcmp(g.raw_data(), want.raw_data(), want.nbytes()) !=
                0) {
              ++mismatches;
            }
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(runs.load(), 4 * 3 * static_cast<int>(problems.size()));
  EXPECT_EQ(mismatches.load(), 0);
}

// ---- the thread budget
// ---------------------------------------------------------

// With a budget of one thread the f64 path runs as one chunk with a
// single-threaded GEMM, and the f32 path builds primitives for one thread;
// both still agree with naive.
TEST(ConvFastThreads, OneThreadBudgetStillMatchesNaive) {
  SetMaxThreads(1);
  for (DType dt : {DType::kFloat32, DType::kFloat64}) {
    const testing::ParityOutcome r = testing::RunParity(testing::ConvCase()
                                                            .batch(3)
                                                            .channels(5)
                                                            .filters(7)
                                                            .input(12, 10)
                                                            .kernel(3, 3)
                                                            .stride(2)
                                                            .pad(1),
                                                        dt, 77);
    EXPECT_TRUE(r.pass) << r.failure;
  }
  SetMaxThreads(0);
}

}  // namespace
}  // namespace layerserve
