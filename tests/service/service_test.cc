// LayerService over real RPC (an in-process channel to a started server):
// every RPC on every layer, both implementations and dtypes; the seed
// notebook's cells with the library tests' thresholds; every kind of bad
// request with its status code and message, each followed by a good one.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/registry.h"
#include "server/server.h"
#include "tests/lib/seed_data.h"
#include "tests/service/test_util.h"

namespace layerserve::testing {
namespace {

[[maybe_unused]] const bool kOneThreadUnderTsan = OneIntraOpThreadUnderTsan();

using client::LayerClient;
using ::testing::HasSubstr;

// The servers the tests talk to: defaults, and two with small limits.
enum class Which { kDefault, kSmallTensors, kSmallMessages };
constexpr int64_t kSmallTensorElements = 1000;
constexpr int kSmallMessageBytes = 64 << 10;

class Servers {
 public:
  static Servers& Get() {
    static Servers* servers = new Servers;
    return *servers;
  }
  LayerClient& client(Which which) {
    return *clients_[static_cast<int>(which)];
  }

 private:
  Servers() {
    for (Which which :
         {Which::kDefault, Which::kSmallTensors, Which::kSmallMessages}) {
      server::ServerOptions o;
      o.address = "";
      o.service.log_calls = false;
      if (which == Which::kSmallTensors) {
        o.service.limits.max_tensor_elements = kSmallTensorElements;
      }
      if (which == Which::kSmallMessages) {
        o.max_message_bytes = kSmallMessageBytes;
      }
      servers_.push_back(ValueOrDie(server::LayerServer::Start(o)));
      client::ClientOptions co;
      co.timeout = absl::Seconds(120);
      clients_.push_back(std::make_unique<LayerClient>(
          servers_.back()->InProcessChannel(), co));
    }
  }
  std::vector<std::unique_ptr<server::LayerServer>> servers_;
  std::vector<std::unique_ptr<LayerClient>> clients_;
};

LayerClient& Client(Which which = Which::kDefault) {
  return Servers::Get().client(which);
}

void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::vector<std::string>& substrings) {
  EXPECT_EQ(status.code(), code) << status;
  for (const std::string& s : substrings) {
    EXPECT_THAT(std::string(status.message()), HasSubstr(s));
  }
}

double RelErr(const Tensor& a, const Tensor& b) {
  return ValueOrDie(RelError(a, b));
}

// --- the seed's cells -------------------------------------------------------

// In [14]: the conv forward cell.
v1::ForwardRequest SeedConvForwardRequest(DType dtype,
                                          v1::Implementation impl) {
  v1::ForwardRequest r;
  *r.mutable_layer() = ConvSpec("conv", 2, 1);
  r.set_implementation(impl);
  (*r.mutable_inputs())["x"] =
      ProtoOf(Linspace(dtype, {2, 3, 4, 4}, -0.1, 0.5));
  (*r.mutable_inputs())["w"] =
      ProtoOf(Linspace(dtype, {3, 3, 4, 4}, -0.2, 0.3));
  (*r.mutable_inputs())["b"] = ProtoOf(Linspace(dtype, {3}, -0.1, 0.2));
  return r;
}

Tensor SeedConvCorrect() {
  Tensor t = ValueOrDie(Tensor::Zeros(DType::kFloat64, {2, 3, 2, 2}));
  const std::vector<double>& v = SeedConvCorrectOut();
  for (size_t i = 0; i < v.size(); ++i) t.SetFlat(i, v[i]);
  return t;
}

// A good request after a bad one: the server still answers, correctly.
void ExpectSeedConvWorks(LayerClient& client) {
  absl::StatusOr<v1::ForwardResponse> r =
      client.Forward(SeedConvForwardRequest(DType::kFloat64, v1::FAST));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LE(RelErr(TensorOf(r->outputs().at("out")), SeedConvCorrect()),
            kF64VectorTol);
}

class SeedCellTest
    : public ::testing::TestWithParam<std::tuple<v1::Implementation, DType>> {
 protected:
  v1::Implementation impl() const { return std::get<0>(GetParam()); }
  DType dtype() const { return std::get<1>(GetParam()); }
  double vector_tol() const {
    return dtype() == DType::kFloat64 ? kF64VectorTol : kF32VectorTol;
  }
};

TEST_P(SeedCellTest, ConvForwardMatchesCorrectOut) {
  absl::StatusOr<v1::ForwardResponse> r =
      Client().Forward(SeedConvForwardRequest(dtype(), impl()));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->outputs().size(), 1u);
  Tensor out = TensorOf(r->outputs().at("out"));
  EXPECT_EQ(out.dtype(), dtype());
  EXPECT_EQ(out.shape(), Shape({2, 3, 2, 2}));
  EXPECT_LE(RelErr(out, SeedConvCorrect()), vector_tol());
  EXPECT_FALSE(r->implementation_name().empty());
  if (impl() == v1::NAIVE) {
    EXPECT_EQ(r->implementation_name(), "naive");
  }
  EXPECT_GT(r->compute_ns(), 0);
}

TEST_P(SeedCellTest, MaxPoolForwardMatchesCorrectOut) {
  v1::ForwardRequest req;
  *req.mutable_layer() = PoolSpec(2, 2, 2);
  req.set_implementation(impl());
  (*req.mutable_inputs())["x"] =
      ProtoOf(Linspace(dtype(), {2, 3, 4, 4}, -0.3, 0.4));
  absl::StatusOr<v1::ForwardResponse> r = Client().Forward(req);
  ASSERT_TRUE(r.ok()) << r.status();
  Tensor correct = ValueOrDie(Tensor::Zeros(DType::kFloat64, {2, 3, 2, 2}));
  for (size_t i = 0; i < SeedPoolCorrectOut().size(); ++i) {
    correct.SetFlat(i, SeedPoolCorrectOut()[i]);
  }
  EXPECT_LE(RelErr(TensorOf(r->outputs().at("out")), correct), vector_tol());
}

