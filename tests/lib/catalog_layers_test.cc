// The course's remaining layers through the registry: every differentiable
// input of every new layer passes a float64 gradient check, outputs carry
// the right names, and label inputs are validated.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/gradcheck.h"
#include "lib/registry.h"

namespace layerserve {
namespace {

using ::testing::HasSubstr;

Tensor Randn(Shape s, uint64_t seed) {
  return Tensor::RandomNormal(DType::kFloat64, std::move(s), seed).value();
}

Tensor Labels(int64_t n, int64_t classes) {
  Tensor y = Tensor::Zeros(DType::kInt64, {n}).value();
  for (int64_t i = 0; i < n; ++i) y.data<int64_t>()[i] = (i * 3 + 1) % classes;
  return y;
}

// Positive running variances, as a trained network would have.
Tensor RunningVar(int64_t c, uint64_t seed) {
  Tensor t = Randn({c}, seed);
  for (int64_t i = 0; i < c; ++i) t.SetFlat(i, 0.5 + std::abs(t.GetFlat(i)));
  return t;
}

struct Case {
  std::string label;
  LayerSpec spec;
  std::function<TensorMap()> inputs;
  double tol;  // the worst rel_error allowed for any gradient
  // Inputs whose true gradient is exactly zero: a bias right before a
  // train-mode batchnorm is cancelled by the mean subtraction. rel_error of
  // two ~0 values is meaningless, so these are held to a tiny max_abs_error.
  std::vector<std::string> zero_grad = {};
};

LayerSpec Spec(const std::string& name) {
  LayerSpec s;
  s.name = name;
  s.conv = {1, 1};
  s.dropout = {0.7, true, 42};
  return s;
}

TensorMap BnInputs(Shape x, int64_t c, uint64_t seed) {
  TensorMap m;
  m.emplace("x", Randn(std::move(x), seed));
  m.emplace("gamma", Randn({c}, seed + 1));
  m.emplace("beta", Randn({c}, seed + 2));
  m.emplace("running_mean", Randn({c}, seed + 3));
  m.emplace("running_var", RunningVar(c, seed + 4));
  return m;
}

std::vector<Case> Cases() {
  std::vector<Case> c;
  c.push_back({"affine", Spec("affine"),
               [] {
                 TensorMap m;
                 m.emplace("x", Randn({4, 2, 3, 2}, 1));
                 m.emplace("w", Randn({12, 5}, 2));
                 m.emplace("b", Randn({5}, 3));
                 return m;
               },
               1e-8});
  c.push_back({"affine_relu", Spec("affine_relu"),
               [] {
                 TensorMap m;
                 m.emplace("x", Randn({6, 8}, 4));
                 m.emplace("w", Randn({8, 7}, 5));
                 m.emplace("b", Randn({7}, 6));
                 return m;
               },
               1e-7});
  for (auto mode :
       {BatchnormParam::Mode::kTrain, BatchnormParam::Mode::kTest}) {
    const std::string m =
        mode == BatchnormParam::Mode::kTrain ? "train" : "test";
    LayerSpec bn = Spec("batchnorm");
    bn.bn.mode = mode;
    c.push_back({"batchnorm_" + m, bn,
                 [] {
                   return BnInputs({8, 5}, 5, 10);
                 },
                 1e-5});
    LayerSpec sbn = Spec("spatial_batchnorm");
    sbn.bn.mode = mode;
    c.push_back({"spatial_batchnorm_" + m, sbn,
                 [] {
                   return BnInputs({2, 3, 4, 5}, 3, 20);
                 },
                 1e-5});
  }
  c.push_back({"dropout_train", Spec("dropout"),
               [] {
                 TensorMap m;
                 m.emplace("x", Randn({3, 4, 5}, 30));
                 return m;
               },
               1e-9});
  for (const char* loss : {"softmax_loss", "svm_loss"}) {
    c.push_back({loss, Spec(loss),
                 [] {
                   TensorMap m;
                   m.emplace("x", Randn({12, 6}, 40));
                   m.emplace("y", Labels(12, 6));
                   return m;
                 },
                 1e-7});
  }
  c.push_back({"conv_batchnorm_relu",
               Spec("conv_batchnorm_relu"),
               [] {
                 TensorMap m = BnInputs({2, 3, 5, 5}, 4, 50);
                 m.erase("x");
                 m.emplace("x", Randn({2, 3, 5, 5}, 55));
                 m.emplace("w", Randn({4, 3, 3, 3}, 56));
                 m.emplace("b", Randn({4}, 57));
                 return m;
               },
               1e-5,
               {"b"}});
  c.push_back({"affine_batchnorm_relu",
               Spec("affine_batchnorm_relu"),
               [] {
                 TensorMap m = BnInputs({6, 5}, 5, 60);
                 m.erase("x");
                 m.emplace("x", Randn({6, 2, 4}, 65));
                 m.emplace("w", Randn({8, 5}, 66));
                 m.emplace("b", Randn({5}, 67));
                 return m;
               },
               1e-5,
               {"b"}});
  return c;
}

TEST(CatalogLayers, EveryGradientChecks) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.label);
    const LayerDef* def = FindLayer(c.spec.name).value();
    GradCheckOptions opt;
    opt.seed = 7;
    absl::StatusOr<GradCheckReport> rep =
        GradCheck(c.spec, Impl::kNaive, c.inputs(), opt);
    ASSERT_TRUE(rep.ok()) << rep.status();
    ASSERT_EQ(rep->results.size(), def->grad_inputs.size());
    for (const GradCheckResult& r : rep->results) {
      const bool zero = std::find(c.zero_grad.begin(), c.zero_grad.end(),
                                  r.input) != c.zero_grad.end();
      if (zero) {
        EXPECT_LE(r.max_abs_error, 1e-9) << "d" << r.input;
      } else {
        EXPECT_LE(r.rel_error, c.tol) << "d" << r.input;
      }
      std::printf("%-24s d%-7s rel_error %.3e\n", c.label.c_str(),
                  r.input.c_str(), r.rel_error);
    }
    // FAST (falling back or not) gives the naive answer on these layers.
    ForwardResult naive = Forward(c.spec, Impl::kNaive, c.inputs()).value();
    ForwardResult fast = Forward(c.spec, Impl::kFast, c.inputs()).value();
    EXPECT_LE(RelError(naive.outputs.at(std::string(def->output)),
                       fast.outputs.at(std::string(def->output)))
                  .value(),
              1e-5);
  }
}

