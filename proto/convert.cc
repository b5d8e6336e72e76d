#include "proto/convert.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "lib/registry.h"
#include "lib/status_macros.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "layerserve copies little-endian wire bytes as they are"
#endif

namespace layerserve {

absl::StatusOr<DType> DTypeFromProto(int dtype, absl::string_view field) {
  switch (dtype) {
    case v1::FLOAT32:
      return DType::kFloat32;
    case v1::FLOAT64:
      return DType::kFloat64;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": must be FLOAT32 or FLOAT64, got ", ProtoDTypeName(dtype)));
  }
}

v1::DType DTypeToProto(DType dtype) {
  return dtype == DType::kFloat32 ? v1::FLOAT32 : v1::FLOAT64;
}

std::string ProtoDTypeName(int dtype) {
  if (v1::DType_IsValid(dtype)) {
    return v1::DType_Name(static_cast<v1::DType>(dtype));
  }
  return absl::StrCat(dtype);
}

absl::StatusOr<TensorDesc> TensorDescFromProto(const v1::Tensor& proto,
                                               absl::string_view field) {
  TensorDesc desc;
  LS_ASSIGN_OR_RETURN(
      desc.dtype, DTypeFromProto(proto.dtype(), absl::StrCat(field, ".dtype")));
  desc.shape.assign(proto.shape().begin(), proto.shape().end());
  LS_RETURN_IF_ERROR(ValidateShape(desc.shape, absl::StrCat(field, ".shape")));
  const int64_t n = NumElements(desc.shape);
  const int64_t itemsize = static_cast<int64_t>(ItemSize(desc.dtype));
  const std::string why =
      absl::StrCat("shape ", ShapeString(desc.shape), " x ", itemsize,
                   " bytes for ", ProtoDTypeName(proto.dtype()));
  if (n > std::numeric_limits<int64_t>::max() / itemsize) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".data: the byte count (", why,
                     ") overflows int64; got ", proto.data().size(), " bytes"));
  }
  const int64_t expected = n * itemsize;
  if (static_cast<int64_t>(proto.data().size()) != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".data: expected ", expected, " bytes (", why,
                     "), got ", proto.data().size()));
  }
  return desc;
}

absl::StatusOr<Tensor> TensorFromProto(const v1::Tensor& proto,
                                       absl::string_view field) {
  LS_ASSIGN_OR_RETURN(TensorDesc desc, TensorDescFromProto(proto, field));
  LS_ASSIGN_OR_RETURN(Tensor t,
                      Tensor::Zeros(desc.dtype, std::move(desc.shape)));
  std::memcpy(t.raw_data(), proto.data().data(), t.nbytes());
  return t;
}

void TensorToProto(const Tensor& tensor, v1::Tensor* proto) {
  proto->Clear();
  if (tensor.empty()) return;
  proto->set_dtype(DTypeToProto(tensor.dtype()));
  for (int64_t d : tensor.shape()) proto->add_shape(d);
  proto->set_data(static_cast<const char*>(tensor.raw_data()), tensor.nbytes());
}

std::string MapEntryField(absl::string_view field, absl::string_view key) {
  return absl::StrCat(field, "[\"", key, "\"]");
}

absl::StatusOr<DescMap> TensorDescMapFromProto(const ProtoTensorMap& protos,
                                               absl::string_view field) {
  DescMap descs;
  for (const auto& [key, proto] : protos) {
    LS_ASSIGN_OR_RETURN(TensorDesc desc,
                        TensorDescFromProto(proto, MapEntryField(field, key)));
    descs.emplace(key, std::move(desc));
  }
  return descs;
}

absl::StatusOr<TensorMap> TensorMapFromProto(const ProtoTensorMap& protos,
                                             absl::string_view field) {
  TensorMap tensors;
  for (const auto& [key, proto] : protos) {
    LS_ASSIGN_OR_RETURN(Tensor t,
                        TensorFromProto(proto, MapEntryField(field, key)));
    tensors.emplace(key, std::move(t));
  }
  return tensors;
}

void TensorMapToProto(const TensorMap& tensors, ProtoTensorMap* protos) {
  for (const auto& [key, t] : tensors) TensorToProto(t, &(*protos)[key]);
}

absl::StatusOr<LayerSpec> LayerSpecFromProto(const v1::LayerSpec& proto,
                                             absl::string_view field) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(proto.name()));
  LayerSpec spec;
  spec.name = proto.name();
  for (ParamKind kind : def->params) {
    const bool present = kind == ParamKind::kConv ? proto.has_conv_param()
                                                  : proto.has_pool_param();
    if (!present) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".", ParamKindName(kind), ": layer '", def->name,
                       "' requires it, but it is not set"));
    }
  }
  spec.conv.stride = proto.conv_param().stride();
  spec.conv.pad = proto.conv_param().pad();
  spec.pool.pool_height = proto.pool_param().pool_height();
  spec.pool.pool_width = proto.pool_param().pool_width();
  spec.pool.stride = proto.pool_param().stride();
  return spec;
}

void LayerSpecToProto(const LayerSpec& spec, v1::LayerSpec* proto) {
  proto->Clear();
  proto->set_name(spec.name);
  absl::StatusOr<const LayerDef*> def = FindLayer(spec.name);
  bool conv = !def.ok(), pool = !def.ok();
  if (def.ok()) {
    for (ParamKind kind : (*def)->params) {
      (kind == ParamKind::kConv ? conv : pool) = true;
    }
  }
  // The values are narrowed to the wire's int32; a spec built by
  // LayerSpecFromProto round-trips exactly.
  if (conv) {
    proto->mutable_conv_param()->set_stride(
        static_cast<int32_t>(spec.conv.stride));
    proto->mutable_conv_param()->set_pad(static_cast<int32_t>(spec.conv.pad));
  }
  if (pool) {
    v1::PoolParam* p = proto->mutable_pool_param();
    p->set_pool_height(static_cast<int32_t>(spec.pool.pool_height));
    p->set_pool_width(static_cast<int32_t>(spec.pool.pool_width));
    p->set_stride(static_cast<int32_t>(spec.pool.stride));
  }
}

absl::StatusOr<Impl> ImplFromProto(int impl, absl::string_view field) {
  switch (impl) {
    case v1::IMPLEMENTATION_UNSPECIFIED:
    case v1::FAST:
      return Impl::kFast;
    case v1::NAIVE:
      return Impl::kNaive;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": must be NAIVE, FAST or IMPLEMENTATION_UNSPECIFIED, got ",
          impl));
  }
}

v1::Implementation ImplToProto(Impl impl) {
  return impl == Impl::kNaive ? v1::NAIVE : v1::FAST;
}

void LayerInfoToProto(const LayerDef& def, v1::LayerInfo* proto) {
  proto->Clear();
  proto->set_name(std::string(def.name));
  proto->set_summary(std::string(def.summary));
  for (absl::string_view in : def.inputs) proto->add_inputs(std::string(in));
  for (ParamKind kind : def.params) {
    proto->add_params(std::string(ParamKindName(kind)));
  }
  proto->set_output(std::string(def.output));
  for (absl::string_view g : def.grads) proto->add_grads(std::string(g));
  proto->add_implementations(v1::NAIVE);
  proto->add_implementations(v1::FAST);
  proto->add_dtypes(v1::FLOAT32);
  proto->add_dtypes(v1::FLOAT64);
  proto->set_has_fast(def.has_fast);
}

}  // namespace layerserve