INSTANTIATE_TEST_SUITE_P(
    ImplsAndDtypes, SeedCellTest,
    ::testing::Combine(::testing::Values(v1::NAIVE, v1::FAST),
                       ::testing::Values(DType::kFloat32, DType::kFloat64)),
    [](const auto& info) {
      return absl::StrCat(v1::Implementation_Name(std::get<0>(info.param)), "_",
                          DTypeName(std::get<1>(info.param)));
    });

// The seed's gradient-check cells, float64, each implementation.
class SeedGradCheckTest : public ::testing::TestWithParam<v1::Implementation> {
 protected:
  // Runs a gradient check with the given inputs and dout; returns rel_error
  // per input name.
  std::map<std::string, double> Check(const v1::LayerSpec& spec,
                                      const TensorMap& inputs,
                                      const Tensor& dout) {
    v1::GradCheckRequest req;
    *req.mutable_layer() = spec;
    req.set_implementation(GetParam());
    PutInputs(inputs, req.mutable_inputs());
    *req.mutable_dout() = ProtoOf(dout);
    absl::StatusOr<v1::GradCheckResponse> r = Client().GradCheck(req);
    std::map<std::string, double> errors;
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return errors;
    for (const v1::GradCheckResult& res : r->results()) {
      errors[res.input()] = res.rel_error();
      EXPECT_FALSE(res.has_numeric());  // not asked for
    }
    return errors;
  }
};

TEST_P(SeedGradCheckTest, ConvBackward) {
  TensorMap in;
  in.emplace("x", Randn(DType::kFloat64, {4, 3, 5, 5}, 15));
  in.emplace("w", Randn(DType::kFloat64, {2, 3, 3, 3}, 16));
  in.emplace("b", Randn(DType::kFloat64, {2}, 17));
  auto e = Check(ConvSpec("conv", 1, 1), in,
                 Randn(DType::kFloat64, {4, 2, 5, 5}, 18));
  ASSERT_EQ(e.size(), 3u);
  EXPECT_LE(e["x"], kF64ConvGradTol);
  EXPECT_LE(e["w"], kF64ConvGradTol);
  EXPECT_LE(e["b"], kF64ConvGradTol);
}

TEST_P(SeedGradCheckTest, MaxPoolBackward) {
  TensorMap in;
  in.emplace("x", Randn(DType::kFloat64, {3, 2, 8, 8}, 17));
  auto e =
      Check(PoolSpec(2, 2, 2), in, Randn(DType::kFloat64, {3, 2, 4, 4}, 18));
  ASSERT_EQ(e.size(), 1u);
  EXPECT_LE(e["x"], kF64PoolGradTol);
}

TEST_P(SeedGradCheckTest, ConvReluPoolBackward) {
  v1::LayerSpec spec = ConvSpec("conv_relu_pool", 1, 1);
  *spec.mutable_pool_param() = PoolSpec(2, 2, 2).pool_param();
  TensorMap in;
  in.emplace("x", Randn(DType::kFloat64, {2, 3, 16, 16}, 21));
  in.emplace("w", Randn(DType::kFloat64, {3, 3, 3, 3}, 22));
  in.emplace("b", Randn(DType::kFloat64, {3}, 23));
  auto e = Check(spec, in, Randn(DType::kFloat64, {2, 3, 8, 8}, 24));
  ASSERT_EQ(e.size(), 3u);
  for (const auto& [name, err] : e) {
    EXPECT_LE(err, kF64CompositeGradTol) << name;
  }
}

