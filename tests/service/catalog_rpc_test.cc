// The course's remaining layers over RPC (in-process channel to a started
// server): the catalog rows, a float64 gradient check of every
// differentiable input, both dtypes, INT64 labels, batchnorm's extra
// outputs, dropout's seeded mask, and the new parameters' validation.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/service/test_util.h"

namespace layerserve::testing {
namespace {

using client::LayerClient;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

LayerClient& Client() {
  static server::LayerServer* server = [] {
    server::ServerOptions o;
    o.address = "";
    o.service.log_calls = false;
    return ValueOrDie(server::LayerServer::Start(o)).release();
  }();
  static LayerClient* client = [] {
    client::ClientOptions co;
    co.timeout = absl::Seconds(120);
    return new LayerClient(server->InProcessChannel(), co);
  }();
  return *client;
}

v1::LayerSpec Spec(const std::string& name, v1::Mode mode = v1::TRAIN) {
  v1::LayerSpec s;
  s.set_name(name);
  if (name.find("conv") != std::string::npos) {
    s.mutable_conv_param()->set_stride(1);
    s.mutable_conv_param()->set_pad(1);
  }
  if (name.find("batchnorm") != std::string::npos) {
    s.mutable_bn_param()->set_mode(mode);
  }
  if (name == "dropout") {
    s.mutable_dropout_param()->set_p(0.6);
    s.mutable_dropout_param()->set_mode(mode);
    s.mutable_dropout_param()->set_seed(1234);
  }
  return s;
}

Tensor Labels(int64_t n, int64_t classes) {
  Tensor y = ValueOrDie(Tensor::Zeros(DType::kInt64, {n}));
  for (int64_t i = 0; i < n; ++i) y.data<int64_t>()[i] = (5 * i + 2) % classes;
  return y;
}

// Inputs for each new layer (float parts in `dtype`).
TensorMap InputsFor(const std::string& layer, DType dtype) {
  TensorMap m;
  auto put = [&](const char* name, Shape s, uint64_t seed) {
    m.emplace(name, Randn(dtype, std::move(s), seed));
  };
  auto bn = [&](int64_t c) {
    put("gamma", {c}, 11);
    put("beta", {c}, 12);
    put("running_mean", {c}, 13);
    Tensor var = ValueOrDie(Tensor::Zeros(dtype, {c}));
    var.Fill(1.5);
    m.emplace("running_var", std::move(var));
  };
  if (layer == "affine" || layer == "affine_relu") {
    put("x", {4, 3, 2}, 1);
    put("w", {6, 5}, 2);
    put("b", {5}, 3);
  } else if (layer == "batchnorm") {
    put("x", {6, 4}, 1);
    bn(4);
  } else if (layer == "spatial_batchnorm") {
    put("x", {3, 2, 3, 4}, 1);
    bn(2);
  } else if (layer == "dropout") {
    put("x", {2, 3, 4}, 1);
  } else if (layer == "softmax_loss" || layer == "svm_loss") {
    put("x", {8, 5}, 1);
    m.emplace("y", Labels(8, 5));
  } else if (layer == "conv_batchnorm_relu") {
    put("x", {2, 2, 4, 4}, 1);
    put("w", {3, 2, 3, 3}, 2);
    put("b", {3}, 3);
    bn(3);
  } else if (layer == "affine_batchnorm_relu") {
    put("x", {5, 6}, 1);
    put("w", {6, 4}, 2);
    put("b", {4}, 3);
    bn(4);
  }
  return m;
}

const std::vector<std::string>& NewLayers() {
  static const std::vector<std::string> layers = {"affine",
                                                  "affine_relu",
                                                  "batchnorm",
                                                  "spatial_batchnorm",
                                                  "dropout",
                                                  "softmax_loss",
                                                  "svm_loss",
                                                  "conv_batchnorm_relu",
                                                  "affine_batchnorm_relu"};
  return layers;
}

TEST(CatalogRpc, ListLayersDescribesTheNewRows) {
  v1::ListLayersResponse r = ValueOrDie(Client().ListLayers({}));
  const v1::LayerInfo* bn = nullptr;
  const v1::LayerInfo* loss = nullptr;
  for (const v1::LayerInfo& l : r.layers()) {
    if (l.name() == "spatial_batchnorm") bn = &l;
    if (l.name() == "softmax_loss") loss = &l;
  }
  ASSERT_NE(bn, nullptr);
  ASSERT_NE(loss, nullptr);
  EXPECT_THAT(bn->inputs(),
              ElementsAre("x", "gamma", "beta", "running_mean", "running_var"));
  EXPECT_THAT(bn->params(), ElementsAre("bn_param"));
  EXPECT_THAT(bn->extra_outputs(), ElementsAre("running_mean", "running_var"));
  EXPECT_THAT(bn->grad_inputs(), ElementsAre("x", "gamma", "beta"));
  EXPECT_THAT(bn->grads(), ElementsAre("dx", "dgamma", "dbeta"));
  EXPECT_THAT(loss->label_inputs(), ElementsAre("y"));
  EXPECT_EQ(loss->output(), "loss");
}

TEST(CatalogRpc, EveryNewLayerGradChecksInFloat64) {
  for (const std::string& layer : NewLayers()) {
    for (v1::Implementation impl : {v1::NAIVE, v1::FAST}) {
      SCOPED_TRACE(layer + (impl == v1::NAIVE ? " naive" : " fast"));
      v1::GradCheckRequest req;
      *req.mutable_layer() = Spec(layer);
      req.set_implementation(impl);
      req.set_seed(3);
      PutInputs(InputsFor(layer, DType::kFloat64), req.mutable_inputs());
      absl::StatusOr<v1::GradCheckResponse> r = Client().GradCheck(req);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_GT(r->results_size(), 0);
      for (const v1::GradCheckResult& g : r->results()) {
        // A bias right before a train-mode batchnorm has a zero gradient
        // (the mean subtraction cancels it): compare absolutely.
        if (g.input() == "b" && layer.find("batchnorm") != std::string::npos) {
          EXPECT_LT(g.max_abs_error(), 1e-9) << g.input();
        } else {
          EXPECT_LT(g.rel_error(), 1e-5) << g.input();
        }
      }
    }
  }
}

TEST(CatalogRpc, ForwardAndBackwardInBothDTypes) {
  for (const std::string& layer : NewLayers()) {
    TensorMap f64 = InputsFor(layer, DType::kFloat64);
    TensorMap f32 = InputsFor(layer, DType::kFloat32);
    SCOPED_TRACE(layer);
    v1::ForwardRequest req;
    *req.mutable_layer() = Spec(layer);
    PutInputs(f64, req.mutable_inputs());
    v1::ForwardResponse r64 = ValueOrDie(Client().Forward(req));
    req.clear_inputs();
    PutInputs(f32, req.mutable_inputs());
    v1::ForwardResponse r32 = ValueOrDie(Client().Forward(req));
    const std::string out =
        layer.find("loss") != std::string::npos ? "loss" : "out";
    ASSERT_EQ(r32.outputs().at(out).dtype(), v1::FLOAT32);
    // Same (float32-representable) inputs: float32 agrees to ~1e-6.
    EXPECT_LT(ValueOrDie(RelError(TensorOf(r32.outputs().at(out)),
                                  TensorOf(r64.outputs().at(out)))),
              1e-4);

    v1::BackwardRequest breq;
    *breq.mutable_layer() = Spec(layer);
    PutInputs(f32, breq.mutable_inputs());
    const Tensor& o = TensorOf(r32.outputs().at(out));
    *breq.mutable_dout() = ProtoOf(Randn(DType::kFloat32, o.shape(), 9));
    v1::BackwardResponse g = ValueOrDie(Client().Backward(breq));
    EXPECT_EQ(g.grads().at("dx").dtype(), v1::FLOAT32);
    EXPECT_EQ(g.grads().count("dy"), 0u);
    EXPECT_EQ(g.grads().count("drunning_mean"), 0u);
  }
}

TEST(CatalogRpc, SpatialBatchnormTrainNormalizesPerChannel) {
  // The course's check: after a train-mode forward, each channel's mean is
  // beta and its standard deviation gamma.
  TensorMap in;
  Tensor x = Randn(DType::kFloat64, {10, 3, 4, 5}, 1);
  for (int64_t i = 0; i < x.size(); ++i) x.SetFlat(i, 10 + 4 * x.GetFlat(i));
  in.emplace("x", std::move(x));
  Tensor gamma = Linspace(DType::kFloat64, {3}, 1, 3);
  Tensor beta = Linspace(DType::kFloat64, {3}, 0, -2);
  in.emplace("gamma", gamma.Clone());
  in.emplace("beta", beta.Clone());
  in.emplace("running_mean", ValueOrDie(Tensor::Zeros(DType::kFloat64, {3})));
  Tensor rv = ValueOrDie(Tensor::Zeros(DType::kFloat64, {3}));
  rv.Fill(1);
  in.emplace("running_var", std::move(rv));
  v1::ForwardRequest req;
  *req.mutable_layer() = Spec("spatial_batchnorm");
  PutInputs(in, req.mutable_inputs());
  v1::ForwardResponse r = ValueOrDie(Client().Forward(req));
  ASSERT_EQ(r.outputs().size(), 3u);
  Tensor out = TensorOf(r.outputs().at("out"));
  for (int64_t c = 0; c < 3; ++c) {
    double s = 0, sq = 0;
    for (int64_t n = 0; n < 10; ++n)
      for (int64_t i = 0; i < 20; ++i) {
        const double v = out.GetFlat((n * 3 + c) * 20 + i);
        s += v;
        sq += v * v;
      }
    const double mean = s / 200, std = std::sqrt(sq / 200 - mean * mean);
    EXPECT_NEAR(mean, beta.GetFlat(c), 1e-12) << c;
    EXPECT_NEAR(std, gamma.GetFlat(c), 1e-5) << c;
  }
  Tensor rm = TensorOf(r.outputs().at("running_mean"));
  EXPECT_NEAR(rm.GetFlat(0), 0.1 * 10, 0.2);  // 0.9 * 0 + 0.1 * ~10
}

TEST(CatalogRpc, DropoutForwardAndBackwardShareTheMask) {
  TensorMap in = InputsFor("dropout", DType::kFloat64);
  v1::ForwardRequest f;
  *f.mutable_layer() = Spec("dropout");
  PutInputs(in, f.mutable_inputs());
  Tensor out = TensorOf(ValueOrDie(Client().Forward(f)).outputs().at("out"));
  v1::BackwardRequest b;
  *b.mutable_layer() = Spec("dropout");
  PutInputs(in, b.mutable_inputs());
  Tensor ones = ValueOrDie(Tensor::Zeros(DType::kFloat64, out.shape()));
  ones.Fill(1);
  *b.mutable_dout() = ProtoOf(ones);
  Tensor dx = TensorOf(ValueOrDie(Client().Backward(b)).grads().at("dx"));
  int kept = 0;
  for (int64_t i = 0; i < out.size(); ++i) {
    const bool k = out.GetFlat(i) != 0;
    kept += k;
    EXPECT_EQ(dx.GetFlat(i), k ? 1 / 0.6 : 0.0) << i;
    if (k) EXPECT_NEAR(out.GetFlat(i), in.at("x").GetFlat(i) / 0.6, 1e-15);
  }
  EXPECT_GT(kept, 5);
  EXPECT_LT(kept, 24);
  // TEST mode: the identity.
  *f.mutable_layer() = Spec("dropout", v1::TEST);
  Tensor id = TensorOf(ValueOrDie(Client().Forward(f)).outputs().at("out"));
  EXPECT_EQ(ValueOrDie(RelError(id, in.at("x"))), 0);
}

void ExpectInvalid(const absl::Status& s, const std::string& message) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr(message));
}

