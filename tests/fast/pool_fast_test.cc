// Fast max pooling against the naive oracle: results must be bitwise equal
// (max pooling is exact), including ties, signed zeros, NaNs, overlapping
// windows that accumulate gradients, and the multithreaded split.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/layers/pool.h"
#include "lib/registry.h"
#include "lib/tensor.h"
#include "lib/threading.h"

namespace layerserve {
namespace {

// How the input x is filled.
enum class Fill {
  kNormal,    // distinct values: one maximum per window
  kSmallInt,  // values from {-1, 0, 1, 2}: many ties
  kSpecial,   // small ints plus -0.0, +0.0 and NaNs with distinct payloads
};

std::string FillName(Fill f) {
  switch (f) {
    case Fill::kNormal:
      return "normal";
    case Fill::kSmallInt:
      return "small-int";
    case Fill::kSpecial:
      return "special";
  }
  return "?";
}

// A NaN whose payload identifies it, so the test sees which NaN won.
double PayloadNaN(DType dtype, uint32_t payload) {
  if (dtype == DType::kFloat32) {
    const uint32_t bits = 0x7fc00000u | (payload & 0x3fffffu);
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return static_cast<double>(f);  // float -> double keeps a quiet payload
  }
  const uint64_t bits = 0x7ff8000000000000ull | payload;
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

Tensor MakeInput(DType dtype, const Shape& shape, Fill fill, uint64_t seed) {
  Tensor t = Tensor::RandomNormal(dtype, shape, seed).value();
  if (fill == Fill::kNormal) return t;
  std::mt19937_64 gen(seed);
  for (int64_t i = 0; i < t.size(); ++i) {
    const uint64_t r = gen() % 64;
    double v = static_cast<double>(static_cast<int64_t>(r % 4) - 1);
    if (fill == Fill::kSpecial) {
      if (r < 8) v = -0.0;
      if (r >= 8 && r < 16) v = 0.0;
      if (r == 63)
        v = PayloadNaN(dtype, static_cast<uint32_t>(1 + gen() % 1000));
    }
    t.SetFlat(i, v);
  }
  return t;
}

// Bit patterns, so -0.0 != +0.0 and NaN payloads count.
bool SameBits(const Tensor& a, int64_t i, const Tensor& b) {
  const size_t n = ItemSize(a.dtype());
  return std::memcmp(static_cast<const char*>(a.raw_data()) + i * n,
                     static_cast<const char*>(b.raw_data()) + i * n, n) == 0;
}

std::string IndexString(const Tensor& t, int64_t flat) {
  std::string s = "(";
  const std::vector<int64_t> idx = t.Unravel(flat);
  for (size_t k = 0; k < idx.size(); ++k) {
    absl::StrAppend(&s, k ? ", " : "", idx[k]);
  }
  return s + ")";
}

// Expects got == want bit for bit; reports the first mismatch by index.
void ExpectBitwiseEqual(const Tensor& want, const Tensor& got,
                        const std::string& what) {
  ASSERT_EQ(want.dtype(), got.dtype()) << what;
  ASSERT_EQ(want.shape(), got.shape()) << what;
  int64_t mismatches = 0, first = -1;
  for (int64_t i = 0; i < want.size(); ++i) {
    if (!SameBits(want, i, got)) {
      if (first < 0) first = i;
      ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0) << what << ": first mismatch at "
                           << IndexString(want, first) << " expected "
                           << want.GetFlat(std::max<int64_t>(first, 0))
                           << " got "
                           << got.GetFlat(std::max<int64_t>(first, 0));
}

int64_t CountNonZero(const Tensor& t) {
  int64_t n = 0;
  for (int64_t i = 0; i < t.size(); ++i) n += t.GetFlat(i) != 0.0;
  return n;
}

// Chained setters that read as a sentence:
//   PoolCase().batch(2).channels(17).input(9, 7).pool(3, 2).stride(2).Test();
class PoolCase {
 public:
  PoolCase& batch(int64_t n) {
    n_ = n;
    return *this;
  }
  PoolCase& channels(int64_t c) {
    c_ = c;
    return *this;
  }
  PoolCase& input(int64_t h, int64_t w) {
    h_ = h;
    w_ = w;
    return *this;
  }
  PoolCase& pool(int64_t ph, int64_t pw) {
    p_.pool_height = ph;
    p_.pool_width = pw;
    return *this;
  }
  PoolCase& stride(int64_t s) {
    p_.stride = s;
    return *this;
  }
  PoolCase& seed(uint64_t s) {
    seed_ = s;
    return *this;
  }

  std::string Describe(DType dtype, Fill fill) const {
    return absl::StrCat("max_pool x ", ShapeString({n_, c_, h_, w_}), " pool ",
                        p_.pool_height, "x", p_.pool_width, " stride ",
                        p_.stride, " ", DTypeName(dtype), " ", FillName(fill),
                        " seed ", seed_);
  }

  // Forward and backward, both dtypes, every fill: fast == naive exactly.
  void Test() const {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      for (Fill fill : {Fill::kNormal, Fill::kSmallInt, Fill::kSpecial}) {
        TestOne(dtype, fill);
      }
    }
  }

  void TestOne(DType dtype, Fill fill) const {
    const std::string what = Describe(dtype, fill);
    SCOPED_TRACE(what);
    const Tensor x = MakeInput(dtype, {n_, c_, h_, w_}, fill, seed_);
    const Shape out_shape =
        MaxPoolOutputShape("max_pool", x.shape(), p_).value();

    Tensor want = Tensor::Zeros(dtype, out_shape).value();
    Tensor got = Tensor::Zeros(dtype, out_shape).value();
    ASSERT_TRUE(naive::MaxPoolForward(x, p_, &want).ok());
    const absl::StatusOr<std::string> name = fast::MaxPoolForward(x, p_, &got);
    ASSERT_TRUE(name.ok()) << name.status();
    EXPECT_EQ(*name, ExpectedName());
    ExpectBitwiseEqual(want, got, what + " forward out");
    if (fill == Fill::kNormal) {
      // A comparison of zeros proves nothing.
      EXPECT_EQ(CountNonZero(want), want.size()) << what;
    }

    // Random dout: sums of several of them round differently in another
    // order, so overlapping windows check the accumulation order too.
    Tensor dout = Tensor::RandomNormal(dtype, out_shape, seed_ + 1).value();
    if (fill == Fill::kSpecial && dout.size() > 1) {
      dout.SetFlat(0, -0.0);  // the naive 0 + -0.0 is +0.0
    }
    Tensor dx_want = Tensor::Zeros(dtype, x.shape()).value();
    Tensor dx_got = Tensor::Zeros(dtype, x.shape()).value();
    ASSERT_TRUE(naive::MaxPoolBackward(x, p_, dout, &dx_want).ok());
    const absl::StatusOr<std::string> bname =
        fast::MaxPoolBackward(x, p_, dout, &dx_got);
    ASSERT_TRUE(bname.ok()) << bname.status();
    EXPECT_EQ(*bname, ExpectedName());
    ExpectBitwiseEqual(dx_want, dx_got, what + " backward dx");
    EXPECT_GT(CountNonZero(dx_want), 0) << what;
  }

  std::string ExpectedName() const {
    return p_.stride == p_.pool_height && p_.stride == p_.pool_width
               ? "pool:tiled"
               : "pool:general";
  }

 private:
  int64_t n_ = 1, c_ = 1, h_ = 4, w_ = 4;
  PoolParam p_;
  uint64_t seed_ = 1;
};

TEST(PoolFastTest, SeedCase2x2Stride2) {
  PoolCase().batch(100).channels(3).input(32, 32).pool(2, 2).stride(2).Test();
}

TEST(PoolFastTest, TiledSquareWindows) {
  for (int64_t k : {1, 2, 3, 4}) {
    PoolCase()
        .batch(2)
        .channels(3)
        .input(4 * k, 6 * k)
        .pool(k, k)
        .stride(k)
        .seed(10 + k)
        .Test();
  }
}

TEST(PoolFastTest, TiledWithLeftoverRowsAndColumns) {
  // stride == pool size but H, W not divisible: the last rows/columns are
  // in no window and get zero gradient.
  PoolCase().batch(2).channels(5).input(9, 11).pool(2, 2).stride(2).Test();
  PoolCase().batch(1).channels(3).input(7, 8).pool(3, 3).stride(3).Test();
  PoolCase().batch(3).channels(2).input(3, 33).pool(2, 2).stride(2).Test();
}

TEST(PoolFastTest, WidthsAroundTheVectorLength) {
  // The 2x2 kernel runs 2 or 4 windows per step and finishes a row with
  // scalar code; every remainder must be right.
  for (int64_t w = 2; w <= 22; ++w) {
    PoolCase()
        .batch(1)
        .channels(2)
        .input(4, w)
        .pool(2, 2)
        .stride(2)
        .seed(100 + w)
        .Test();
  }
}

TEST(PoolFastTest, RowKernelWidths) {
  // The row kernels run several windows per vector step and finish a row
  // with scalar code. The stride-2 loads must stay inside the row: with
  // x (1, 1, 5, 16), pool 3x2, stride 2 the last window ends at the last
  // element of the tensor, whose storage has no padding (under ASan a read
  // past it fails).
  for (int64_t s : {1, 2, 3}) {
    for (int64_t w = 3; w <= 21; ++w) {
      PoolCase()
          .batch(1)
          .channels(2)
          .input(5, w)
          .pool(3, 3)
          .stride(s)
          .seed(200 + 10 * s + w)
          .Test();
      PoolCase()
          .batch(1)
          .channels(1)
          .input(5, w)
          .pool(3, 2)
          .stride(s)
          .seed(400 + 10 * s + w)
          .Test();
    }
  }
}

TEST(PoolFastTest, OverlappingWindows) {
  PoolCase().batch(2).channels(3).input(9, 9).pool(3, 3).stride(1).Test();
  PoolCase().batch(2).channels(3).input(9, 10).pool(3, 3).stride(2).Test();
  PoolCase().batch(1).channels(17).input(13, 7).pool(5, 2).stride(1).Test();
  PoolCase().batch(3).channels(4).input(8, 8).pool(4, 4).stride(3).Test();
}

TEST(PoolFastTest, GapsBetweenWindows) {
  PoolCase().batch(2).channels(3).input(11, 12).pool(2, 2).stride(3).Test();
  PoolCase().batch(1).channels(2).input(10, 10).pool(1, 1).stride(2).Test();
}

TEST(PoolFastTest, NonSquareWindows) {
  PoolCase().batch(2).channels(3).input(8, 9).pool(2, 3).stride(2).Test();
  PoolCase().batch(2).channels(3).input(8, 9).pool(3, 1).stride(1).Test();
  PoolCase().batch(1).channels(1).input(5, 33).pool(1, 7).stride(3).Test();
}

TEST(PoolFastTest, OnePoolAndWholePlaneWindows) {
  PoolCase().batch(2).channels(3).input(5, 7).pool(1, 1).stride(1).Test();
  PoolCase().batch(2).channels(3).input(5, 7).pool(5, 7).stride(1).Test();
  PoolCase().batch(1).channels(1).input(1, 1).pool(1, 1).stride(1).Test();
  PoolCase().batch(1).channels(1).input(2, 2).pool(2, 2).stride(2).Test();
}

TEST(PoolFastTest, GeneratedSweep) {
  // Printed through SCOPED_TRACE, so a failing case replays from its line.
  std::mt19937_64 gen(20240603);
  auto pick = [&gen](int64_t lo, int64_t hi) {
    return lo +
           static_cast<int64_t>(gen() % static_cast<uint64_t>(hi - lo + 1));
  };
  for (int i = 0; i < 60; ++i) {
    const int64_t ph = pick(1, 4), pw = pick(1, 4);
    PoolCase()
        .batch(pick(1, 3))
        .channels(pick(1, 17))
        .input(pick(ph, 20), pick(pw, 20))
        .pool(ph, pw)
        .stride(pick(1, 3))
        .seed(static_cast<uint64_t>(1000 + i))
        .Test();
  }
}

// Large enough that ParallelFor splits the planes (over a million window
// reads: several times the fast code's per-thread minimum); the budget is
// raised so the split happens on a one-core machine too.
class PoolFastThreadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = MaxThreads();
    SetMaxThreads(4);
  }
  void TearDown() override { SetMaxThreads(saved_); }
  int saved_ = 0;
};

TEST_F(PoolFastThreadsTest, TiledSplitsOverPlanes) {
  PoolCase().batch(8).channels(37).input(64, 60).pool(2, 2).stride(2).Test();
}

TEST_F(PoolFastThreadsTest, GeneralSplitsOverPlanes) {
  PoolCase().batch(4).channels(33).input(61, 59).pool(3, 3).stride(2).Test();
  PoolCase().batch(3).channels(40).input(48, 48).pool(3, 2).stride(1).Test();
}

TEST(PoolFastTest, NaNWinsAndTheFirstNaNIsKept) {
  // One window: 1, NaN#7, NaN#9, 5. The max is NaN#7 (the first NaN), and
  // its position gets the gradient.
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    SCOPED_TRACE(DTypeName(dtype));
    Tensor x = Tensor::Zeros(dtype, {1, 1, 2, 2}).value();
    x.SetFlat(0, 1.0);
    x.SetFlat(1, PayloadNaN(dtype, 7));
    x.SetFlat(2, PayloadNaN(dtype, 9));
    x.SetFlat(3, 5.0);
    const PoolParam p{2, 2, 2};
    Tensor out = Tensor::Zeros(dtype, {1, 1, 1, 1}).value();
    ASSERT_TRUE(fast::MaxPoolForward(x, p, &out).ok());
    Tensor nan7 = Tensor::Zeros(dtype, {1}).value();
    nan7.SetFlat(0, PayloadNaN(dtype, 7));
    EXPECT_TRUE(std::isnan(out.GetFlat(0)));
    EXPECT_EQ(std::memcmp(out.raw_data(), nan7.raw_data(), ItemSize(dtype)), 0);

    Tensor dout = Tensor::Zeros(dtype, {1, 1, 1, 1}).value();
    dout.SetFlat(0, 3.0);
    Tensor dx = Tensor::Zeros(dtype, x.shape()).value();
    ASSERT_TRUE(fast::MaxPoolBackward(x, p, dout, &dx).ok());
    EXPECT_EQ(dx.GetFlat(0), 0.0);
    EXPECT_EQ(dx.GetFlat(1), 3.0);
    EXPECT_EQ(dx.GetFlat(2), 0.0);
    EXPECT_EQ(dx.GetFlat(3), 0.0);
  }
}

