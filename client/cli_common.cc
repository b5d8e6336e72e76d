#include "client/cli_common.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <system_error>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
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

// The contents of a file a flag names (PEM files and tokens: small).
absl::StatusOr<std::string> ReadSmallFile(absl::string_view flag,
                                          const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, ": cannot read '", path, "': ", std::strerror(errno)));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": cannot read '", path, "'"));
  }
  return contents.str();
}

// Why a call found no server, as far as the message tells: gRPC reports a
// failed TLS handshake, and a TLS server hanging up on a plaintext client
// (or an mTLS server on a client without a certificate), as UNAVAILABLE.
std::string UnavailableHint(const ConnectionFlags& c,
                            absl::string_view message) {
  const bool tls = c.tls || !c.tls_ca.empty() || !c.tls_cert.empty() ||
                   !c.tls_server_name.empty();
  if (absl::StrContains(message, "is not in peer certificate")) {
    return " (the server's certificate is for another name: see "
           "--tls_server_name)";
  }
  if (absl::StrContains(message, "certificate verify failed")) {
    return c.tls_ca.empty()
               ? " (the server's certificate is not signed by a system CA: "
                 "give its CA with --tls_ca)"
               : " (the server's certificate is not signed by --tls_ca)";
  }
  if (absl::StrContains(message, "wrong version number")) {
    return " (the server does not speak TLS: drop the --tls flags)";
  }
  if (absl::StrContains(message, "andshake") ||
      absl::StrContains(message, "SSL")) {
    return " (TLS handshake failed: see --tls_ca, --tls_cert, --tls_key)";
  }
  // Nothing listens there (or the name does not resolve): TLS is not it.
  if (absl::StrContains(message, "Connection refused") ||
      absl::StrContains(message, "DNS") ||
      absl::StrContains(message, "resolution")) {
    return absl::StrCat(" (is layerserve running at ", c.server,
                        "? see --server)");
  }
  if (!tls) {
    return absl::StrCat(" (is layerserve running at ", c.server,
                        "? see --server; a TLS server needs --tls or "
                        "--tls_ca)");
  }
  return absl::StrCat(" (is layerserve running at ", c.server,
                      " with TLS? see --server; a server with "
                      "--tls_client_ca also needs --tls_cert and --tls_key",
                      c.tls_cert.empty() ? "" : " from a CA it trusts", ")");
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
  flags.StartGroup("connection flags (every command)");
  flags.String("server", &values.server, "layerserve address, HOST:PORT");
  flags.Duration("timeout", &values.timeout,
                 "deadline of each RPC (e.g. 30s, 500ms)");
  flags.Bool("json", &values.json, "print one JSON object on stdout");
  flags.Bool("tls", &values.tls,
             "connect with TLS, checking the server's certificate against "
             "the system's CAs (implied by the other --tls_* flags)");
  flags.String("tls_ca", &values.tls_ca,
               "PEM file of the CA(s) that signed the server's certificate "
               "(for a private CA; implies --tls)");
  flags.SetValueName("tls_ca", "FILE");
  flags.String("tls_cert", &values.tls_cert,
               "PEM file of this client's certificate (chain), for servers "
               "that require one (mutual TLS); needs --tls_key");
  flags.SetValueName("tls_cert", "FILE");
  flags.String("tls_key", &values.tls_key,
               "PEM file of the private key of --tls_cert");
  flags.SetValueName("tls_key", "FILE");
  flags.String("tls_server_name", &values.tls_server_name,
               "check the server's certificate for this name instead of "
               "--server's host (e.g. when connecting by IP address)");
  flags.SetValueName("tls_server_name", "NAME");
  flags.String("auth_token_file", &values.auth_token_file,
               "file holding the server's bearer token (surrounding "
               "whitespace is ignored); sent as 'authorization: Bearer' on "
               "every call. A file, so that the token stays out of shell "
               "history and `ps`");
  flags.SetValueName("auth_token_file", "FILE");
  flags.StartGroup("");
  flags.AddSection(
      "secure connections (the same flags for every command)",
      "  layerctl health --server localhost:50051 --tls_ca ca.pem \\\n"
      "      --tls_cert client.pem --tls_key client.key "
      "--auth_token_file token.txt\n"
      "  TLS against a private CA, with a client certificate (for a server "
      "run with\n"
      "  --tls_client_ca) and a bearer token (the server's "
      "--auth_token_file). A server\n"
      "  whose certificate comes from a public CA needs only --tls. health "
      "needs no\n"
      "  token; the other commands do when the server has one.");
}

absl::StatusOr<ClientOptions> ClientOptionsFromFlags(
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
  if (flags.tls_cert.empty() != flags.tls_key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert and --tls_key: give both (the client certificate and its "
        "private key, for mutual TLS) or neither; got only --",
        flags.tls_cert.empty() ? "tls_key" : "tls_cert"));
  }
  ClientOptions options;
  options.target = target;
  options.timeout = flags.timeout;
  options.tls = flags.tls;
  options.tls_server_name = flags.tls_server_name;
  // Read here rather than by the client library, so that the error names
  // the flag; passed on as PEM text.
  for (const auto& [flag, path, field] :
       {std::tuple<const char*, const std::string*, std::string*>{
            "tls_ca", &flags.tls_ca, &options.tls_ca},
        {"tls_cert", &flags.tls_cert, &options.tls_cert},
        {"tls_key", &flags.tls_key, &options.tls_key}}) {
    if (path->empty()) continue;
    LS_ASSIGN_OR_RETURN(*field, ReadSmallFile(flag, *path));
    if (!absl::StrContains(*field, "-----BEGIN")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", *path,
                       "' is not a PEM file (no -----BEGIN line)"));
    }
  }
  if (!flags.auth_token_file.empty()) {
    LS_ASSIGN_OR_RETURN(std::string text, ReadSmallFile("auth_token_file",
                                                        flags.auth_token_file));
    const absl::string_view token = absl::StripAsciiWhitespace(text);
    if (token.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--auth_token_file: '", flags.auth_token_file, "' is empty"));
    }
    for (char c : token) {
      if (c < 0x21 || c > 0x7e) {
        // The token itself stays out of the message.
        return absl::InvalidArgumentError(absl::StrCat(
            "--auth_token_file: the token in '", flags.auth_token_file,
            "' must be one word of printable ASCII"));
      }
    }
    options.auth_token = std::string(token);
  }
  return options;
}

absl::StatusOr<std::unique_ptr<LayerClient>> ConnectFromFlags(
    const ConnectionFlags& flags) {
  LS_ASSIGN_OR_RETURN(ClientOptions options, ClientOptionsFromFlags(flags));
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
      absl::StrAppend(&line, UnavailableHint(*connection, message));
    }
    if (connection != nullptr &&
        status.code() == absl::StatusCode::kUnauthenticated) {
      absl::StrAppend(&line,
                      connection->auth_token_file.empty()
                          ? " (give the server's token with --auth_token_file)"
                          : " (see --auth_token_file)");
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
