// Writes the fuzz harness's seed corpus: one file per request, a selector
// byte (the RPC, as service_fuzz_harness.cc reads it) followed by the
// serialized request. Valid requests on every layer family for every RPC,
// and a few classic bad ones, all within the harness's small limits. Each
// request meant to be valid is first run through the library, so a corpus
// that drifted from the contract fails here rather than seeding nothing.
//
// usage: fuzz_make_corpus OUT_DIR    (tests/fuzz/corpus in the repository)
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "layerserve/v1/layer_service.pb.h"
#include "lib/registry.h"
#include "lib/tensor.h"
#include "proto/convert.h"

namespace layerserve {
namespace {

enum Rpc : uint8_t {
  kListLayers = 0,
  kForward = 1,
  kBackward = 2,
  kGradCheck = 3,
  kCompare = 4
};

v1::Tensor Randn(DType dtype, Shape shape, uint64_t seed) {
  v1::Tensor p;
  TensorToProto(Tensor::RandomNormal(dtype, std::move(shape), seed).value(),
                &p);
  return p;
}

v1::Tensor Labels(std::vector<int64_t> labels) {
  Tensor t = Tensor::Zeros(DType::kInt64, {static_cast<int64_t>(labels.size())})
                 .value();
  for (size_t i = 0; i < labels.size(); ++i) {
    t.SetFlat(static_cast<int64_t>(i), static_cast<double>(labels[i]));
  }
  v1::Tensor p;
  TensorToProto(t, &p);
  return p;
}

// A layer call that must be valid: its spec and inputs.
struct Case {
  std::string name;
  v1::LayerSpec layer;
  google::protobuf::Map<std::string, v1::Tensor> inputs;
};

v1::LayerSpec Spec(const std::string& name) {
  v1::LayerSpec s;
  s.set_name(name);
  return s;
}

std::vector<Case> ValidCases(DType dtype) {
  std::vector<Case> cases;
  uint64_t seed = 1;
  auto add = [&](const std::string& name, v1::LayerSpec layer,
                 std::vector<std::pair<std::string, Shape>> shapes) {
    Case c{name, std::move(layer), {}};
    for (auto& [input, shape] : shapes) {
      c.inputs[input] = Randn(dtype, shape, seed++);
    }
    cases.push_back(std::move(c));
    return &cases.back();
  };
  v1::LayerSpec conv = Spec("conv");
  conv.mutable_conv_param()->set_stride(2);
  conv.mutable_conv_param()->set_pad(1);
  add("conv", conv, {{"x", {2, 3, 4, 4}}, {"w", {3, 3, 4, 4}}, {"b", {3}}});
  v1::LayerSpec pool = Spec("max_pool");
  pool.mutable_pool_param()->set_pool_height(2);
  pool.mutable_pool_param()->set_pool_width(2);
  pool.mutable_pool_param()->set_stride(2);
  add("max_pool", pool, {{"x", {2, 3, 4, 4}}});
  add("relu", Spec("relu"), {{"x", {2, 3, 5}}});
  v1::LayerSpec conv_relu = conv;
  conv_relu.set_name("conv_relu");
  add("conv_relu", conv_relu,
      {{"x", {1, 2, 5, 5}}, {"w", {3, 2, 3, 3}}, {"b", {3}}});
  v1::LayerSpec crp = Spec("conv_relu_pool");
  crp.mutable_conv_param()->set_stride(1);
  crp.mutable_conv_param()->set_pad(1);
  *crp.mutable_pool_param() = pool.pool_param();
  add("conv_relu_pool", crp,
      {{"x", {1, 2, 6, 6}}, {"w", {2, 2, 3, 3}}, {"b", {2}}});
  add("affine", Spec("affine"), {{"x", {2, 6}}, {"w", {6, 3}}, {"b", {3}}});
  add("affine_relu", Spec("affine_relu"),
      {{"x", {2, 6}}, {"w", {6, 3}}, {"b", {3}}});
  v1::LayerSpec bn = Spec("batchnorm");
  bn.mutable_bn_param()->set_mode(v1::TRAIN);
  add("batchnorm", bn,
      {{"x", {4, 3}},
       {"gamma", {3}},
       {"beta", {3}},
       {"running_mean", {3}},
       {"running_var", {3}}});
  v1::LayerSpec sbn = Spec("spatial_batchnorm");
  sbn.mutable_bn_param()->set_mode(v1::TEST);
  Case* s = add("spatial_batchnorm", sbn,
                {{"x", {2, 3, 3, 3}},
                 {"gamma", {3}},
                 {"beta", {3}},
                 {"running_mean", {3}},
                 {"running_var", {3}}});
  // Variances must be positive: TEST mode divides by sqrt(var + eps).
  Tensor var = Tensor::Linspace(dtype, {3}, 0.5, 1.5).value();
  TensorToProto(var, &s->inputs["running_var"]);
  v1::LayerSpec dropout = Spec("dropout");
  dropout.mutable_dropout_param()->set_p(0.5);
  dropout.mutable_dropout_param()->set_mode(v1::TRAIN);
  dropout.mutable_dropout_param()->set_seed(7);
  add("dropout", dropout, {{"x", {3, 4}}});
  Case* softmax = add("softmax_loss", Spec("softmax_loss"), {{"x", {4, 5}}});
  softmax->inputs["y"] = Labels({0, 4, 2, 1});
  Case* svm = add("svm_loss", Spec("svm_loss"), {{"x", {4, 5}}});
  svm->inputs["y"] = Labels({3, 3, 0, 1});
  v1::LayerSpec cbr = conv;
  cbr.set_name("conv_batchnorm_relu");
  cbr.mutable_bn_param()->set_mode(v1::TRAIN);
  add("conv_batchnorm_relu", cbr,
      {{"x", {2, 2, 4, 4}},
       {"w", {3, 2, 3, 3}},
       {"b", {3}},
       {"gamma", {3}},
       {"beta", {3}},
       {"running_mean", {3}},
       {"running_var", {3}}});
  return cases;
}

absl::Status CheckValid(const Case& c) {
  LayerSpec spec;
  auto parsed = LayerSpecFromProto(c.layer);
  if (!parsed.ok()) return parsed.status();
  auto inputs = TensorMapFromProto(c.inputs, "inputs");
  if (!inputs.ok()) return inputs.status();
  return Forward(*parsed, Impl::kNaive, *inputs).status();
}

class Writer {
 public:
  explicit Writer(std::filesystem::path dir) : dir_(std::move(dir)) {}
  void Write(Rpc rpc, const std::string& name,
             const google::protobuf::Message& request) {
    std::string bytes(1, static_cast<char>(rpc));
    request.AppendToString(&bytes);
    std::ofstream(dir_ / name, std::ios::binary) << bytes;
    ++count_;
  }
  int count() const { return count_; }

