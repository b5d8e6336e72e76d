#include "lib/registry.h"

#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerserve {
namespace {

using ::testing::ElementsAre;

TEST(Registry, ListsTheSeedsLayers) {
  std::vector<std::string> names;
  for (const LayerDef* d : AllLayers()) names.emplace_back(d->name);
  EXPECT_THAT(
      names,
      ElementsAre("conv", "max_pool", "relu", "conv_relu", "conv_relu_pool",
                  "affine", "affine_relu", "batchnorm", "spatial_batchnorm",
                  "dropout", "softmax_loss", "svm_loss", "conv_batchnorm_relu",
                  "affine_batchnorm_relu"));
}

TEST(Registry, RowsAreConsistent) {
  for (const LayerDef* d : AllLayers()) {
    SCOPED_TRACE(std::string(d->name));
    EXPECT_TRUE(d->output == "out" || d->output == "loss");
    ASSERT_EQ(d->grad_inputs.size(), d->grads.size());
    const std::set<absl::string_view> inputs(d->inputs.begin(),
                                             d->inputs.end());
    for (size_t i = 0; i < d->grad_inputs.size(); ++i) {
      EXPECT_EQ(std::string(d->grads[i]), "d" + std::string(d->grad_inputs[i]));
      EXPECT_EQ(inputs.count(d->grad_inputs[i]), 1u);
    }
    for (absl::string_view label : d->label_inputs) {
      EXPECT_EQ(inputs.count(label), 1u);
      EXPECT_NE(label, d->inputs.front());
    }
    EXPECT_TRUE(d->infer && d->forward && d->backward);
    EXPECT_FALSE(d->summary.empty());
  }
  const LayerDef* crp = FindLayer("conv_relu_pool").value();
  EXPECT_THAT(crp->params, ElementsAre(ParamKind::kConv, ParamKind::kPool));
  EXPECT_THAT(FindLayer("max_pool").value()->inputs, ElementsAre("x"));
  EXPECT_THAT(FindLayer("conv").value()->inputs, ElementsAre("x", "w", "b"));
}

TEST(Registry, ForwardReturnsOutAndImplName) {
  TensorMap in;
  in.emplace("x",
             Tensor::Linspace(DType::kFloat32, {2, 2, 4, 4}, -1, 1).value());
  LayerSpec spec;
  spec.name = "max_pool";
  spec.pool = {2, 2, 2};
  ForwardResult naive = Forward(spec, Impl::kNaive, in).value();
  EXPECT_EQ(naive.impl_name, "naive");
  ASSERT_EQ(naive.outputs.size(), 1u);
  EXPECT_EQ(naive.outputs.at("out").dtype(), DType::kFloat32);
  ForwardResult fast = Forward(spec, Impl::kFast, in).value();
  EXPECT_FALSE(fast.impl_name.empty());
  EXPECT_EQ(RelError(naive.outputs.at("out"), fast.outputs.at("out")).value(),
            0);
}

TEST(Registry, BackwardReturnsEveryGradWithInputShapes) {
  TensorMap in;
  in.emplace("x",
             Tensor::RandomNormal(DType::kFloat64, {2, 3, 6, 6}, 1).value());
  in.emplace("w",
             Tensor::RandomNormal(DType::kFloat64, {4, 3, 3, 3}, 2).value());
  in.emplace("b", Tensor::RandomNormal(DType::kFloat64, {4}, 3).value());
  LayerSpec spec;
  spec.name = "conv_relu_pool";
  spec.conv = {1, 1};
  spec.pool = {2, 2, 2};
  Tensor dout = Tensor::RandomNormal(DType::kFloat64, {2, 4, 3, 3}, 4).value();
  BackwardResult g = Backward(spec, Impl::kNaive, in, dout).value();
  EXPECT_EQ(g.grads.at("dx").shape(), in.at("x").shape());
  EXPECT_EQ(g.grads.at("dw").shape(), in.at("w").shape());
  EXPECT_EQ(g.grads.at("db").shape(), in.at("b").shape());
  EXPECT_EQ(g.impl_name, "naive");
}

}  // namespace
}  // namespace layerserve