TEST_P(SeedGradCheckTest, ConvReluBackward) {
  TensorMap in;
  in.emplace("x", Randn(DType::kFloat64, {2, 3, 8, 8}, 31));
  in.emplace("w", Randn(DType::kFloat64, {3, 3, 3, 3}, 32));
  in.emplace("b", Randn(DType::kFloat64, {3}, 33));
  auto e = Check(ConvSpec("conv_relu", 1, 1), in,
                 Randn(DType::kFloat64, {2, 3, 8, 8}, 34));
  ASSERT_EQ(e.size(), 3u);
  for (const auto& [name, err] : e) {
    EXPECT_LE(err, kF64CompositeGradTol) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Impls, SeedGradCheckTest,
                         ::testing::Values(v1::NAIVE, v1::FAST),
                         [](const auto& info) {
                           return v1::Implementation_Name(info.param);
                         });

// --- every RPC, every layer, both implementations and dtypes ----------------

TEST(ListLayersTest, ListsEveryRegistryLayer) {
  absl::StatusOr<v1::ListLayersResponse> r = Client().ListLayers();
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<std::string> names;
  for (const v1::LayerInfo& l : r->layers()) names.push_back(l.name());
  EXPECT_EQ(names,
            std::vector<std::string>(
                {"conv", "max_pool", "relu", "conv_relu", "conv_relu_pool",
                 "affine", "affine_relu", "batchnorm", "spatial_batchnorm",
                 "dropout", "softmax_loss", "svm_loss", "conv_batchnorm_relu",
                 "affine_batchnorm_relu"}));
  const v1::LayerInfo& conv = r->layers(0);
  EXPECT_THAT(conv.inputs(), ::testing::ElementsAre("x", "w", "b"));
  EXPECT_THAT(conv.params(), ::testing::ElementsAre("conv_param"));
  EXPECT_EQ(conv.output(), "out");
  EXPECT_THAT(conv.grads(), ::testing::ElementsAre("dx", "dw", "db"));
  EXPECT_THAT(conv.implementations(),
              ::testing::ElementsAre(v1::NAIVE, v1::FAST));
  EXPECT_THAT(conv.dtypes(), ::testing::ElementsAre(v1::FLOAT32, v1::FLOAT64));
  EXPECT_FALSE(conv.summary().empty());
  EXPECT_THAT(r->layers(1).params(), ::testing::ElementsAre("pool_param"));
  EXPECT_THAT(r->layers(2).params(), ::testing::ElementsAre());
  EXPECT_THAT(r->layers(4).params(),
              ::testing::ElementsAre("conv_param", "pool_param"));
}

class EveryLayerTest : public ::testing::TestWithParam<
                           std::tuple<LayerCase, v1::Implementation, DType>> {
 protected:
  const LayerCase& layer() const { return std::get<0>(GetParam()); }
  v1::Implementation impl() const { return std::get<1>(GetParam()); }
  DType dtype() const { return std::get<2>(GetParam()); }
  LayerSpec spec() const {
    return ValueOrDie(LayerSpecFromProto(layer().spec));
  }

  // The reference: the naive layer in float64 on the same values.
  static TensorMap AsF64(const TensorMap& in) {
    TensorMap out;
    for (const auto& [k, t] : in) out.emplace(k, t.CastTo(DType::kFloat64));
    return out;
  }
  // fast vs naive, float32 vs float64: float64 agrees to rounding; float32
  // carries ~7 digits and the outputs are O(1..10).
  void ExpectClose(const Tensor& got, const Tensor& want,
                   const std::string& what) const {
    EXPECT_EQ(got.dtype(), dtype()) << what;
    ASSERT_EQ(got.shape(), want.shape()) << what;
    if (dtype() == DType::kFloat64) {
      EXPECT_LE(RelErr(got, want), 1e-9) << what;
    } else {
      EXPECT_LE(ValueOrDie(MaxAbsError(got, want)), 1e-4) << what;
    }
  }
};

TEST_P(EveryLayerTest, Forward) {
  const TensorMap in = RandomInputs(layer(), dtype());
  v1::ForwardRequest req;
  *req.mutable_layer() = layer().spec;
  req.set_implementation(impl());
  PutInputs(in, req.mutable_inputs());
  absl::StatusOr<v1::ForwardResponse> r = Client().Forward(req);
  ASSERT_TRUE(r.ok()) << r.status();
  ForwardResult want = ValueOrDie(Forward(spec(), Impl::kNaive, AsF64(in)));
  ASSERT_EQ(r->outputs().size(), 1u);
  ExpectClose(TensorOf(r->outputs().at("out")), want.outputs.at("out"), "out");
  if (impl() == v1::NAIVE) {
    EXPECT_EQ(r->implementation_name(), "naive");
  } else {
    EXPECT_FALSE(r->implementation_name().empty());
  }
  EXPECT_GT(r->compute_ns(), 0);
}

TEST_P(EveryLayerTest, Backward) {
  const TensorMap in = RandomInputs(layer(), dtype());
  const Shape out_shape = ValueOrDie(InferOutput(spec(), DescsOf(in))).shape;
  const Tensor dout = Randn(dtype(), out_shape, 99);
  v1::BackwardRequest req;
  *req.mutable_layer() = layer().spec;
  req.set_implementation(impl());
  PutInputs(in, req.mutable_inputs());
  *req.mutable_dout() = ProtoOf(dout);
  absl::StatusOr<v1::BackwardResponse> r = Client().Backward(req);
  ASSERT_TRUE(r.ok()) << r.status();
  BackwardResult want = ValueOrDie(
      Backward(spec(), Impl::kNaive, AsF64(in), dout.CastTo(DType::kFloat64)));
  ASSERT_EQ(r->grads().size(), want.grads.size());
  for (const auto& [name, g] : want.grads) {
    ASSERT_EQ(r->grads().count(name), 1u) << name;
    ExpectClose(TensorOf(r->grads().at(name)), g, name);
  }
  EXPECT_FALSE(r->implementation_name().empty());
  EXPECT_GT(r->compute_ns(), 0);
}

TEST_P(EveryLayerTest, GradCheck) {
  const TensorMap in = RandomInputs(layer(), dtype());
  v1::GradCheckRequest req;
  *req.mutable_layer() = layer().spec;
  req.set_implementation(impl());
  PutInputs(in, req.mutable_inputs());
  req.set_seed(7);  // dout drawn by the server
  req.set_return_gradients(true);
  absl::StatusOr<v1::GradCheckResponse> r = Client().GradCheck(req);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(static_cast<size_t>(r->results_size()), layer().inputs.size());
  for (int i = 0; i < r->results_size(); ++i) {
    const v1::GradCheckResult& res = r->results(i);
    const auto& [name, shape] = layer().inputs[i];
    EXPECT_EQ(res.input(), name);
    EXPECT_EQ(res.worst_index_size(), static_cast<int>(shape.size()));
    const Tensor numeric = TensorOf(res.numeric());
    const Tensor analytic = TensorOf(res.analytic());
    EXPECT_EQ(numeric.shape(), shape);
    EXPECT_EQ(analytic.shape(), shape);
    EXPECT_EQ(analytic.dtype(), dtype());
    EXPECT_DOUBLE_EQ(res.rel_error(), RelErr(numeric, analytic))
        << "the reported error is the one of the returned gradients";
    if (dtype() == DType::kFloat64) {
      EXPECT_LE(res.rel_error(), kF64CompositeGradTol) << name;
    }
  }
  EXPECT_FALSE(r->implementation_name().empty());
}

INSTANTIATE_TEST_SUITE_P(
    LayersImplsDtypes, EveryLayerTest,
    ::testing::Combine(::testing::ValuesIn(AllLayerCases()),
                       ::testing::Values(v1::NAIVE, v1::FAST),
                       ::testing::Values(DType::kFloat32, DType::kFloat64)),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param).name, "_",
                          v1::Implementation_Name(std::get<1>(info.param)), "_",
                          DTypeName(std::get<2>(info.param)));
    });

// Compare runs both implementations: once per layer and dtype.
class CompareTest
    : public ::testing::TestWithParam<std::tuple<LayerCase, DType>> {
 protected:
  const LayerCase& layer() const { return std::get<0>(GetParam()); }
  DType dtype() const { return std::get<1>(GetParam()); }
};

