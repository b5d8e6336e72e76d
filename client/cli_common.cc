#include "client/cli_common.h"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <limits>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "client/generators.h"
#include "lib/registry.h"
#include "lib/status_macros.h"
#include "proto/convert.h"

namespace layerserve::client {
namespace {

std::string KnownLayerNames() {
  std::vector<std::string> names;
  for (const LayerDef* def : AllLayers()) names.emplace_back(def->name);
  return absl::StrJoin(names, ", ");
}

bool Uses(const LayerDef& def, ParamKind kind) {
  return std::find(def.params.begin(), def.params.end(), kind) !=
         def.params.end();
}

absl::Status CheckInt32(absl::string_view flag, int64_t v) {
  if (v < std::numeric_limits<int32_t>::min() ||
      v > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", v, " does not fit in int32"));
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<int> ParseFlags(FlagSet& flags,
                              const std::vector<std::string>& args,
                              absl::string_view command) {
  absl::StatusOr<FlagSet::Outcome> outcome = flags.Parse(args);
  if (!outcome.ok()) return ReportError(command, outcome.status(), false);
  if (*outcome == FlagSet::Outcome::kHelp) {
    std::cout << flags.Help();
    return kExitOk;
  }
  return std::nullopt;
}

void AddConnectionFlags(FlagSet& flags, ConnectionFlags& values,
                        absl::Duration timeout) {
  values.timeout = timeout;
  flags.String("server", &values.server, "layerserve address, HOST:PORT");
  flags.Duration("timeout", &values.timeout,
                 "deadline of each RPC (e.g. 30s, 500ms)");
  flags.Bool("json", &values.json, "print one JSON object on stdout");
}

absl::StatusOr<std::unique_ptr<LayerClient>> ConnectFromFlags(
    const ConnectionFlags& flags) {
  const std::string& target = flags.server;
  const bool uri =
      absl::StrContains(target, "://") || absl::StartsWith(target, "unix:") ||
      absl::StartsWith(target, "ipv4:") || absl::StartsWith(target, "ipv6:");
  if (!uri) {
    const size_t colon = target.rfind(':');
    int port = 0;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(absl::string_view(target).substr(colon + 1), &port) ||
        port < 1 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--server: expected HOST:PORT with a port in 1..65535 (e.g. ",
          kDefaultServer, "), got '", target, "'"));
    }
  }
  ClientOptions options;
  options.target = target;
  options.timeout = flags.timeout;
  return LayerClient::Connect(options);
}

void AddLayerFlags(FlagSet& flags, LayerFlags& values, bool with_impl) {
  flags.String("layer", &values.layer,
               absl::StrCat("layer name: ", KnownLayerNames()));
  flags.Int("stride", &values.stride,
            "conv stride; for max_pool the pool stride");
  flags.Int("pad", &values.pad, "conv zero padding");
  flags.Int("pool_height", &values.pool_height, "pool window height");
  flags.Int("pool_width", &values.pool_width, "pool window width");
  flags.Int("pool_stride", &values.pool_stride,
            "pool stride of conv_relu_pool (max_pool: same as --stride)");
  if (with_impl) {
    flags.String("impl", &values.impl, "implementation: naive or fast");
  }
  flags.String("dtype", &values.dtype,
               "float32 or float64; .npy inputs are converted to it (default: "
               "the .npy inputs' dtype, else float64)");
  flags.Uint("seed", &values.seed,
             "seed of randn inputs (each input name gets its own stream)");
}

absl::StatusOr<LayerSpec> LayerSpecFromFlags(const FlagSet& flags,
                                             const LayerFlags& values) {
  if (values.layer.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--layer is required (one of ", KnownLayerNames(), ")"));
  }
  const std::pair<const char*, int64_t> ints[] = {
      {"stride", values.stride},
      {"pad", values.pad},
      {"pool_height", values.pool_height},
      {"pool_width", values.pool_width},
      {"pool_stride", values.pool_stride}};
  for (const auto& [name, v] : ints) LS_RETURN_IF_ERROR(CheckInt32(name, v));
  LayerSpec spec;
  spec.name = values.layer;
  spec.conv = ConvParam{values.stride, values.pad};
  spec.pool =
      PoolParam{values.pool_height, values.pool_width, values.pool_stride};
  absl::StatusOr<const LayerDef*> def = FindLayer(values.layer);
  if (!def.ok()) return spec;  // the server decides; it lists known layers

  const bool conv = Uses(**def, ParamKind::kConv);
  const bool pool = Uses(**def, ParamKind::kPool);
  auto unused = [&](absl::string_view flag, absl::string_view param) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": layer ", values.layer, " has no ", param));
  };
  if (!conv && flags.IsSet("pad")) return unused("pad", "conv_param");
  if (!conv && !pool && flags.IsSet("stride")) {
    return unused("stride", "conv_param or pool_param");
  }
  for (const char* f : {"pool_height", "pool_width", "pool_stride"}) {
    if (!pool && flags.IsSet(f)) return unused(f, "pool_param");
  }
  if (pool && !conv) {
    if (flags.IsSet("stride") && flags.IsSet("pool_stride") &&
        values.stride != values.pool_stride) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--stride=", values.stride, " and --pool_stride=", values.pool_stride,
          " disagree; for ", values.layer, " both mean the pool stride"));
    }
    if (flags.IsSet("stride")) spec.pool.stride = values.stride;
  }
  return spec;
}

