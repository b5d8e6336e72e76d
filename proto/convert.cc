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
    case v1::INT64:
      return DType::kInt64;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": must be FLOAT32, FLOAT64 or INT64, got ",
                       ProtoDTypeName(dtype)));
  }
}

v1::DType DTypeToProto(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return v1::FLOAT32;
    case DType::kInt64:
      return v1::INT64;
    case DType::kFloat64:
      break;
  }
  return v1::FLOAT64;
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

namespace {

bool HasParam(const v1::LayerSpec& proto, ParamKind kind) {
  switch (kind) {
    case ParamKind::kConv:
      return proto.has_conv_param();
    case ParamKind::kPool:
      return proto.has_pool_param();
    case ParamKind::kBatchnorm:
      return proto.has_bn_param();
    case ParamKind::kDropout:
      break;
  }
  return proto.has_dropout_param();
}

// TRAIN -> true, TEST -> false; anything else names the field.
absl::StatusOr<bool> TrainFromProto(int mode, absl::string_view field) {
  if (mode == v1::TRAIN) return true;
  if (mode == v1::TEST) return false;
  const std::string got = v1::Mode_IsValid(mode)
                              ? v1::Mode_Name(static_cast<v1::Mode>(mode))
                              : absl::StrCat(mode);
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": must be TRAIN or TEST, got ", got));
}

}  // namespace

absl::StatusOr<LayerSpec> LayerSpecFromProto(const v1::LayerSpec& proto,
                                             absl::string_view field) {
  LS_ASSIGN_OR_RETURN(const LayerDef* def, FindLayer(proto.name()));
  LayerSpec spec;
  spec.name = proto.name();
  for (ParamKind kind : def->params) {
    const bool present = HasParam(proto, kind);
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
  for (ParamKind kind : def->params) {
    if (kind == ParamKind::kBatchnorm) {
      const v1::BatchnormParam& bn = proto.bn_param();
      LS_ASSIGN_OR_RETURN(
          bool train,
          TrainFromProto(bn.mode(), absl::StrCat(field, ".bn_param.mode")));
      spec.bn.mode =
          train ? BatchnormParam::Mode::kTrain : BatchnormParam::Mode::kTest;
      if (bn.has_eps()) spec.bn.eps = bn.eps();
      if (bn.has_momentum()) spec.bn.momentum = bn.momentum();
    } else if (kind == ParamKind::kDropout) {
      const v1::DropoutParam& d = proto.dropout_param();
      LS_ASSIGN_OR_RETURN(
          spec.dropout.train,
          TrainFromProto(d.mode(), absl::StrCat(field, ".dropout_param.mode")));
      spec.dropout.p = d.p();
      spec.dropout.seed = d.seed();
    }
  }
  return spec;
}

void LayerSpecToProto(const LayerSpec& spec, v1::LayerSpec* proto) {
  proto->Clear();
  proto->set_name(spec.name);
  absl::StatusOr<const LayerDef*> def = FindLayer(spec.name);
  bool conv = !def.ok(), pool = !def.ok(), bn = !def.ok(), dropout = !def.ok();
  if (def.ok()) {
    for (ParamKind kind : (*def)->params) {
      switch (kind) {
        case ParamKind::kConv:
          conv = true;
          break;
        case ParamKind::kPool:
          pool = true;
          break;
        case ParamKind::kBatchnorm:
          bn = true;
          break;
        case ParamKind::kDropout:
          dropout = true;
          break;
      }
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
  if (bn) {
    v1::BatchnormParam* p = proto->mutable_bn_param();
    p->set_mode(spec.bn.mode == BatchnormParam::Mode::kTrain ? v1::TRAIN
                                                             : v1::TEST);
    p->set_eps(spec.bn.eps);
    p->set_momentum(spec.bn.momentum);
  }
  if (dropout) {
    v1::DropoutParam* p = proto->mutable_dropout_param();
    p->set_p(spec.dropout.p);
    p->set_mode(spec.dropout.train ? v1::TRAIN : v1::TEST);
    p->set_seed(spec.dropout.seed);
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
  for (absl::string_view in : def.label_inputs) {
    proto->add_label_inputs(std::string(in));
  }
  for (absl::string_view out : def.extra_outputs) {
    proto->add_extra_outputs(std::string(out));
  }
  for (absl::string_view in : def.grad_inputs) {
    proto->add_grad_inputs(std::string(in));
  }
}

}  // namespace layerserve