TEST_P(CompareTest, NaiveVsFast) {
  const TensorMap in = RandomInputs(layer(), dtype());
  v1::CompareRequest req;
  *req.mutable_layer() = layer().spec;
  PutInputs(in, req.mutable_inputs());
  req.set_seed(3);
  req.set_repeats(2);
  absl::StatusOr<v1::CompareResponse> r = Client().Compare(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->naive_implementation_name(), "naive");
  EXPECT_FALSE(r->fast_implementation_name().empty());
  EXPECT_EQ(r->repeats(), 2);
  EXPECT_GT(r->naive_forward_seconds(), 0);
  EXPECT_GT(r->fast_forward_seconds(), 0);
  EXPECT_GT(r->naive_backward_seconds(), 0);
  EXPECT_GT(r->fast_backward_seconds(), 0);
  EXPECT_DOUBLE_EQ(r->forward_speedup(),
                   r->naive_forward_seconds() / r->fast_forward_seconds());
  EXPECT_DOUBLE_EQ(r->backward_speedup(),
                   r->naive_backward_seconds() / r->fast_backward_seconds());
  // rel_error's 1e-8 floor makes float32 near-zero elements look large;
  // the fast layers' own tests hold the tight float32 bounds.
  const double tol = dtype() == DType::kFloat64 ? 1e-9 : 1e-2;
  EXPECT_LE(r->output_rel_error(), tol);
  std::vector<std::string> grads;
  for (const auto& [name, e] : r->grad_rel_errors()) {
    grads.push_back(name);
    EXPECT_LE(e, tol) << name;
  }
  std::vector<std::string> want;
  for (const auto& [name, shape] : layer().inputs) want.push_back("d" + name);
  EXPECT_THAT(grads, ::testing::UnorderedElementsAreArray(want));
}

INSTANTIATE_TEST_SUITE_P(
    LayersDtypes, CompareTest,
    ::testing::Combine(::testing::ValuesIn(AllLayerCases()),
                       ::testing::Values(DType::kFloat32, DType::kFloat64)),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param).name, "_",
                          DTypeName(std::get<1>(info.param)));
    });

TEST(ServiceTest, UnspecifiedImplementationMeansFast) {
  v1::ForwardRequest req =
      SeedConvForwardRequest(DType::kFloat64, v1::IMPLEMENTATION_UNSPECIFIED);
  absl::StatusOr<v1::ForwardResponse> unspecified = Client().Forward(req);
  req.set_implementation(v1::FAST);
  absl::StatusOr<v1::ForwardResponse> fast = Client().Forward(req);
  ASSERT_TRUE(unspecified.ok()) << unspecified.status();
  ASSERT_TRUE(fast.ok()) << fast.status();
  EXPECT_EQ(unspecified->implementation_name(), fast->implementation_name());
}

TEST(ServiceTest, ForwardAndBackwardPropagateNaN) {
  v1::ForwardRequest req = SeedConvForwardRequest(DType::kFloat64, v1::NAIVE);
  Tensor x = TensorOf(req.inputs().at("x"));
  x.SetFlat(0, std::numeric_limits<double>::quiet_NaN());
  (*req.mutable_inputs())["x"] = ProtoOf(x);
  absl::StatusOr<v1::ForwardResponse> r = Client().Forward(req);
  ASSERT_TRUE(r.ok()) << r.status();
  const Tensor out = TensorOf(r->outputs().at("out"));
  EXPECT_TRUE(std::isnan(out.GetFlat(0)));  // x[0,0,0,0] feeds out[0,:,0,0]
  EXPECT_FALSE(std::isnan(out.GetFlat(out.size() - 1)));  // sample 1

  v1::BackwardRequest b;
  *b.mutable_layer() = req.layer();
  *b.mutable_inputs() = req.inputs();
  *b.mutable_dout() = ProtoOf(Randn(DType::kFloat64, {2, 3, 2, 2}, 5));
  absl::StatusOr<v1::BackwardResponse> g = Client().Backward(b);
  ASSERT_TRUE(g.ok()) << g.status();
  // dw[0, 0, 1, 1] sums x[0, 0, 0, 0] * dout[0, f, 0, 0].
  EXPECT_TRUE(std::isnan(TensorOf(g->grads().at("dw")).GetFlat(5)));
  EXPECT_FALSE(std::isnan(TensorOf(g->grads().at("db")).GetFlat(0)));
}

TEST(ServiceTest, GradCheckDefaultsStepAndDrawsDoutFromSeed) {
  v1::GradCheckRequest req;
  *req.mutable_layer() = PoolSpec(2, 2, 2);
  (*req.mutable_inputs())["x"] =
      ProtoOf(Randn(DType::kFloat64, {1, 2, 4, 4}, 3));
  req.set_seed(11);
  absl::StatusOr<v1::GradCheckResponse> a = Client().GradCheck(req);
  req.set_h(1e-5);
  absl::StatusOr<v1::GradCheckResponse> b = Client().GradCheck(req);
  req.set_seed(12);
  absl::StatusOr<v1::GradCheckResponse> c = Client().GradCheck(req);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  // Same seed and h (0 means 1e-5): the same check, to the bit.
  EXPECT_EQ(a->results(0).max_abs_error(), b->results(0).max_abs_error());
  EXPECT_EQ(a->results(0).rel_error(), b->results(0).rel_error());
  EXPECT_LE(c->results(0).rel_error(), kF64PoolGradTol);
}

