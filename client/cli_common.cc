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
  flags.String("mode", &values.mode,
               "train or test: bn_param.mode of the batchnorm layers and "
               "dropout_param.mode of dropout; required by those layers");
  flags.Double("eps", &values.eps,
               "bn_param.eps (> 0), added to the variance; sent only when "
               "given");
  flags.SetDefaultText("eps", "the server's, 1e-5");
  flags.Double("momentum", &values.momentum,
               "bn_param.momentum in [0, 1]: running = momentum * running + "
               "(1 - momentum) * batch statistic; sent only when given");
  flags.SetDefaultText("momentum", "the server's, 0.9");
  flags.Double("p", &values.p,
               "dropout_param.p: the probability of KEEPING a unit, in (0, "
               "1]; kept units are scaled by 1/p in train mode. Required by "
               "dropout");
  flags.SetDefaultText("p", "none");
  flags.Uint("dropout_seed", &values.dropout_seed,
             "dropout_param.seed: the mask is a function of it and the "
             "element index, so forward and backward with one seed agree");
  if (with_impl) {
    flags.String("impl", &values.impl, "implementation: naive or fast");
  }
  flags.String("dtype", &values.dtype,
               "float32 or float64 for the float inputs; .npy inputs are "
               "converted to it; labels stay int64 (default: the float .npy "
               "inputs' dtype, else float64)");
  flags.Uint("seed", &values.seed,
             "seed of randn and labels inputs (each input name gets its own "
             "stream)");
}

std::string BatchnormAndLossExamples(absl::string_view command) {
  std::string bn = absl::StrCat(
      "  layerctl ", command,
      " --layer spatial_batchnorm --mode train --momentum 0.9 \\\n"
      "      x=randn:2,3,4,5 gamma=linspace:1,3:3 beta=zeros:3 \\\n"
      "      running_mean=zeros:3 running_var=linspace:1,1:3");
  std::string loss = absl::StrCat("  layerctl ", command,
                                  " --layer softmax_loss x=randn:8,10 "
                                  "y=labels:8:10");
  if (command == "forward") {
    absl::StrAppend(&bn,
                    "\n  train mode: prints out and the updated "
                    "running_mean and running_var");
    absl::StrAppend(&loss,
                    "\n  y is 8 int64 labels in [0, 10) from --seed; prints "
                    "the loss as a scalar");
  } else if (command == "backward") {
    absl::StrAppend(&bn, "\n  prints dx, dgamma and dbeta");
    absl::StrAppend(&loss,
                    "\n  dout defaults to 1.0 for a loss: prints the "
                    "course's dx");
  } else if (command == "gradcheck") {
    absl::StrAppend(&bn, " \\\n      --max_rel_error 1e-5");
    absl::StrAppend(&loss, " \\\n      --max_rel_error 1e-7");
  }
  return absl::StrCat(bn, "\n", loss);
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
  if (flags.IsSet("mode") && values.mode != "train" && values.mode != "test") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--mode: expected train or test, got '", values.mode, "'"));
  }
  const bool train = values.mode != "test";
  spec.bn.mode =
      train ? BatchnormParam::Mode::kTrain : BatchnormParam::Mode::kTest;
  spec.bn.eps = values.eps;
  spec.bn.momentum = values.momentum;
  spec.dropout.train = train;
  spec.dropout.p = values.p;
  spec.dropout.seed = values.dropout_seed;
  absl::StatusOr<const LayerDef*> def = FindLayer(values.layer);
  if (!def.ok()) return spec;  // the server decides; it lists known layers

  const bool conv = Uses(**def, ParamKind::kConv);
  const bool pool = Uses(**def, ParamKind::kPool);
  const bool bn = Uses(**def, ParamKind::kBatchnorm);
  const bool dropout = Uses(**def, ParamKind::kDropout);
  auto unused = [&](absl::string_view flag, absl::string_view param) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": layer ", values.layer, " has no ", param));
  };
  for (const char* f : {"eps", "momentum"}) {
    if (!bn && flags.IsSet(f)) return unused(f, "bn_param");
  }
  for (const char* f : {"p", "dropout_seed"}) {
    if (!dropout && flags.IsSet(f)) return unused(f, "dropout_param");
  }
  if (!bn && !dropout && flags.IsSet("mode")) {
    return unused("mode", "bn_param or dropout_param");
  }
  if ((bn || dropout) && !flags.IsSet("mode")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mode is required for layer ", values.layer, " (its ",
                     bn ? "bn_param" : "dropout_param",
                     ".mode): train or test, e.g. --mode train"));
  }
  if (dropout && !flags.IsSet("p")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--p is required for layer ", values.layer,
        ": dropout_param.p, the probability of KEEPING a unit, in (0, 1] "
        "(e.g. --p 0.8 keeps 80% of the units)"));
  }
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

void LayerSpecToWire(const FlagSet& flags, const LayerSpec& spec,
                     v1::LayerSpec* proto) {
  LayerSpecToProto(spec, proto);
  if (proto->has_bn_param()) {
    v1::BatchnormParam* bn = proto->mutable_bn_param();
    if (!flags.IsSet("eps")) bn->clear_eps();
    if (!flags.IsSet("momentum")) bn->clear_momentum();
    if (!flags.IsSet("mode")) bn->clear_mode();
  }
  if (proto->has_dropout_param()) {
    v1::DropoutParam* d = proto->mutable_dropout_param();
    if (!flags.IsSet("mode")) d->clear_mode();
    if (!flags.IsSet("p")) d->clear_p();
  }
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
  if (!d.ok() || !IsFloat(*d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dtype: expected float32 or float64, got '", values.dtype, "'",
        d.ok() ? " (it sets the float inputs; labels are int64 anyway)" : ""));
  }
  return std::optional<DType>(*d);
}

absl::StatusOr<TensorMap> TensorsFromArgs(
    const FlagSet& flags, const LayerFlags& values, const LayerSpec& spec,
    const std::vector<std::string>& extra) {
  LS_ASSIGN_OR_RETURN(std::optional<DType> dtype, DTypeFromFlags(values));
  absl::StatusOr<const LayerDef*> def = FindLayer(spec.name);
  std::optional<std::vector<std::string>> labels;
  if (def.ok()) {
    labels.emplace((*def)->label_inputs.begin(), (*def)->label_inputs.end());
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
      const bool label = std::find(labels->begin(), labels->end(),
                                   missing[0]) != labels->end();
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", spec.name, " needs inputs ", absl::StrJoin(inputs, ", "),
          "; missing ", absl::StrJoin(missing, ", "),
          " (give each as NAME=SPEC, e.g. ", missing[0],
          label ? "=labels:8:10)" : "=randn:2,3,8,8)"));
    }
  }
  return MakeTensors(flags.positional(), dtype, values.seed, labels);
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
  absl::StatusOr<const LayerDef*> def = FindLayer(spec.name);
  if (out.ok() && def.ok() && (*def)->output == "loss") {
    absl::StatusOr<Tensor> one = Tensor::Zeros(out->dtype, out->shape);
    if (!one.ok()) return one.status();
    one->Fill(1);
    tensors.emplace("dout", *std::move(one));
    return absl::OkStatus();
  }
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