 private:
  std::filesystem::path dir_;
  int count_ = 0;
};

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  std::filesystem::create_directories(argv[1]);
  Writer out(argv[1]);
  out.Write(kListLayers, "list_layers", v1::ListLayersRequest());

  for (DType dtype : {DType::kFloat64, DType::kFloat32}) {
    const std::string suffix(DTypeName(dtype));
    for (const Case& c : ValidCases(dtype)) {
      const absl::Status valid = CheckValid(c);
      if (!valid.ok()) {
        std::fprintf(stderr, "seed %s (%s) is not valid: %s\n", c.name.c_str(),
                     suffix.c_str(), valid.ToString().c_str());
        return 1;
      }
      const std::string base = absl::StrCat(c.name, "_", suffix);
      v1::ForwardRequest f;
      *f.mutable_layer() = c.layer;
      *f.mutable_inputs() = c.inputs;
      f.set_implementation(dtype == DType::kFloat64 ? v1::NAIVE : v1::FAST);
      out.Write(kForward, "forward_" + base, f);

      v1::BackwardRequest b;
      *b.mutable_layer() = c.layer;
      *b.mutable_inputs() = c.inputs;
      auto parsed = LayerSpecFromProto(c.layer).value();
      auto descs = TensorDescMapFromProto(c.inputs, "inputs").value();
      const TensorDesc out_desc = InferOutput(parsed, descs).value();
      *b.mutable_dout() = Randn(out_desc.dtype, out_desc.shape, 99);
      out.Write(kBackward, "backward_" + base, b);

      v1::GradCheckRequest g;
      *g.mutable_layer() = c.layer;
      *g.mutable_inputs() = c.inputs;
      g.set_seed(3);
      g.set_num_checks(dtype == DType::kFloat64 ? 0 : 4);
      g.set_return_gradients(dtype == DType::kFloat64);
      if (dtype == DType::kFloat32) g.set_h(1e-2);
      out.Write(kGradCheck, "gradcheck_" + base, g);

      v1::CompareRequest cmp;
      *cmp.mutable_layer() = c.layer;
      *cmp.mutable_inputs() = c.inputs;
      cmp.set_seed(5);
      cmp.set_repeats(1);
      out.Write(kCompare, "compare_" + base, cmp);
    }
  }

  // A few bad ones, for the mutations to start from.
  const std::vector<Case> cases = ValidCases(DType::kFloat64);
  v1::ForwardRequest bad;
  *bad.mutable_layer() = cases[0].layer;
  *bad.mutable_inputs() = cases[0].inputs;
  bad.mutable_layer()->mutable_conv_param()->set_pad(1000000000);
  out.Write(kForward, "bad_forward_huge_pad", bad);
  bad.mutable_layer()->mutable_conv_param()->set_pad(1);
  (*bad.mutable_inputs())["x"].set_shape(0, int64_t{1} << 62);
  out.Write(kForward, "bad_forward_overflowing_shape", bad);
  v1::GradCheckRequest bad_h;
  *bad_h.mutable_layer() = cases[2].layer;
  *bad_h.mutable_inputs() = cases[2].inputs;
  bad_h.set_h(std::numeric_limits<double>::quiet_NaN());
  bad_h.set_num_checks(-1);
  out.Write(kGradCheck, "bad_gradcheck_nan_step", bad_h);
  v1::CompareRequest bad_repeats;
  *bad_repeats.mutable_layer() = cases[1].layer;
  *bad_repeats.mutable_inputs() = cases[1].inputs;
  bad_repeats.set_repeats(-7);
  out.Write(kCompare, "bad_compare_negative_repeats", bad_repeats);

  std::printf("wrote %d seed inputs to %s\n", out.count(), argv[1]);
  return 0;
}

}  // namespace
}  // namespace layerserve

int main(int argc, char** argv) { return layerserve::Main(argc, argv); }