TEST(CatalogLayers, BatchnormReturnsRunningStats) {
  LayerSpec s = Spec("spatial_batchnorm");
  TensorMap in = BnInputs({4, 3, 2, 2}, 3, 70);
  ForwardResult r = Forward(s, Impl::kNaive, in).value();
  ASSERT_EQ(r.outputs.size(), 3u);
  const Tensor& rm = r.outputs.at("running_mean");
  // momentum 0.9: new = 0.9 old + 0.1 batch mean of channel 0.
  double mean = 0;
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t i = 0; i < 4; ++i) mean += in.at("x").GetFlat(n * 12 + i);
  mean /= 16;
  EXPECT_NEAR(rm.GetFlat(0),
              0.9 * in.at("running_mean").GetFlat(0) + 0.1 * mean, 1e-12);
  s.bn.mode = BatchnormParam::Mode::kTest;
  r = Forward(s, Impl::kNaive, in).value();
  EXPECT_EQ(r.outputs.at("running_mean").GetFlat(1),
            in.at("running_mean").GetFlat(1));
}

TEST(CatalogLayers, LossIsOneElementAndLabelsAreValidated) {
  LayerSpec s = Spec("softmax_loss");
  TensorMap in;
  in.emplace("x", Randn({4, 3}, 80));
  in.emplace("y", Labels(4, 3));
  ForwardResult r = Forward(s, Impl::kNaive, in).value();
  ASSERT_EQ(r.outputs.at("loss").shape(), (Shape{1}));
  EXPECT_GT(r.outputs.at("loss").GetFlat(0), 0);

  in.at("y").data<int64_t>()[2] = 3;
  EXPECT_THAT(Forward(s, Impl::kNaive, in).status().message(),
              HasSubstr("softmax_loss: label y[2] = 3 is out of range [0, 3)"));

  TensorMap bad;
  bad.emplace("x", Randn({4, 3}, 80));
  bad.emplace("y", Randn({4}, 81));
  EXPECT_THAT(Forward(s, Impl::kNaive, bad).status().message(),
              HasSubstr("softmax_loss: input y holds class labels and must be "
                        "int64, got float64"));

  TensorMap ints;
  ints.emplace("x", Tensor::Zeros(DType::kInt64, {4}).value());
  EXPECT_THAT(Forward(Spec("relu"), Impl::kNaive, ints).status().message(),
              HasSubstr("relu: input x must be float32 or float64, got int64"));
}

TEST(CatalogLayers, DropoutParamIsValidated) {
  LayerSpec s = Spec("dropout");
  s.dropout.p = 0;
  TensorMap in;
  in.emplace("x", Randn({4}, 1));
  EXPECT_THAT(Forward(s, Impl::kNaive, in).status().message(),
              HasSubstr("dropout: dropout_param.p (the keep probability) must "
                        "be in (0, 1], got 0"));
}

}  // namespace
}  // namespace layerserve
