// The layer interface: what every layer family exposes to the registry, the
// gradient checker and (through them) the server and the CLI.
//
// A layer is stateless: Forward and Backward both take the full inputs, and
// Backward recomputes whatever forward cache it needs. That is what lets any
// server replica answer any call.
//
// Thread-safety: every function here may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_LAYER_H_
#define LAYERSERVE_LIB_LAYERS_LAYER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/tensor.h"

namespace layerserve {

// The seed's conv_param. int64 so that arithmetic on them cannot overflow.
struct ConvParam {
  int64_t stride = 1;
  int64_t pad = 0;
};

// The seed's pool_param.
struct PoolParam {
  int64_t pool_height = 2;
  int64_t pool_width = 2;
  int64_t stride = 2;
};

// The course's bn_param, for batchnorm and spatial_batchnorm.
struct BatchnormParam {
  enum class Mode { kTrain, kTest };
  Mode mode = Mode::kTrain;
  double eps = 1e-5;
  double momentum = 0.9;
};

// dropout_param. p is the probability of KEEPING a unit (see dropout.h).
struct DropoutParam {
  double p = 0.5;
  bool train = true;
  uint64_t seed = 0;
};

enum class Impl { kNaive, kFast };
absl::string_view ImplName(Impl impl);  // "naive" / "fast"

// What the user asked for: a layer name from the registry and its params.
// Params a layer does not use are ignored.
struct LayerSpec {
  std::string name;
  ConvParam conv;
  PoolParam pool;
  BatchnormParam bn;
  DropoutParam dropout;
};

using TensorMap = std::map<std::string, Tensor, std::less<>>;
using DescMap = std::map<std::string, TensorDesc, std::less<>>;

struct ForwardResult {
  // Keyed by LayerDef::output ("out", "loss") and LayerDef::extra_outputs
  // (batchnorm's updated "running_mean", "running_var").
  TensorMap outputs;
  std::string impl_name;  // which implementation ran, oneDNN style
};

struct BackwardResult {
  TensorMap grads;  // keyed by LayerDef::grads ("dx", "dw", "db")
  std::string impl_name;
};

enum class ParamKind { kConv, kPool, kBatchnorm, kDropout };
// "conv_param", "pool_param", "bn_param", "dropout_param".
absl::string_view ParamKindName(ParamKind kind);

// One row of the layer registry. Families define theirs in
// lib/layers/<family>.cc; lib/registry.cc lists them.
struct LayerDef {
  absl::string_view name;
  absl::string_view summary;
  std::vector<absl::string_view> inputs;  // the seed's argument names
  // Inputs that hold int64 class labels (the losses' y); every other input
  // is float32/float64, all of one dtype.
  std::vector<absl::string_view> label_inputs;
  std::vector<ParamKind> params;
  absl::string_view output;  // "out" (or "loss"): what gradients flow into
  // Further outputs that are not differentiated (batchnorm's running stats).
  std::vector<absl::string_view> extra_outputs;
  // The inputs that get a gradient, in input order, and their gradients'
  // names ("d" + input). Labels and running statistics get none.
  std::vector<absl::string_view> grad_inputs;
  std::vector<absl::string_view> grads;
  bool has_fast = false;  // FAST would not fall back to naive

  // Validates shapes and params of inputs that are known to be present and
  // of one dtype; returns the output's desc. Never allocates, so the server
  // can check size limits before any work.
  std::function<absl::StatusOr<TensorDesc>(const LayerSpec&, const DescMap&)>
      infer;
  // Computes the outputs. `outputs` holds the primary output, allocated
  // with the inferred desc and zero-filled; the layer adds its
  // extra_outputs. Returns the implementation name that ran.
  std::function<absl::StatusOr<std::string>(
      const LayerSpec&, Impl, const TensorMap& inputs, TensorMap* outputs)>
      forward;
  // Computes every gradient into `grads`, pre-allocated with the descs of
  // grad_inputs and zero-filled, keyed by grad name.
  std::function<absl::StatusOr<std::string>(
      const LayerSpec&, Impl, const TensorMap& inputs, const Tensor& dout,
      TensorMap* grads)>
      backward;
};

// The input named `name`; the registry has checked that it is present.
inline const Tensor& Input(const TensorMap& inputs, absl::string_view name) {
  return inputs.find(name)->second;
}
inline const TensorDesc& Input(const DescMap& inputs, absl::string_view name) {
  return inputs.find(name)->second;
}
// The primary output in a forward's output map.
inline Tensor* Output(TensorMap* outputs, absl::string_view name) {
  return &outputs->find(name)->second;
}

// Each family's rows (function-local statics: no static-init order issues).
const LayerDef& ConvLayerDef();
const LayerDef& MaxPoolLayerDef();
const LayerDef& ReluLayerDef();
const LayerDef& ConvReluLayerDef();
const LayerDef& ConvReluPoolLayerDef();
const LayerDef& AffineLayerDef();
const LayerDef& AffineReluLayerDef();
const LayerDef& BatchnormLayerDef();
const LayerDef& SpatialBatchnormLayerDef();
const LayerDef& DropoutLayerDef();
const LayerDef& SoftmaxLossLayerDef();
const LayerDef& SvmLossLayerDef();
const LayerDef& ConvBatchnormReluLayerDef();
const LayerDef& AffineBatchnormReluLayerDef();

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_LAYERS_LAYER_H_