TEST(CatalogRpc, BadParamsAndLabelsAreRejected) {
  auto forward = [](const v1::LayerSpec& spec, const TensorMap& in) {
    v1::ForwardRequest r;
    *r.mutable_layer() = spec;
    PutInputs(in, r.mutable_inputs());
    return Client().Forward(r).status();
  };
  TensorMap bn = InputsFor("batchnorm", DType::kFloat64);
  v1::LayerSpec spec = Spec("batchnorm");
  spec.clear_bn_param();
  ExpectInvalid(forward(spec, bn),
                "layer.bn_param: layer 'batchnorm' requires it");
  spec = Spec("batchnorm", v1::MODE_UNSPECIFIED);
  ExpectInvalid(forward(spec, bn),
                "layer.bn_param.mode: must be TRAIN or TEST, got "
                "MODE_UNSPECIFIED");
  spec = Spec("batchnorm");
  spec.mutable_bn_param()->set_eps(-1);
  ExpectInvalid(forward(spec, bn), "bn_param.eps must be finite and > 0");
  spec = Spec("batchnorm");
  spec.mutable_bn_param()->set_momentum(std::nan(""));
  ExpectInvalid(forward(spec, bn), "bn_param.momentum must be in [0, 1]");
  spec = Spec("dropout");
  spec.mutable_dropout_param()->set_p(1.5);
  ExpectInvalid(forward(spec, InputsFor("dropout", DType::kFloat64)),
                "dropout_param.p (the keep probability) must be in (0, 1]");

  TensorMap loss = InputsFor("softmax_loss", DType::kFloat64);
  loss.at("y").data<int64_t>()[3] = 5;
  ExpectInvalid(forward(Spec("softmax_loss"), loss),
                "softmax_loss: label y[3] = 5 is out of range [0, 5)");
  loss.erase("y");
  loss.emplace("y", Randn(DType::kFloat64, {8}, 1));
  ExpectInvalid(forward(Spec("svm_loss"), loss),
                "svm_loss: input y holds class labels and must be int64, got "
                "float64");
  TensorMap ints;
  ints.emplace("x", Labels(4, 3));
  v1::LayerSpec relu;
  relu.set_name("relu");
  ExpectInvalid(forward(relu, ints),
                "relu: input x must be float32 or float64, got int64");
  // The server still answers a good request.
  EXPECT_TRUE(
      forward(Spec("softmax_loss"), InputsFor("softmax_loss", DType::kFloat64))
          .ok());
}