TEST(PoolFastTest, TiesGoToTheFirstMaximum) {
  // Windows of equal values: the top-left element takes the gradient. For
  // -0.0 vs +0.0 the first one is the max (its sign survives forward).
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    SCOPED_TRACE(DTypeName(dtype));
    Tensor x = Tensor::Zeros(dtype, {1, 1, 2, 8}).value();
    // Windows (cols 0-1, 2-3, 4-5, 6-7) in rows 0 and 1.
    const double row0[8] = {2, 2, -0.0, 0.0, 1, 3, 0.0, -0.0};
    const double row1[8] = {2, 2, 0.0, 0.0, 3, 1, -0.0, 0.0};
    for (int j = 0; j < 8; ++j) {
      x.SetFlat(j, row0[j]);
      x.SetFlat(8 + j, row1[j]);
    }
    const PoolParam p{2, 2, 2};
    Tensor out = Tensor::Zeros(dtype, {1, 1, 1, 4}).value();
    ASSERT_TRUE(fast::MaxPoolForward(x, p, &out).ok());
    EXPECT_EQ(out.GetFlat(0), 2.0);
    EXPECT_TRUE(std::signbit(out.GetFlat(1)));  // -0.0 came first
    EXPECT_EQ(out.GetFlat(2), 3.0);
    EXPECT_FALSE(std::signbit(out.GetFlat(3)));

    Tensor dout = Tensor::Zeros(dtype, {1, 1, 1, 4}).value();
    for (int j = 0; j < 4; ++j) dout.SetFlat(j, 10.0 + j);
    Tensor dx = Tensor::Zeros(dtype, x.shape()).value();
    ASSERT_TRUE(fast::MaxPoolBackward(x, p, dout, &dx).ok());
    std::vector<double> got;
    for (int64_t i = 0; i < dx.size(); ++i) got.push_back(dx.GetFlat(i));
    EXPECT_THAT(got, ::testing::ElementsAre(10, 0, 11, 0, 0, 12, 13, 0,  //
                                            0, 0, 0, 0, 0, 0, 0, 0));
  }
}

