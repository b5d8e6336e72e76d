// Every invalid input the library rejects, with its code and message: the
// message must name the layer, the field, and the expected and actual value.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/gradcheck.h"
#include "lib/registry.h"

namespace layerserve {
namespace {

using ::testing::HasSubstr;

TensorMap Inputs(DType dtype,
                 const std::vector<std::pair<std::string, Shape>>& shapes) {
  TensorMap m;
  uint64_t seed = 1;
  for (const auto& [name, shape] : shapes) {
    m.emplace(name, Tensor::RandomNormal(dtype, shape, seed++).value());
  }
  return m;
}

TensorMap ConvInputs(Shape x = {2, 3, 8, 8}, Shape w = {4, 3, 3, 3},
                     Shape b = {4}) {
  return Inputs(DType::kFloat64, {{"x", x}, {"w", w}, {"b", b}});
}

LayerSpec Spec(const std::string& name, ConvParam conv = {1, 1},
               PoolParam pool = {2, 2, 2}) {
  LayerSpec s;
  s.name = name;
  s.conv = conv;
  s.pool = pool;
  return s;
}

struct BadCase {
  std::string label;
  LayerSpec spec;
  TensorMap inputs;
  std::string message;
};

std::vector<BadCase> ForwardCases() {
  std::vector<BadCase> c;
  c.push_back({"unknown layer", Spec("convv"), ConvInputs(),
               "layer.name: unknown layer 'convv'; known layers: conv, "
               "max_pool, relu, conv_relu, conv_relu_pool"});
  c.push_back({"empty layer name", Spec(""), ConvInputs(), "unknown layer ''"});
  {
    TensorMap m = ConvInputs();
    m.erase("w");
    c.push_back({"missing w", Spec("conv"), std::move(m),
                 "conv: missing input 'w' (expected inputs: x, w, b)"});
  }
  {
    TensorMap m = ConvInputs();
    m.emplace("z", Tensor::Zeros(DType::kFloat64, {1}).value());
    c.push_back({"unexpected z", Spec("conv"), std::move(m),
                 "conv: unexpected input 'z' (expected inputs: x, w, b)"});
  }
  {
    TensorMap m = ConvInputs();
    m.erase("w");
    m.emplace("w", Tensor::Zeros(DType::kFloat32, {4, 3, 3, 3}).value());
    c.push_back({"mixed dtypes", Spec("conv"), std::move(m),
                 "conv: input w is float32 but x is float64 (all inputs "
                 "share one dtype)"});
  }
  c.push_back({"x rank 3", Spec("conv"), ConvInputs({3, 8, 8}),
               "conv: input x must have rank 4 (N, C, H, W), got rank 3 "
               "(shape (3, 8, 8))"});
  c.push_back({"w rank 2", Spec("conv"), ConvInputs({2, 3, 8, 8}, {4, 27}),
               "conv: input w must have rank 4 (F, C, HH, WW), got rank 2"});
  c.push_back({"b rank 2", Spec("conv"),
               ConvInputs({2, 3, 8, 8}, {4, 3, 3, 3}, {4, 1}),
               "conv: input b must have rank 1 (F,), got rank 2"});
  c.push_back({"channels", Spec("conv"), ConvInputs({2, 3, 8, 8}, {4, 5, 3, 3}),
               "conv: input x has 3 channels (x.shape[1]) but w expects 5 "
               "(w.shape[1])"});
  c.push_back(
      {"bias length", Spec("conv"), ConvInputs({2, 3, 8, 8}, {4, 3, 3, 3}, {5}),
       "conv: input b has 5 elements but w has 4 filters (w.shape[0])"});
  c.push_back({"stride 0", Spec("conv", {0, 1}), ConvInputs(),
               "conv: conv_param.stride must be >= 1, got 0"});
  c.push_back({"stride negative", Spec("conv", {-2, 1}), ConvInputs(),
               "conv: conv_param.stride must be >= 1, got -2"});
  c.push_back({"pad negative", Spec("conv", {1, -1}), ConvInputs(),
               "conv: conv_param.pad must be >= 0, got -1"});
  c.push_back({"kernel too tall", Spec("conv", {1, 0}),
               ConvInputs({2, 3, 4, 8}, {4, 3, 5, 3}),
               "conv: kernel height 5 (w.shape[2]) exceeds the padded input "
               "height 4 (x.shape[2] + 2 * pad = 4 + 2 * 0)"});
  c.push_back({"kernel too wide", Spec("conv", {1, 1}),
               ConvInputs({2, 3, 8, 2}, {4, 3, 3, 5}),
               "conv: kernel width 5 (w.shape[3]) exceeds the padded input "
               "width 4 (x.shape[3] + 2 * pad = 2 + 2 * 1)"});
  c.push_back({"pad overflows",
               Spec("conv", {1, std::numeric_limits<int64_t>::max() / 2}),
               ConvInputs(),
               "conv: conv_param.pad 4611686018427387903 "
               "overflows the padded height"});
  c.push_back({"pool height 0", Spec("max_pool", {}, {0, 2, 2}),
               Inputs(DType::kFloat64, {{"x", {1, 1, 4, 4}}}),
               "max_pool: pool_param.pool_height must be >= 1, got 0"});
  c.push_back({"pool width negative", Spec("max_pool", {}, {2, -1, 2}),
               Inputs(DType::kFloat64, {{"x", {1, 1, 4, 4}}}),
               "max_pool: pool_param.pool_width must be >= 1, got -1"});
  c.push_back({"pool stride 0", Spec("max_pool", {}, {2, 2, 0}),
               Inputs(DType::kFloat64, {{"x", {1, 1, 4, 4}}}),
               "max_pool: pool_param.stride must be >= 1, got 0"});
  c.push_back({"pool taller than input", Spec("max_pool", {}, {5, 2, 1}),
               Inputs(DType::kFloat64, {{"x", {1, 1, 4, 4}}}),
               "max_pool: pool_param.pool_height 5 exceeds the input height 4 "
               "(x.shape[2])"});
  c.push_back({"pool wider than input", Spec("max_pool", {}, {2, 9, 1}),
               Inputs(DType::kFloat64, {{"x", {1, 1, 4, 4}}}),
               "max_pool: pool_param.pool_width 9 exceeds the input width 4 "
               "(x.shape[3])"});
  c.push_back({"pool rank 2", Spec("max_pool"),
               Inputs(DType::kFloat64, {{"x", {4, 4}}}),
               "max_pool: input x must have rank 4 (N, C, H, W), got rank 2"});
  c.push_back({"relu input named y", Spec("relu"),
               Inputs(DType::kFloat64, {{"y", {4}}}),
               "relu: missing input 'x' (expected inputs: x)"});
  c.push_back({"composite pool exceeds conv output",
               Spec("conv_relu_pool", {2, 0}, {3, 3, 1}),
               ConvInputs({1, 3, 5, 5}, {2, 3, 3, 3}, {2}),
               "conv_relu_pool: pool_param.pool_height 3 exceeds the input "
               "height 2"});
  c.push_back({"composite channels", Spec("conv_relu"),
               ConvInputs({2, 2, 8, 8}, {4, 3, 3, 3}),
               "conv_relu: input x has 2 channels"});
  return c;
}

TEST(Validation, ForwardRejectsWithMessage) {
  for (BadCase& c : ForwardCases()) {
    for (Impl impl : {Impl::kNaive, Impl::kFast}) {
      absl::StatusOr<ForwardResult> r = Forward(c.spec, impl, c.inputs);
      ASSERT_FALSE(r.ok()) << c.label;
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
          << c.label;
      EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.label;
    }
    // The same verdict without touching data, as the server asks first.
    absl::StatusOr<TensorDesc> d = InferOutput(c.spec, DescsOf(c.inputs));
    ASSERT_FALSE(d.ok()) << c.label;
    EXPECT_THAT(d.status().message(), HasSubstr(c.message)) << c.label;
  }
}

TEST(Validation, InferOutputRejectsBadShapesWithoutData) {
  DescMap d;
  d["x"] = {DType::kFloat64, {2, 0, 4, 4}};
  absl::StatusOr<TensorDesc> r = InferOutput(Spec("relu"), d);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("relu: input x: dim 1 must be >= 1, got 0"));
  d["x"] = {DType::kFloat64, {int64_t{1} << 32, int64_t{1} << 32}};
  r = InferOutput(Spec("relu"), d);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("overflows int64"));
  // A huge pad is reported as a too-large output, before any allocation.
  d.clear();
  d["x"] = {DType::kFloat64, {1, 1, 2, 2}};
  d["w"] = {DType::kFloat64, {1, 1, 1, 1}};
  d["b"] = {DType::kFloat64, {1}};
  absl::StatusOr<TensorDesc> big =
      InferOutput(Spec("conv", {1, 1000000000}), d);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->shape, (Shape{1, 1, 2000000002, 2000000002}));
}