TEST(CatalogRpc, CompareReportsScaledDifferences) {
  // float32 conv: sums of 27 rounded products. Some outputs cancel to ~0, so
  // the seed's per-element rel_error can be large while the results agree
  // to float32 rounding, which the scaled difference shows.
  TensorMap in;
  in.emplace("x", Randn(DType::kFloat32, {4, 3, 9, 9}, 1));
  in.emplace("w", Randn(DType::kFloat32, {5, 3, 3, 3}, 2));
  in.emplace("b", Randn(DType::kFloat32, {5}, 3));
  v1::CompareRequest req;
  *req.mutable_layer() = Spec("conv");
  PutInputs(in, req.mutable_inputs());
  req.set_seed(4);
  v1::CompareResponse r = ValueOrDie(Client().Compare(req));
  EXPECT_GT(r.output_scaled_error(), 0);
  EXPECT_LT(r.output_scaled_error(), 1e-5);
  EXPECT_LE(r.output_scaled_error(), r.output_rel_error() + 1e-7);
  ASSERT_EQ(r.grad_scaled_errors().size(), 3u);
  for (const auto& [name, e] : r.grad_scaled_errors()) {
    EXPECT_LT(e, 1e-5) << name;
  }
}

}  // namespace
}  // namespace layerserve::testing