TEST(PoolFastTest, OverlappingWindowsAccumulate) {
  // 1x3 input, 1x2 windows at stride 1: the middle 9 is the max of both
  // windows, so its gradient is the sum.
  Tensor x = Tensor::Zeros(DType::kFloat64, {1, 1, 1, 3}).value();
  x.SetFlat(0, 1);
  x.SetFlat(1, 9);
  x.SetFlat(2, 4);
  Tensor dout = Tensor::Zeros(DType::kFloat64, {1, 1, 1, 2}).value();
  dout.SetFlat(0, 0.5);
  dout.SetFlat(1, 0.25);
  Tensor dx = Tensor::Zeros(DType::kFloat64, x.shape()).value();
  ASSERT_TRUE(fast::MaxPoolBackward(x, PoolParam{1, 2, 1}, dout, &dx).ok());
  EXPECT_EQ(dx.GetFlat(0), 0.0);
  EXPECT_EQ(dx.GetFlat(1), 0.75);
  EXPECT_EQ(dx.GetFlat(2), 0.0);
}

TEST(PoolFastTest, RegistryReportsThePath) {
  TensorMap in;
  in.emplace("x",
             Tensor::RandomNormal(DType::kFloat32, {2, 3, 8, 8}, 5).value());
  LayerSpec tiled;
  tiled.name = "max_pool";
  tiled.pool = PoolParam{2, 2, 2};
  LayerSpec general;
  general.name = "max_pool";
  general.pool = PoolParam{3, 3, 2};

  const absl::StatusOr<ForwardResult> f1 = Forward(tiled, Impl::kFast, in);
  ASSERT_TRUE(f1.ok()) << f1.status();
  EXPECT_EQ(f1->impl_name, "pool:tiled");
  const absl::StatusOr<ForwardResult> f2 = Forward(general, Impl::kFast, in);
  ASSERT_TRUE(f2.ok()) << f2.status();
  EXPECT_EQ(f2->impl_name, "pool:general");

  const Tensor& out = f2->outputs.at("out");
  Tensor dout = Tensor::RandomNormal(DType::kFloat32, out.shape(), 6).value();
  const absl::StatusOr<BackwardResult> b =
      Backward(general, Impl::kFast, in, dout);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->impl_name, "pool:general");
  const absl::StatusOr<BackwardResult> bn =
      Backward(general, Impl::kNaive, in, dout);
  ASSERT_TRUE(bn.ok()) << bn.status();
  EXPECT_EQ(bn->impl_name, "naive");
  ExpectBitwiseEqual(bn->grads.at("dx"), b->grads.at("dx"), "registry dx");
}

}  // namespace
}  // namespace layerserve
