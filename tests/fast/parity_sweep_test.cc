// The fast-vs-naive parity sweep (benchdnn style): hundreds of generated
// cases per dtype over conv, conv_relu, conv_relu_pool, relu and max_pool,
// forward and backward, plus named shape batches written out by hand.
//
// The generator is seeded; the seed is printed, and LAYERSERVE_PARITY_SEED
// overrides it so a failure replays exactly:
//   LAYERSERVE_PARITY_SEED=<seed> ./fast_parity_sweep_test
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/fast/parity.h"
#include "tests/fast/tolerances.h"

namespace layerserve::testing {
namespace {

constexpr uint64_t kDefaultSeed = 20240611;

uint64_t SweepSeed() {
  const char* env = std::getenv("LAYERSERVE_PARITY_SEED");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : kDefaultSeed;
}

// Shapes are small so the naive oracle stays fast: one conv pass of a case
// is capped at this many multiply-adds (batch, then filters, then channels
// shrink until it fits; the spatial shape, which decides validity, never
// changes).
constexpr int64_t kMacBudget = 2'000'000;

// Generated cases per dtype and layer. Enough that the meaningful ones
// (reference not mostly zero) exceed kMinMeaningful per dtype.
const std::vector<std::pair<std::string, int>>& Mix() {
  static const auto* const mix = new std::vector<std::pair<std::string, int>>{
      {"conv", 200}, {"conv_relu", 100}, {"conv_relu_pool", 140},
      {"relu", 40},  {"max_pool", 140},
  };
  return *mix;
}
constexpr int kMinMeaningful = 300;

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  int64_t Uniform(int64_t lo, int64_t hi) {  // inclusive
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  // Channel counts lean towards odd "tails" of SIMD widths (1, 3, 7, 9,
  // 15, 17) half of the time; otherwise anything in 1..17.
  int64_t Channels() {
    static constexpr int64_t kTails[] = {1, 3, 7, 9, 15, 17};
    return Uniform(0, 1) ? kTails[Uniform(0, 5)] : Uniform(1, 17);
  }

  // A conv-family case, valid by construction: each kernel dimension is
  // drawn no larger than its padded input.
  LayerCase Conv(const std::string& layer) {
    LayerCase c(layer);
    const int64_t h = Uniform(1, 33), w = Uniform(1, 33);
    const int64_t pad = Uniform(0, 3), stride = Uniform(1, 3);
    const int64_t kh = Uniform(1, std::min<int64_t>(7, h + 2 * pad));
    const int64_t kw = Uniform(1, std::min<int64_t>(7, w + 2 * pad));
    int64_t n = Uniform(1, 8), ch = Channels(), f = Channels();
    c.input(h, w).pad(pad).stride(stride).kernel(kh, kw);
    for (;;) {
      c.batch(n).channels(ch).filters(f);
      if (c.conv_macs() <= kMacBudget) break;
      if (n > 1) {
        n = (n + 1) / 2;
      } else if (f > 1) {
        f = (f + 1) / 2;
      } else {
        ch = (ch + 1) / 2;
      }
    }
    if (layer == "conv_relu_pool") {
      const auto [ph, pw, ps] = Pool(c.conv_out_h(), c.conv_out_w());
      c.pool(ph, pw, ps);
    }
    return c;
  }

  // Pool windows over an (h, w) input, valid by construction, in three
  // styles: tiled (stride == window), overlapping (stride < window) and
  // anything else (gaps when stride > window, ragged edges).
  struct PoolShape {
    int64_t ph, pw, stride;
  };
  PoolShape Pool(int64_t h, int64_t w) {
    const int64_t max_k = std::min<int64_t>(4, std::min(h, w));
    switch (Uniform(0, 2)) {
      case 0: {  // tiled, square
        const int64_t k = Uniform(1, max_k);
        return {k, k, k};
      }
      case 1: {  // overlapping
        const int64_t ph = Uniform(1, std::min<int64_t>(4, h));
        const int64_t pw = Uniform(1, std::min<int64_t>(4, w));
        const int64_t big = std::max(ph, pw);
        return {ph, pw, big > 1 ? Uniform(1, big - 1) : 1};
      }
      default:
        return {Uniform(1, std::min<int64_t>(4, h)),
                Uniform(1, std::min<int64_t>(4, w)), Uniform(1, 3)};
    }
  }

  LayerCase MaxPool(bool quantized) {
    LayerCase c("max_pool");
    int64_t h = Uniform(1, 33), w = Uniform(1, 33);
    if (Uniform(0, 2) == 0) {  // tiled inputs: a multiple of the window
      const int64_t k = Uniform(2, 3);
      h = k * Uniform(1, 33 / k);
      w = k * Uniform(1, 33 / k);
      c.pool(k, k, k);
    } else {
      const PoolShape p = Pool(h, w);
      c.pool(p.ph, p.pw, p.stride);
    }
    c.batch(Uniform(1, 8)).channels(Channels()).input(h, w);
    if (quantized) c.data(Data::kQuantized);
    return c;
  }

  LayerCase Relu() {
    return ReluCase()
        .batch(Uniform(1, 8))
        .channels(Channels())
        .input(Uniform(1, 33), Uniform(1, 33));
  }

 private:
  std::mt19937_64 rng_;
};

std::vector<LayerCase> GenerateCases(uint64_t seed) {
  Generator gen(seed);
  std::vector<LayerCase> cases;
  for (const auto& [layer, count] : Mix()) {
    for (int i = 0; i < count; ++i) {
      if (layer == "relu") {
        cases.push_back(gen.Relu());
      } else if (layer == "max_pool") {
        cases.push_back(gen.MaxPool(i % 2 == 1));
      } else {
        cases.push_back(gen.Conv(layer));
      }
    }
  }
  return cases;
}

void Sweep(DType dtype) {
  const uint64_t seed = SweepSeed();
  std::printf("parity sweep %s: LAYERSERVE_PARITY_SEED=%llu\n",
              std::string(DTypeName(dtype)).c_str(),
              static_cast<unsigned long long>(seed));
  const std::string replay =
      absl::StrCat("(replay: LAYERSERVE_PARITY_SEED=", seed, ")");
  const std::vector<LayerCase> cases = GenerateCases(seed);

  struct Tally {
    int meaningful = 0, mostly_zero = 0, failed = 0;
    double worst = 0;
  };
  std::map<std::string, Tally> tally;
  int meaningful = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const LayerCase& c = cases[i];
    const ParityOutcome r =
        RunParity(c, dtype, seed * 7919 + i, absl::StrCat("#", i, " ", replay));
    Tally& t = tally[c.layer()];
    t.worst = std::max(t.worst, r.worst_error);
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
        "  %-15s meaningful %3d  mostly-zero %3d  failed %3d  "
        "worst scaled error %.3g\n",
        layer.c_str(), t.meaningful, t.mostly_zero, t.failed, t.worst);
  }
  EXPECT_GE(meaningful, kMinMeaningful)
      << "too few cases with a meaningful (not mostly zero) reference";
}