absl::StatusOr<Impl> ImplFromFlags(const LayerFlags& values) {
  if (values.impl == "naive") return Impl::kNaive;
  if (values.impl == "fast") return Impl::kFast;
  return absl::InvalidArgumentError(
      absl::StrCat("--impl: expected naive or fast, got '", values.impl, "'"));
}

absl::StatusOr<std::optional<DType>> DTypeFromFlags(const LayerFlags& values) {
  if (values.dtype.empty()) return std::optional<DType>();
  absl::StatusOr<DType> d = ParseDType(values.dtype);
  if (!d.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", d.status().message()));
  }
  return std::optional<DType>(*d);
}

absl::StatusOr<TensorMap> TensorsFromArgs(
    const FlagSet& flags, const LayerFlags& values, const LayerSpec& spec,
    const std::vector<std::string>& extra) {
  LS_ASSIGN_OR_RETURN(std::optional<DType> dtype, DTypeFromFlags(values));
  absl::StatusOr<const LayerDef*> def = FindLayer(spec.name);
  if (def.ok()) {
    // Names first, so that a typo is reported before files are read.
    std::vector<std::string> given;
    for (const std::string& arg : flags.positional()) {
      LS_ASSIGN_OR_RETURN(NamedTensorSpec s, ParseNamedTensorSpec(arg));
      const bool known =
          std::find((*def)->inputs.begin(), (*def)->inputs.end(), s.name) !=
              (*def)->inputs.end() ||
          std::find(extra.begin(), extra.end(), s.name) != extra.end();
      if (!known) {
        std::vector<std::string> allowed;
        for (absl::string_view in : (*def)->inputs) allowed.emplace_back(in);
        allowed.insert(allowed.end(), extra.begin(), extra.end());
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected input '", s.name, "': layer ", spec.name,
                         " takes ", absl::StrJoin(allowed, ", ")));
      }
      given.push_back(s.name);
    }
    std::vector<std::string> missing;
    for (absl::string_view in : (*def)->inputs) {
      if (std::find(given.begin(), given.end(), in) == given.end()) {
        missing.emplace_back(in);
      }
    }
    if (!missing.empty()) {
      std::vector<std::string> inputs;
      for (absl::string_view in : (*def)->inputs) inputs.emplace_back(in);
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", spec.name, " needs inputs ", absl::StrJoin(inputs, ", "),
          "; missing ", absl::StrJoin(missing, ", "),
          " (give each as NAME=SPEC, e.g. ", missing[0], "=randn:2,3,8,8)"));
    }
  }
  return MakeTensors(flags.positional(), dtype, values.seed);
}

void InputsToProto(TensorMap& tensors, const std::vector<std::string>& extra,
                   google::protobuf::Map<std::string, v1::Tensor>* proto) {
  for (auto& [name, tensor] : tensors) {
    if (std::find(extra.begin(), extra.end(), name) != extra.end()) continue;
    TensorToProto(tensor, &(*proto)[name]);
  }
}

int ReportError(absl::string_view command, const absl::Status& status,
                bool from_rpc, const ConnectionFlags* connection) {
  std::string message =
      absl::StrReplaceAll(status.message(), {{"\r\n", " "}, {"\n", " "}});
  std::string line = absl::StrCat("layerctl ", command, ": ");
  if (from_rpc) {
    absl::StrAppend(&line, absl::StatusCodeToString(status.code()), ": ",
                    message);
    if (connection != nullptr &&
        status.code() == absl::StatusCode::kUnavailable) {
      absl::StrAppend(&line, " (is layerserve running at ", connection->server,
                      "? see --server)");
    }
    if (connection != nullptr &&
        status.code() == absl::StatusCode::kDeadlineExceeded) {
      absl::StrAppend(
          &line, " (no answer from ", connection->server,
          " within --timeout=", absl::FormatDuration(connection->timeout), ")");
    }
  } else {
    absl::StrAppend(&line, message);
  }
  std::cerr << line << std::endl;
  return from_rpc ? kExitRpc : kExitUsage;
}

absl::Status EnsureDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out: cannot create directory '", dir, "'",
                     ec ? absl::StrCat(" (", ec.message(), ")") : ""));
  }
  return absl::OkStatus();
}

absl::Status AddDefaultDout(const LayerSpec& spec, TensorMap& tensors,
                            uint64_t seed) {
  if (tensors.count("dout") > 0) return absl::OkStatus();
  absl::StatusOr<TensorDesc> out = InferOutput(spec, DescsOf(tensors));
  if (!out.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot infer the output shape for a default dout (give "
                     "dout=SPEC): ",
                     out.status().message()));
  }
  absl::StatusOr<Tensor> dout =
      Tensor::RandomNormal(out->dtype, out->shape, DerivedSeed(seed, "dout"));
  if (!dout.ok()) return dout.status();
  tensors.emplace("dout", *std::move(dout));
  return absl::OkStatus();
}

absl::StatusOr<Tensor> FromWire(const v1::Tensor& proto,
                                absl::string_view field) {
  return TensorFromProto(proto, field);
}

std::string HumanDuration(absl::Duration d) {
  const double s = absl::ToDoubleSeconds(d);
  if (s < 1e-3) return absl::StrFormat("%.1f us", s * 1e6);
  if (s < 1) return absl::StrFormat("%.3f ms", s * 1e3);
  return absl::StrFormat("%.3f s", s);
}

}  // namespace layerserve::client