// Sampled mode: K distinct random elements per input, reported and
// reproducible, the errors computed over those only.
TEST(ServiceTest, SampledGradCheckChecksKElementsPerInput) {
  v1::GradCheckRequest req;
  *req.mutable_layer() = ConvSpec("conv", 1, 1);
  req.set_implementation(v1::NAIVE);
  (*req.mutable_inputs())["x"] =
      ProtoOf(Randn(DType::kFloat64, {2, 3, 8, 8}, 1));
  (*req.mutable_inputs())["w"] =
      ProtoOf(Randn(DType::kFloat64, {4, 3, 3, 3}, 2));
  (*req.mutable_inputs())["b"] = ProtoOf(Randn(DType::kFloat64, {4}, 3));
  req.set_seed(5);
  req.set_num_checks(10);
  req.set_return_gradients(true);
  absl::StatusOr<v1::GradCheckResponse> r = Client().GradCheck(req);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 3);
  for (const v1::GradCheckResult& res : r->results()) {
    SCOPED_TRACE(res.input());
    const Tensor numeric = TensorOf(res.numeric());
    const Tensor analytic = TensorOf(res.analytic());
    std::vector<int64_t> checked(res.checked_indices().begin(),
                                 res.checked_indices().end());
    if (res.input() == "b") {
      // 4 elements, fewer than 10: checked whole, reported as such.
      EXPECT_TRUE(checked.empty());
      for (int64_t i = 0; i < 4; ++i) checked.push_back(i);
    } else {
      ASSERT_EQ(checked.size(), 10u);
      for (size_t i = 1; i < checked.size(); ++i) {
        EXPECT_LT(checked[i - 1], checked[i]);  // ascending, distinct
      }
      EXPECT_GE(checked.front(), 0);
      EXPECT_LT(checked.back(), numeric.size());
    }
    // numeric is NaN exactly where the check did not look.
    int64_t finite = 0;
    for (int64_t i = 0; i < numeric.size(); ++i) {
      finite += std::isfinite(numeric.GetFlat(i)) ? 1 : 0;
    }
    EXPECT_EQ(finite, static_cast<int64_t>(checked.size()));
    // The reported errors are those of the checked elements.
    double worst = -1, max_abs = 0;
    int64_t worst_at = -1;
    for (int64_t i : checked) {
      const double a = numeric.GetFlat(i), b = analytic.GetFlat(i);
      ASSERT_TRUE(std::isfinite(a)) << i;
      const double rel =
          std::abs(a - b) / std::max(1e-8, std::abs(a) + std::abs(b));
      if (rel > worst) {
        worst = rel;
        worst_at = i;
      }
      max_abs = std::max(max_abs, std::abs(a - b));
    }
    EXPECT_DOUBLE_EQ(res.rel_error(), worst);
    EXPECT_DOUBLE_EQ(res.max_abs_error(), max_abs);
    const std::vector<int64_t> worst_index = numeric.Unravel(worst_at);
    EXPECT_THAT(res.worst_index(), ::testing::ElementsAreArray(worst_index));
    EXPECT_LE(res.rel_error(), kF64ConvGradTol);
  }

  // The same seed checks the same elements; another seed, others.
  absl::StatusOr<v1::GradCheckResponse> again = Client().GradCheck(req);
  req.set_seed(6);
  absl::StatusOr<v1::GradCheckResponse> other = Client().GradCheck(req);
  ASSERT_TRUE(again.ok() && other.ok());
  EXPECT_THAT(again->results(0).checked_indices(),
              ::testing::ElementsAreArray(r->results(0).checked_indices()));
  EXPECT_THAT(other->results(0).checked_indices(),
              ::testing::Not(::testing::ElementsAreArray(
                  r->results(0).checked_indices())));
}

TEST(ServiceTest, GradCheckCostLimitPointsToSampledMode) {
  server::ServerOptions o;
  o.address = "";
  o.service.log_calls = false;
  o.service.limits.max_gradcheck_macs = 1000000;
  std::unique_ptr<server::LayerServer> server =
      ValueOrDie(server::LayerServer::Start(o));
  LayerClient client(server->InProcessChannel(), {});
  v1::GradCheckRequest req;
  *req.mutable_layer() = ConvSpec("conv", 1, 1);
  (*req.mutable_inputs())["x"] =
      ProtoOf(Randn(DType::kFloat64, {2, 3, 8, 8}, 1));
  (*req.mutable_inputs())["w"] =
      ProtoOf(Randn(DType::kFloat64, {4, 3, 3, 3}, 2));
  (*req.mutable_inputs())["b"] = ProtoOf(Randn(DType::kFloat64, {4}, 3));
  ExpectError(client.GradCheck(req).status(),
              absl::StatusCode::kResourceExhausted,
              {"conv: this gradient check would run 992 forward passes (2 "
               "for each of the 496 checked elements of x, w, b, all of "
               "them)",
               "more than the limit of 1000000 (--max_gradcheck_macs); raise "
               "--max_gradcheck_macs or check a random sample of the elements "
               "(num_checks, sampled mode)"});
  req.set_num_checks(5);
  absl::StatusOr<v1::GradCheckResponse> sampled = client.GradCheck(req);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  EXPECT_EQ(sampled->results(0).checked_indices_size(), 5);
  EXPECT_EQ(sampled->results(1).checked_indices_size(), 5);
  EXPECT_EQ(sampled->results(2).checked_indices_size(), 0);  // b: 4 < 5
}