TEST(ParitySweep, Float32) { Sweep(DType::kFloat32); }
TEST(ParitySweep, Float64) { Sweep(DType::kFloat64); }

// The generator really produces what the sweep claims to cover.
TEST(ParitySweep, GeneratorCoversTheRanges) {
  const std::vector<LayerCase> cases = GenerateCases(SweepSeed());
  std::map<std::string, int> seen;
  for (const LayerCase& c : cases) {
    const LayerSpec s = c.Spec();
    if (c.has_conv()) {
      const Shape ws = c.w_shape();
      ++seen[absl::StrCat("stride", s.conv.stride)];
      ++seen[absl::StrCat("pad", s.conv.pad)];
      if (ws[2] != ws[3]) ++seen["non-square kernel"];
      if (ws[2] == 7 || ws[3] == 7) ++seen["kernel 7"];
      if (ws[1] == 17) ++seen["17 channels"];
      const Shape xs = c.x_shape();
      if ((xs[2] + 2 * s.conv.pad - ws[2]) % s.conv.stride != 0) {
        ++seen["ragged stride"];
      }
    }
    if (c.has_pool()) {
      const PoolParam& p = s.pool;
      if (p.stride == p.pool_height && p.stride == p.pool_width) {
        ++seen["pool tiled-stride"];
      }
      if (p.stride < std::max(p.pool_height, p.pool_width)) {
        ++seen["pool overlapping"];
      }
    }
  }
  for (const char* what :
       {"stride1", "stride2", "stride3", "pad0", "pad1", "pad2", "pad3",
        "non-square kernel", "kernel 7", "17 channels", "ragged stride",
        "pool tiled-stride", "pool overlapping"}) {
    EXPECT_GE(seen[what], 5) << what;
  }
}

// Named shape batches, benchdnn style: the shapes a generator might miss.
struct Named {
  const char* name;
  LayerCase c;
};

