// proto/convert.h: round trips between wire and lib types, and what the
// validation of wire tensors accepts at its edges.
#include "proto/convert.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/service/test_util.h"

namespace layerserve::testing {
namespace {

using ::testing::HasSubstr;

TEST(ConvertTest, TensorRoundTripsBitForBit) {
  for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
    const Tensor t = Randn(dtype, {2, 3, 4, 5}, 42);
    v1::Tensor p;
    TensorToProto(t, &p);
    EXPECT_EQ(p.dtype(), dtype == DType::kFloat32 ? v1::FLOAT32 : v1::FLOAT64);
    EXPECT_THAT(p.shape(), ::testing::ElementsAre(2, 3, 4, 5));
    ASSERT_EQ(p.data().size(), 120 * ItemSize(dtype));
    const Tensor back = TensorOf(p);
    EXPECT_EQ(back.dtype(), dtype);
    EXPECT_EQ(back.shape(), t.shape());
    EXPECT_EQ(std::memcmp(back.raw_data(), t.raw_data(), t.nbytes()), 0);
  }
}

TEST(ConvertTest, WireBytesAreLittleEndianCOrder) {
  Tensor t = ValueOrDie(Tensor::Zeros(DType::kFloat32, {2}));
  t.SetFlat(0, 1.0);   // 0x3f800000
  t.SetFlat(1, -2.0);  // 0xc0000000
  const v1::Tensor p = ProtoOf(t);
  EXPECT_EQ(p.data(), std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8));
}

TEST(ConvertTest, DescNeedsNoDataCopyAndChecksEverything) {
  v1::Tensor p;
  p.set_dtype(v1::FLOAT32);
  p.add_shape(3);
  p.set_data(std::string(12, '\0'));
  absl::StatusOr<TensorDesc> d = TensorDescFromProto(p, "dout");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->dtype, DType::kFloat32);
  EXPECT_EQ(d->shape, Shape({3}));
  p.set_data(std::string(13, '\0'));
  EXPECT_THAT(std::string(TensorDescFromProto(p, "dout").status().message()),
              HasSubstr("dout.data: expected 12 bytes (shape (3,) x 4 bytes "
                        "for FLOAT32), got 13"));
  // prod(shape) fits int64 but its byte count does not.
  p.clear_shape();
  p.add_shape(int64_t{1} << 62);
  EXPECT_THAT(std::string(TensorDescFromProto(p, "dout").status().message()),
              HasSubstr("dout.data: the byte count"));
}

TEST(ConvertTest, LayerSpecRoundTripsAndSetsOnlyUsedParams) {
  v1::LayerSpec in = ConvSpec("conv_relu_pool", 2, 1);
  *in.mutable_pool_param() = PoolSpec(3, 2, 1).pool_param();
  const LayerSpec spec = ValueOrDie(LayerSpecFromProto(in));
  EXPECT_EQ(spec.name, "conv_relu_pool");
  EXPECT_EQ(spec.conv.stride, 2);
  EXPECT_EQ(spec.conv.pad, 1);
  EXPECT_EQ(spec.pool.pool_height, 3);
  EXPECT_EQ(spec.pool.pool_width, 2);
  EXPECT_EQ(spec.pool.stride, 1);
  v1::LayerSpec out;
  LayerSpecToProto(spec, &out);
  EXPECT_EQ(out.SerializeAsString(), in.SerializeAsString());

  LayerSpec relu;
  relu.name = "relu";
  LayerSpecToProto(relu, &out);
  EXPECT_FALSE(out.has_conv_param());
  EXPECT_FALSE(out.has_pool_param());
}

TEST(ConvertTest, ImplementationUnspecifiedIsFast) {
  EXPECT_EQ(ValueOrDie(ImplFromProto(v1::IMPLEMENTATION_UNSPECIFIED)),
            Impl::kFast);
  EXPECT_EQ(ValueOrDie(ImplFromProto(v1::NAIVE)), Impl::kNaive);
  EXPECT_EQ(ValueOrDie(ImplFromProto(v1::FAST)), Impl::kFast);
  EXPECT_EQ(ImplToProto(Impl::kNaive), v1::NAIVE);
}

}  // namespace
}  // namespace layerserve::testing
