// Conversions between the wire types of layerserve.v1 and the core library's
// types (lib/tensor.h, lib/layers/layer.h).
//
// Everything that arrives from the wire is validated here before it becomes
// a lib value: a lib Tensor built by TensorFromProto has a valid dtype and
// shape and exactly the bytes its shape needs. Error messages name the
// request field they are about (the caller passes its path, e.g.
// `inputs["x"]`), the rule, and the actual value.
//
// Tensor bytes are little-endian on the wire and are copied as they are:
// this code only builds on little-endian hosts.
//
// Thread-safety: every function here is a pure function of its arguments.
#ifndef LAYERSERVE_PROTO_CONVERT_H_
#define LAYERSERVE_PROTO_CONVERT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "layerserve/v1/layer_service.pb.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve {

using ProtoTensorMap = google::protobuf::Map<std::string, v1::Tensor>;

// FLOAT32/FLOAT64/INT64; INVALID_ARGUMENT naming `field` for
// DTYPE_UNSPECIFIED or a value this version does not know.
absl::StatusOr<DType> DTypeFromProto(int dtype, absl::string_view field);
v1::DType DTypeToProto(DType dtype);
// "FLOAT32", "FLOAT64", "INT64", "DTYPE_UNSPECIFIED" or the number: the
// wire names.
std::string ProtoDTypeName(int dtype);

// The dtype and shape of a wire tensor, checked without copying its data:
// dtype known, rank 1..4, dims >= 1, prod(shape) fits int64, and data holds
// exactly prod(shape) * itemsize bytes. This is what size limits look at
// before anything is allocated. `field` names the tensor, e.g. `dout`.
absl::StatusOr<TensorDesc> TensorDescFromProto(const v1::Tensor& proto,
                                               absl::string_view field);

// TensorDescFromProto's checks, then a copy of the data into a lib Tensor.
absl::StatusOr<Tensor> TensorFromProto(const v1::Tensor& proto,
                                       absl::string_view field);

// Overwrites `proto` with the tensor's dtype, shape and bytes.
void TensorToProto(const Tensor& tensor, v1::Tensor* proto);

// `field`["name"], the spelling messages use for a map entry.
std::string MapEntryField(absl::string_view field, absl::string_view key);

// Descs of every entry of a tensor map, each validated as above; entries are
// named `field`["key"]. Which keys must be present is the registry's rule,
// not checked here.
absl::StatusOr<DescMap> TensorDescMapFromProto(const ProtoTensorMap& protos,
                                               absl::string_view field);
absl::StatusOr<TensorMap> TensorMapFromProto(const ProtoTensorMap& protos,
                                             absl::string_view field);
// Adds (or overwrites) one entry per tensor.
void TensorMapToProto(const TensorMap& tensors, ProtoTensorMap* protos);

// The layer spec, checked against the registry: the layer exists
// (INVALID_ARGUMENT listing the known ones otherwise) and every parameter
// message it lists in LayerDef::params is set (INVALID_ARGUMENT naming
// `field`.conv_param otherwise). Parameter values are checked with the
// shapes, by the registry; bn_param.mode and dropout_param.mode must be
// TRAIN or TEST. Messages the layer does not use are ignored.
absl::StatusOr<LayerSpec> LayerSpecFromProto(const v1::LayerSpec& proto,
                                             absl::string_view field = "layer");
// Sets name and the parameter messages the layer uses (both when the layer
// is unknown).
void LayerSpecToProto(const LayerSpec& spec, v1::LayerSpec* proto);

// IMPLEMENTATION_UNSPECIFIED means FAST. INVALID_ARGUMENT naming `field` for
// a value this version does not know.
absl::StatusOr<Impl> ImplFromProto(int impl,
                                   absl::string_view field = "implementation");
v1::Implementation ImplToProto(Impl impl);

// One row of ListLayers.
void LayerInfoToProto(const LayerDef& def, v1::LayerInfo* proto);

}  // namespace layerserve

#endif  // LAYERSERVE_PROTO_CONVERT_H_