std::vector<Named> NamedCases() {
  return {
      {"seed_conv_small", ConvCase()
                              .batch(2)
                              .channels(3)
                              .filters(3)
                              .input(4, 4)
                              .kernel(4, 4)
                              .stride(2)
                              .pad(1)},
      {"tail17", ConvCase()
                     .batch(2)
                     .channels(17)
                     .filters(5)
                     .input(9, 11)
                     .kernel(3, 5)
                     .stride(2)
                     .pad(1)},
      {"tail17_filters", ConvCase()
                             .batch(3)
                             .channels(16)
                             .filters(17)
                             .input(8, 8)
                             .kernel(3, 3)
                             .stride(1)
                             .pad(1)},
      {"pointwise",
       ConvCase().batch(4).channels(8).filters(16).input(7, 9).kernel(1, 1)},
      {"pointwise_strided", ConvCase()
                                .batch(2)
                                .channels(5)
                                .filters(3)
                                .input(9, 9)
                                .kernel(1, 1)
                                .stride(2)},
      // (11 - 1) % 3 == 1: the right padding oneDNN needs is -1.
      {"negative_right_pad", ConvCase()
                                 .batch(2)
                                 .channels(4)
                                 .filters(3)
                                 .input(11, 11)
                                 .kernel(1, 1)
                                 .stride(3)},
      {"negative_right_pad_3x3", ConvCase()
                                     .batch(2)
                                     .channels(3)
                                     .filters(4)
                                     .input(13, 14)
                                     .kernel(3, 3)
                                     .stride(3)
                                     .pad(0)},
      {"kernel_equals_padded_input",
       ConvCase().batch(1).channels(2).filters(2).input(3, 2).kernel(7, 6).pad(
           2)},
      {"one_by_one_image_padded",
       ConvCase().batch(3).channels(2).filters(3).input(1, 1).kernel(3, 3).pad(
           1)},
      {"cifar_7x7", ConvCase()
                        .batch(2)
                        .channels(3)
                        .filters(8)
                        .input(32, 32)
                        .kernel(7, 7)
                        .pad(3)},
      {"mid_3x3", ConvCase()
                      .batch(1)
                      .channels(16)
                      .filters(16)
                      .input(14, 14)
                      .kernel(3, 3)
                      .pad(1)},
      {"tall_kernel", ConvCase()
                          .batch(2)
                          .channels(3)
                          .filters(2)
                          .input(20, 5)
                          .kernel(7, 1)
                          .stride(2)
                          .pad(3)},
      {"conv_relu_tail", ConvReluCase()
                             .batch(2)
                             .channels(17)
                             .filters(9)
                             .input(10, 10)
                             .kernel(3, 3)
                             .pad(1)},
      {"conv_relu_pool_seed", ConvReluPoolCase()
                                  .batch(2)
                                  .channels(3)
                                  .filters(3)
                                  .input(16, 16)
                                  .kernel(3, 3)
                                  .pad(1)
                                  .pool(2, 2, 2)},
      {"conv_relu_pool_overlap", ConvReluPoolCase()
                                     .batch(2)
                                     .channels(5)
                                     .filters(7)
                                     .input(15, 13)
                                     .kernel(3, 2)
                                     .stride(1)
                                     .pad(1)
                                     .pool(3, 3, 2)},
      {"pool_seed",
       MaxPoolCase().batch(2).channels(3).input(4, 4).pool(2, 2, 2)},
      {"pool_ragged",
       MaxPoolCase().batch(2).channels(17).input(9, 7).pool(2, 3, 2)},
      {"pool_overlap_ties",
       MaxPoolCase().batch(3).channels(5).input(11, 11).pool(3, 3, 1).data(
           Data::kQuantized)},
      {"pool_gaps",
       MaxPoolCase().batch(1).channels(3).input(11, 11).pool(2, 2, 3)},
      {"relu", ReluCase().batch(3).channels(17).input(5, 33)},
  };
}

TEST(ParityNamed, AllPassInBothDtypes) {
  uint64_t seed = SweepSeed();
  for (const Named& n : NamedCases()) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      const ParityOutcome r = RunParity(n.c, dtype, ++seed);
      EXPECT_TRUE(r.pass) << n.name << ": " << r.failure;
      EXPECT_TRUE(r.meaningful) << n.name << " has a mostly-zero reference";
    }
  }
}

// A comparison that cannot fail proves nothing: a corrupted element must be
// caught, with its index in the message.
TEST(ParityCompare, CatchesOneWrongElement) {
  Tensor want = Tensor::RandomNormal(DType::kFloat32, {2, 3, 4, 5}, 7).value();
  Tensor got = want.Clone();
  const int64_t flat = want.Offset({1, 2, 3, 4});
  got.SetFlat(flat, got.GetFlat(flat) + 0.01);
  const TensorComparison r =
      Compare(got, want, nullptr, /*exact=*/false, kFloat32ScaledTolerance);
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.worst, flat);
  EXPECT_EQ(IndexString(want, r.worst), "(1, 2, 3, 4)");
  const TensorComparison exact = Compare(got, want, nullptr, /*exact=*/true, 0);
  EXPECT_FALSE(exact.pass);
  EXPECT_TRUE(Compare(want, want, nullptr, /*exact=*/true, 0).pass);
}

TEST(ParityCompare, FlagsMostlyZeroReferences) {
  Tensor want = Tensor::Zeros(DType::kFloat64, {1, 1, 10, 10}).value();
  want.SetFlat(3, 1.0);
  EXPECT_GT(Compare(want, want, nullptr, false, 1e-9).zero_fraction,
            kMostlyZeroFraction);
}

}  // namespace
}  // namespace layerserve::testing