TEST(ServiceTest, ConcurrentCallsAllCorrect) {
  constexpr int kThreads = 4, kCalls = 5;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        absl::StatusOr<v1::ForwardResponse> r =
            Client().Forward(SeedConvForwardRequest(
                DType::kFloat64, (t + i) % 2 ? v1::NAIVE : v1::FAST));
        if (r.ok() && RelErr(TensorOf(r->outputs().at("out")),
                             SeedConvCorrect()) <= kF64VectorTol) {
          ++good;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(good.load(), kThreads * kCalls);
}

TEST(ServiceTest, DeadlineStopsALongCallAndTheServerGoesOn) {
  // A naive gradient check this size takes tens of seconds; the server must
  // give up at the deadline instead of computing for nobody.
  client::ClientOptions o;
  o.timeout = absl::Milliseconds(300);
  server::ServerOptions so;
  so.address = "";
  so.service.log_calls = false;
  so.service.limits.max_gradcheck_macs = int64_t{1} << 62;
  std::unique_ptr<server::LayerServer> server =
      ValueOrDie(server::LayerServer::Start(so));
  LayerClient client(server->InProcessChannel(), o);
  v1::GradCheckRequest req;
  *req.mutable_layer() = ConvSpec("conv", 1, 1);
  req.set_implementation(v1::NAIVE);
  (*req.mutable_inputs())["x"] =
      ProtoOf(Randn(DType::kFloat64, {4, 8, 32, 32}, 1));
  (*req.mutable_inputs())["w"] =
      ProtoOf(Randn(DType::kFloat64, {8, 8, 3, 3}, 2));
  (*req.mutable_inputs())["b"] = ProtoOf(Randn(DType::kFloat64, {8}, 3));
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::GradCheckResponse> r = client.GradCheck(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
      << r.status();
  ExpectSeedConvWorks(Client());
  // Shutdown waits for the handler: it returns soon only if the computation
  // noticed the deadline.
  server->Shutdown(absl::Seconds(30));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

// --- bad requests -----------------------------------------------------------

struct BadCase {
  std::string label;
  Which server = Which::kDefault;
  std::function<absl::Status(LayerClient&)> call;
  absl::StatusCode code;
  std::vector<std::string> substrings;
};

using Mutate = std::function<void(v1::ForwardRequest&)>;

// The seed conv forward (float64), changed by `mutate`.
std::function<absl::Status(LayerClient&)> BadForward(Mutate mutate) {
  return [mutate](LayerClient& client) {
    v1::ForwardRequest r = SeedConvForwardRequest(DType::kFloat64, v1::FAST);
    mutate(r);
    return client.Forward(r).status();
  };
}

v1::Tensor& In(v1::ForwardRequest& r, const std::string& name) {
  return (*r.mutable_inputs())[name];
}

// Small conv inputs: x (1,1,4,4), w (1,1,k,k), b (1,).
void SmallConv(v1::ForwardRequest& r, int k, int stride, int pad) {
  *r.mutable_layer() = ConvSpec("conv", stride, pad);
  In(r, "x") = ProtoOf(Randn(DType::kFloat64, {1, 1, 4, 4}, 1));
  In(r, "w") = ProtoOf(Randn(DType::kFloat64, {1, 1, k, k}, 2));
  In(r, "b") = ProtoOf(Randn(DType::kFloat64, {1}, 3));
}

// A request for another RPC built from the seed conv forward's fields.
template <typename Request>
Request From(const v1::ForwardRequest& f) {
  Request r;
  *r.mutable_layer() = f.layer();
  *r.mutable_inputs() = f.inputs();
  return r;
}

std::vector<BadCase> BadCases() {
  using Code = absl::StatusCode;
  const Code kInvalid = Code::kInvalidArgument;
  const Code kExhausted = Code::kResourceExhausted;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<BadCase> cases = {
      {"UnknownLayer",
       Which::kDefault,
       BadForward([](auto& r) { r.mutable_layer()->set_name("conv2d"); }),
       kInvalid,
       {"layer.name: unknown layer 'conv2d'",
        "known layers: conv, max_pool, relu, conv_relu, conv_relu_pool"}},
      {"MissingInput",
       Which::kDefault,
       BadForward([](auto& r) { r.mutable_inputs()->erase("b"); }),
       kInvalid,
       {"conv: missing input 'b' (expected inputs: x, w, b)"}},
      {"UnexpectedInput",
       Which::kDefault,
       BadForward([](auto& r) { In(r, "bias") = r.inputs().at("b"); }),
       kInvalid,
       {"conv: unexpected input 'bias'"}},
      {"DtypeUnspecified",
       Which::kDefault,
       BadForward([](auto& r) { In(r, "x").set_dtype(v1::DTYPE_UNSPECIFIED); }),
       kInvalid,
       {"inputs[\"x\"].dtype: must be FLOAT32, FLOAT64 or INT64, got "
        "DTYPE_UNSPECIFIED"}},
      {"DtypeUnknownValue",
       Which::kDefault,
       BadForward(
           [](auto& r) { In(r, "x").set_dtype(static_cast<v1::DType>(7)); }),
       kInvalid,
       {"inputs[\"x\"].dtype: must be FLOAT32, FLOAT64 or INT64, got 7"}},
      {"DtypesMixed",
       Which::kDefault,
       BadForward([](auto& r) {
         In(r, "w") =
             ProtoOf(Linspace(DType::kFloat32, {3, 3, 4, 4}, -0.2, 0.3));
       }),
       kInvalid,
       {"conv: input w is float32 but x is float64"}},
      {"RankWrongForLayer",
       Which::kDefault,
       BadForward([](auto& r) {
         In(r, "x").clear_shape();
         for (int64_t d : {6, 4, 4}) In(r, "x").add_shape(d);
       }),
       kInvalid,
       {"conv: input x must have rank 4 (N, C, H, W), got rank 3 (shape (6, "
        "4, 4))"}},
      {"RankAboveFour",
       Which::kDefault,
       BadForward([](auto& r) {
         In(r, "x").clear_shape();
         for (int64_t d : {1, 2, 3, 4, 4}) In(r, "x").add_shape(d);
       }),
       kInvalid,
       {"inputs[\"x\"].shape: rank must be 1..4, got 5"}},
      {"RankZero",
       Which::kDefault,
       BadForward([](auto& r) {
         In(r, "b").clear_shape();
         In(r, "b").clear_data();
       }),
       kInvalid,
       {"inputs[\"b\"].shape: rank must be 1..4, got 0"}},
      {"DataTooShort",
       Which::kDefault,
       BadForward([](auto& r) { In(r, "x").mutable_data()->resize(760); }),
       kInvalid,
       {"inputs[\"x\"].data: expected 768 bytes (shape (2, 3, 4, 4) x 8 "
        "bytes for FLOAT64), got 760"}},
      {"DataTooLong",
       Which::kDefault,
       BadForward([](auto& r) { In(r, "b").mutable_data()->append("1234"); }),
       kInvalid,
       {"inputs[\"b\"].data: expected 24 bytes (shape (3,) x 8 bytes for "
        "FLOAT64), got 28"}},
      {"DimZero",
       Which::kDefault,
       BadForward([](auto& r) { In(r, "w").set_shape(1, 0); }),
       kInvalid,
       {"inputs[\"w\"].shape: dim 1 must be >= 1, got 0"}},
      {"DimNegative",
       Which::kDefault,
       BadForward([](auto& r) { In(r, "x").set_shape(0, -2); }),
       kInvalid,
       {"inputs[\"x\"].shape: dim 0 must be >= 1, got -2"}},
      {"ElementCountOverflowsInt64",
       Which::kDefault,
       BadForward([](auto& r) {
         In(r, "x").clear_shape();
         for (int64_t d : {int64_t{1} << 32, int64_t{1} << 32, int64_t{1} << 32,
                           int64_t{1}}) {
           In(r, "x").add_shape(d);
         }
       }),
       kInvalid,
       {"inputs[\"x\"].shape: element count of shape (4294967296, "
        "4294967296, 4294967296, 1) overflows int64"}},
      {"ChannelsDisagree",
       Which::kDefault,
       BadForward([](auto& r) {
         In(r, "w") =
             ProtoOf(Linspace(DType::kFloat64, {3, 2, 4, 4}, -0.2, 0.3));
       }),
       kInvalid,
       {"conv: input x has 3 channels (x.shape[1]) but w expects 2 "
        "(w.shape[1])"}},
      {"ConvStrideZero",
       Which::kDefault,
       BadForward([](auto& r) {
         r.mutable_layer()->mutable_conv_param()->set_stride(0);
       }),
       kInvalid,
       {"conv: conv_param.stride must be >= 1, got 0"}},
      {"ConvPadNegative",
       Which::kDefault,
       BadForward([](auto& r) {
         r.mutable_layer()->mutable_conv_param()->set_pad(-1);
       }),
       kInvalid,
       {"conv: conv_param.pad must be >= 0, got -1"}},
      {"KernelLargerThanPaddedInput",
       Which::kDefault,
       BadForward([](auto& r) { SmallConv(r, 7, 1, 1); }),
       kInvalid,
       {"conv: kernel height 7 (w.shape[2]) exceeds the padded input height "
        "6"}},
      {"ConvParamMissing",
       Which::kDefault,
       BadForward([](auto& r) { r.mutable_layer()->clear_conv_param(); }),
       kInvalid,
       {"layer.conv_param: layer 'conv' requires it, but it is not set"}},
      {"PoolParamMissing",
       Which::kDefault,
       BadForward(
           [](auto& r) { r.mutable_layer()->set_name("conv_relu_pool"); }),
       kInvalid,
       {"layer.pool_param: layer 'conv_relu_pool' requires it"}},
      {"PoolHeightZero",
       Which::kDefault,
       BadForward([](auto& r) {
         *r.mutable_layer() = PoolSpec(0, 2, 2);
         r.mutable_inputs()->erase("w");
         r.mutable_inputs()->erase("b");
       }),
       kInvalid,
       {"max_pool: pool_param.pool_height must be >= 1, got 0"}},
      {"ImplementationUnknown",
       Which::kDefault,
       BadForward([](auto& r) {
         r.set_implementation(static_cast<v1::Implementation>(9));
       }),
       kInvalid,
       {"implementation: must be NAIVE, FAST or IMPLEMENTATION_UNSPECIFIED, "
        "got 9"}},
      {"BackwardDoutShape",
       Which::kDefault,
       [](LayerClient& c) {
         auto r = From<v1::BackwardRequest>(
             SeedConvForwardRequest(DType::kFloat64, v1::FAST));
         *r.mutable_dout() = ProtoOf(Randn(DType::kFloat64, {2, 3, 2, 3}, 1));
         return c.Backward(r).status();
       },
       kInvalid,
       {"conv: dout has shape (2, 3, 2, 3) but the output has shape (2, 3, 2, "
        "2)"}},
      {"BackwardDoutMissing",
       Which::kDefault,
       [](LayerClient& c) {
         return c
             .Backward(From<v1::BackwardRequest>(
                 SeedConvForwardRequest(DType::kFloat64, v1::FAST)))
             .status();
       },
       kInvalid,
       {"conv: dout is missing (expected shape (2, 3, 2, 2))"}},
      {"BackwardDoutDtype",
       Which::kDefault,
       [](LayerClient& c) {
         auto r = From<v1::BackwardRequest>(
             SeedConvForwardRequest(DType::kFloat64, v1::FAST));
         *r.mutable_dout() = ProtoOf(Randn(DType::kFloat32, {2, 3, 2, 2}, 1));
         return c.Backward(r).status();
       },
       kInvalid,
       {"conv: dout is float32 but the inputs are float64"}},
      {"BackwardDoutDataLength",
       Which::kDefault,
       [](LayerClient& c) {
         auto r = From<v1::BackwardRequest>(
             SeedConvForwardRequest(DType::kFloat64, v1::FAST));
         *r.mutable_dout() = ProtoOf(Randn(DType::kFloat64, {2, 3, 2, 2}, 1));
         r.mutable_dout()->mutable_data()->resize(8);
         return c.Backward(r).status();
       },
       kInvalid,
       {"dout.data: expected 192 bytes (shape (2, 3, 2, 2) x 8 bytes for "
        "FLOAT64), got 8"}},
      {"GradCheckNaNInput",
       Which::kDefault,
       [nan](LayerClient& c) {
         auto r = From<v1::GradCheckRequest>(
             SeedConvForwardRequest(DType::kFloat64, v1::FAST));
         Tensor x = TensorOf(r.inputs().at("x"));
         x.SetFlat(5, nan);
         (*r.mutable_inputs())["x"] = ProtoOf(x);
         return c.GradCheck(r).status();
       },
       kInvalid,
       {"input x has a non-finite value nan at index [0, 0, 1, 1]"}},
      {"GradCheckInfDout",
       Which::kDefault,
       [inf](LayerClient& c) {
         auto r = From<v1::GradCheckRequest>(
             SeedConvForwardRequest(DType::kFloat64, v1::FAST));
         Tensor dout = Randn(DType::kFloat64, {2, 3, 2, 2}, 1);
         dout.SetFlat(0, -inf);
         *r.mutable_dout() = ProtoOf(dout);
         return c.GradCheck(r).status();
       },
       kInvalid,
       {"dout has a non-finite value -inf"}},
      {"GradCheckStepNegative",
       Which::kDefault,
       [](LayerClient& c) {
         auto r = From<v1::GradCheckRequest>(
             SeedConvForwardRequest(DType::kFloat64, v1::FAST));
         r.set_h(-1e-5);
         return c.GradCheck(r).status();
       },
       kInvalid,
       {"h: the step must be finite and > 0, got -1e-05"}},
      {"CompareNaNInput",
       Which::kDefault,
       [nan](LayerClient& c) {
         auto r = From<v1::CompareRequest>(
             SeedConvForwardRequest(DType::kFloat64, v1::FAST));
         Tensor w = TensorOf(r.inputs().at("w"));
         w.SetFlat(0, nan);
         (*r.mutable_inputs())["w"] = ProtoOf(w);
         return c.Compare(r).status();
       },
       kInvalid,
       {"input w has a non-finite value nan at index [0, 0, 0, 0]"}},
      {"CompareRepeatsTooMany",
       Which::kDefault,
       [](LayerClient& c) {
         auto r = From<v1::CompareRequest>(
             SeedConvForwardRequest(DType::kFloat64, v1::FAST));
         r.set_repeats(1000);
         return c.Compare(r).status();
       },
       kInvalid,
       {"repeats: must be 0..100 (0 means 1), got 1000"}},
      {"CompareDoutShape",
       Which::kDefault,
       [](LayerClient& c) {
         auto r = From<v1::CompareRequest>(
             SeedConvForwardRequest(DType::kFloat64, v1::FAST));
         *r.mutable_dout() = ProtoOf(Randn(DType::kFloat64, {2, 3, 1, 2}, 1));
         return c.Compare(r).status();
       },
       kInvalid,
       {"conv: dout is float64 of shape (2, 3, 1, 2) but the output is "
        "float64 of shape (2, 3, 2, 2)"}},
      // Limits: checked from the shapes, before anything is allocated.
      {"ForwardPadHugeOutput",
       Which::kDefault,
       BadForward([](auto& r) { SmallConv(r, 3, 1, 1000000000); }),
       kExhausted,
       {"conv: output out would have 4000000008000000004 elements (shape (1, "
        "1, 2000000002, 2000000002)), more than the limit of 67108864 "
        "elements (--max_tensor_elements)"}},
      {"BackwardPadHugeOutput",
       Which::kDefault,
       [](LayerClient& c) {
         v1::ForwardRequest f;
         SmallConv(f, 3, 1, 1000000000);
         auto r = From<v1::BackwardRequest>(f);
         *r.mutable_dout() = ProtoOf(Randn(DType::kFloat64, {1, 1, 2, 2}, 1));
         return c.Backward(r).status();
       },
       kExhausted,
       {"conv: output out would have", "(--max_tensor_elements)"}},
      {"GradCheckPadHugeOutput",
       Which::kDefault,
       [](LayerClient& c) {
         v1::ForwardRequest f;
         SmallConv(f, 3, 1, 1000000000);
         return c.GradCheck(From<v1::GradCheckRequest>(f)).status();
       },
       kExhausted,
       {"conv: output out would have", "(--max_tensor_elements)"}},
      {"CompareHugeOutput",
       Which::kDefault,
       [](LayerClient& c) {
         v1::ForwardRequest f;
         SmallConv(f, 1, 1, 100000);
         return c.Compare(From<v1::CompareRequest>(f)).status();
       },
       kExhausted,
       {"conv: output out would have 40001600016 elements"}},
      {"InputTooLarge",
       Which::kSmallTensors,
       [](LayerClient& c) {
         v1::ForwardRequest r;
         r.mutable_layer()->set_name("relu");
         In(r, "x") = ProtoOf(Randn(DType::kFloat32, {2, 1000}, 1));
         return c.Forward(r).status();
       },
       kExhausted,
       {"relu: input x would have 2000 elements (shape (2, 1000)), more than "
        "the limit of 1000 elements (--max_tensor_elements)"}},
      {"IntermediateTooLarge",
       Which::kSmallTensors,
       [](LayerClient& c) {
         v1::ForwardRequest r;
         SmallConv(r, 1, 1, 18);  // conv out (1, 1, 40, 40)
         r.mutable_layer()->set_name("conv_relu_pool");
         *r.mutable_layer()->mutable_pool_param() =
             PoolSpec(2, 2, 40).pool_param();  // out (1, 1, 1, 1)
         return c.Forward(r).status();
       },
       kExhausted,
       {"conv_relu_pool: the intermediate conv output would have 1600 "
        "elements"}},
      {"DoutTooLarge",
       Which::kSmallTensors,
       [](LayerClient& c) {
         v1::BackwardRequest r;
         r.mutable_layer()->set_name("relu");
         (*r.mutable_inputs())["x"] = ProtoOf(Randn(DType::kFloat64, {10}, 1));
         *r.mutable_dout() = ProtoOf(Randn(DType::kFloat64, {1001}, 2));
         return c.Backward(r).status();
       },
       kExhausted,
       {"dout would have 1001 elements"}},
      {"ResponseLargerThanMessageLimit",
       Which::kSmallMessages,
       BadForward([](auto& r) { SmallConv(r, 1, 1, 60); }),  // 124 x 124 out
       kExhausted,
       {"the response would carry 123008 bytes of output, more than the "
        "message limit of 65536 bytes (--max_message_bytes)"}},
      {"RequestLargerThanMessageLimit",
       Which::kSmallMessages,
       [](LayerClient& c) {
         v1::ForwardRequest r;
         r.mutable_layer()->set_name("relu");
         In(r, "x") = ProtoOf(Randn(DType::kFloat64, {10000}, 1));
         return c.Forward(r).status();
       },
       kExhausted,
       {"larger than max"}},
  };
  return cases;
}

class BadRequestTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadRequestTest, PreciseStatusThenServesAGoodRequest) {
  const BadCase& c = GetParam();
  LayerClient& client = Client(c.server);
  ExpectError(c.call(client), c.code, c.substrings);
  ExpectSeedConvWorks(client);
}

INSTANTIATE_TEST_SUITE_P(Cases, BadRequestTest, ::testing::ValuesIn(BadCases()),
                         [](const auto& info) { return info.param.label; });

}  // namespace
}  // namespace layerserve::testing