TEST(Validation, BackwardChecksDout) {
  TensorMap in = ConvInputs();
  struct Case {
    Tensor dout;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back(
      {Tensor(), "conv: dout is missing (expected shape (2, 4, 8, 8))"});
  cases.push_back({Tensor::Zeros(DType::kFloat64, {2, 4, 8, 7}).value(),
                   "conv: dout has shape (2, 4, 8, 7) but the output has "
                   "shape (2, 4, 8, 8)"});
  cases.push_back({Tensor::Zeros(DType::kFloat32, {2, 4, 8, 8}).value(),
                   "conv: dout is float32 but the inputs are float64"});
  for (const Case& c : cases) {
    absl::StatusOr<BackwardResult> r =
        Backward(Spec("conv"), Impl::kNaive, in, c.dout);
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.message));
  }
}

TEST(Validation, GradCheckRejectsNonFiniteAndBadStep) {
  TensorMap in = ConvInputs({1, 3, 4, 4}, {2, 3, 3, 3}, {2});
  in.find("x")->second.SetFlat(5, std::nan(""));
  absl::StatusOr<GradCheckReport> r =
      GradCheck(Spec("conv"), Impl::kNaive, in, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(),
              HasSubstr("input x has a non-finite value nan at index "
                        "[0, 0, 1, 1]"));

  in = ConvInputs({1, 3, 4, 4}, {2, 3, 3, 3}, {2});
  Tensor dout = Tensor::Zeros(DType::kFloat64, {1, 2, 4, 4}).value();
  dout.SetFlat(0, std::numeric_limits<double>::infinity());
  GradCheckOptions opt;
  opt.dout = &dout;
  r = GradCheck(Spec("conv"), Impl::kNaive, in, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              HasSubstr("dout has a non-finite value inf"));

  for (double h : {0.0, -1e-5, std::nan(""), HUGE_VAL}) {
    GradCheckOptions bad;
    bad.h = h;
    r = GradCheck(Spec("conv"), Impl::kNaive, in, bad);
    ASSERT_FALSE(r.ok()) << h;
    EXPECT_THAT(r.status().message(),
                HasSubstr("h: the step must be finite and > 0"));
  }
}

TEST(Validation, ForwardPropagatesNaNAsIEEE) {
  TensorMap in = Inputs(DType::kFloat64, {{"x", {1, 1, 2, 2}}});
  in.find("x")->second.SetFlat(3, std::nan(""));
  for (const char* layer : {"relu", "max_pool"}) {
    ForwardResult r = Forward(Spec(layer), Impl::kNaive, in).value();
    const Tensor& out = r.outputs.at("out");
    EXPECT_TRUE(std::isnan(out.GetFlat(out.size() - 1))) << layer;
  }
}

}  // namespace
}  // namespace layerserve
