// The layer registry: the one table of every layer the library offers, with
// its input, parameter, output and gradient names. The server's ListLayers
// and the CLI read it; nothing about a layer is written down twice.
//
// Forward/Backward here are the entry points for callers outside lib/: they
// validate everything (names, dtypes, shapes, params), allocate outputs and
// dispatch to the naive or fast implementation. FAST on a layer without a
// fast path runs naive and says so in impl_name.
//
// Thread-safety: everything here is safe to call concurrently.
#ifndef LAYERSERVE_LIB_REGISTRY_H_
#define LAYERSERVE_LIB_REGISTRY_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

// Every layer, in a stable order.
const std::vector<const LayerDef*>& AllLayers();

// INVALID_ARGUMENT naming the known layers when `name` is not one of them.
absl::StatusOr<const LayerDef*> FindLayer(absl::string_view name);

// Full validation of a request without touching data: the layer exists, the
// inputs are exactly the layer's (none missing, none unexpected), all share
// one dtype, shapes and params are valid. Returns the output's desc.
absl::StatusOr<TensorDesc> InferOutput(const LayerSpec& spec,
                                       const DescMap& inputs);

absl::StatusOr<ForwardResult> Forward(const LayerSpec& spec, Impl impl,
                                      const TensorMap& inputs);

// `dout` must have the output's shape and the inputs' dtype.
absl::StatusOr<BackwardResult> Backward(const LayerSpec& spec, Impl impl,
                                        const TensorMap& inputs,
                                        const Tensor& dout);

// Descs of a TensorMap, for InferOutput.
DescMap DescsOf(const TensorMap& inputs);

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_REGISTRY_H_
