// What every layerctl subcommand shares: exit codes, the connection flags
// (--server, --timeout, --json, and the TLS and token flags), the layer flags
// (--layer, --stride, ...), turning positional `name=spec` arguments into
// request tensors, and printing a failure as one line on stderr.
//
// Thread-safety: the functions are meant for the main thread of the CLI
// (they write to stdout/stderr); nothing here has shared state.
#ifndef LAYERSERVE_CLIENT_CLI_COMMON_H_
#define LAYERSERVE_CLIENT_CLI_COMMON_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/cli_flags.h"
#include "client/client.h"
#include "layerserve/v1/layer_service.pb.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve::client {

// Exit codes scripts can rely on.
enum ExitCode : int {
  kExitOk = 0,
  // The command ran but its check failed: a notebook cell or a gradient
  // check over --max_rel_error failed, health is not SERVING, bench errors.
  kExitCheckFailed = 1,
  // The command line is wrong: unknown flag, bad value, bad tensor spec,
  // missing or malformed .npy file, unwritable --out. Nothing was sent.
  kExitUsage = 2,
  // The RPC failed: server down or unreachable, deadline exceeded, or the
  // server rejected the request (its status message is printed).
  kExitRpc = 3,
};

inline constexpr char kDefaultServer[] = "127.0.0.1:50051";

struct ConnectionFlags {
  std::string server = kDefaultServer;
  absl::Duration timeout = absl::Seconds(60);
  bool json = false;
  // One to one onto ClientOptions (client/client.h), except that the token
  // is read from a file: on the command line it would show in `ps` and in
  // shell history.
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_server_name;
  std::string auth_token_file;
};
// Parses the command line of `command`: nullopt to go on, or the exit code
// to return right away (0 after printing --help to stdout, kExitUsage after
// printing the error).
std::optional<int> ParseFlags(FlagSet& flags,
                              const std::vector<std::string>& args,
                              absl::string_view command);

// Registers --server, --timeout (with `timeout` as its default), --json,
// --tls, --tls_ca, --tls_cert, --tls_key, --tls_server_name and
// --auth_token_file, and a "secure connections" help section with examples.
void AddConnectionFlags(FlagSet& flags, ConnectionFlags& values,
                        absl::Duration timeout);

// The ClientOptions the connection flags ask for: checks --server
// (HOST:PORT with a port in 1..65535, or a gRPC URI such as unix:PATH or
// dns:///HOST:PORT), that --tls_cert and --tls_key come together, that the
// TLS files can be read, and reads the token from --auth_token_file
// (surrounding whitespace trimmed; the token itself never appears in an
// error). INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<ClientOptions> ClientOptionsFromFlags(
    const ConnectionFlags& flags);

// ClientOptionsFromFlags, then the channel (no I/O yet).
absl::StatusOr<std::unique_ptr<LayerClient>> ConnectFromFlags(
    const ConnectionFlags& flags);

struct LayerFlags {
  std::string layer;
  int64_t stride = 1;
  int64_t pad = 0;
  int64_t pool_height = 2;
  int64_t pool_width = 2;
  int64_t pool_stride = 2;
  // bn_param and dropout_param. The defaults shown here are the server's;
  // eps and momentum are sent only when given (see LayerSpecToWire).
  std::string mode;  // "train" or "test"; required by bn/dropout layers
  double eps = 1e-5;
  double momentum = 0.9;
  double p = 0;  // dropout's KEEP probability; required by dropout
  uint64_t dropout_seed = 0;
  std::string impl = "fast";
  std::string dtype;  // empty: from the .npy inputs, else float64
  uint64_t seed = 0;
};
// Registers --layer, --stride, --pad, --pool_height, --pool_width,
// --pool_stride, --mode, --eps, --momentum, --p, --dropout_seed, --dtype,
// --seed, and --impl when `with_impl`.
void AddLayerFlags(FlagSet& flags, LayerFlags& values, bool with_impl);

// Example command lines of `command` (forward, backward, gradcheck,
// compare) for a batchnorm layer and a loss, for --help.
std::string BatchnormAndLossExamples(absl::string_view command);

// The request's layer spec. --stride is the conv stride for layers with a
// conv_param and the pool stride for layers with only a pool_param
// (max_pool); --pool_stride sets the pool stride of layers with both
// (conv_relu_pool). --mode is required by layers with a bn_param or a
// dropout_param, --p by dropout. A flag the layer does not use is an
// error, so that a typo cannot silently run something else. Layers this
// build does not know are passed through (the server lists the ones it
// knows, and rejects missing params).
absl::StatusOr<LayerSpec> LayerSpecFromFlags(const FlagSet& flags,
                                             const LayerFlags& values);

// The wire form of `spec` as the command line gave it: LayerSpecToProto,
// except that bn_param.eps and bn_param.momentum are left unset unless
// --eps / --momentum were given (so the server's defaults apply), and the
// modes and dropout's p stay unset when --mode / --p were not given (so a
// layer this client does not know is judged by the server).
void LayerSpecToWire(const FlagSet& flags, const LayerSpec& spec,
                     v1::LayerSpec* proto);

absl::StatusOr<Impl> ImplFromFlags(const LayerFlags& values);
absl::StatusOr<std::optional<DType>> DTypeFromFlags(const LayerFlags& values);

// Tensors from the positional `name=spec` arguments; `extra` names allowed
// besides the layer's inputs (e.g. "dout"). Missing inputs of a known layer
// are an error that shows an example spec.
absl::StatusOr<TensorMap> TensorsFromArgs(
    const FlagSet& flags, const LayerFlags& values, const LayerSpec& spec,
    const std::vector<std::string>& extra);

// Moves the tensors named by the layer's inputs into `proto` (all of them
// for an unknown layer, except those in `extra`).
void InputsToProto(TensorMap& tensors, const std::vector<std::string>& extra,
                   google::protobuf::Map<std::string, v1::Tensor>* proto);

// Prints "layerctl CMD: message" as one line on stderr (newlines in the
// message are folded) with a hint naming the flag to look at for an
// unreachable server, a refused TLS handshake or a missing token, and returns
// the exit code for `status`: kExitUsage for errors found before sending,
// kExitRpc otherwise (`from_rpc`).
int ReportError(absl::string_view command, const absl::Status& status,
                bool from_rpc, const ConnectionFlags* connection = nullptr);

// Creates `dir` (and parents) if missing; an error naming it if that fails.
absl::Status EnsureDir(const std::string& dir);

// When `tensors` has no "dout": adds randn of the layer's output shape
// (inferred locally from the inputs), seeded like a `dout=randn:...` input;
// for a loss (output "loss") it adds 1.0, so that the gradients are the
// loss's own (the course's dx).
absl::Status AddDefaultDout(const LayerSpec& spec, TensorMap& tensors,
                            uint64_t seed);

// Converts a response tensor; `field` names it in errors.
absl::StatusOr<Tensor> FromWire(const v1::Tensor& proto,
                                absl::string_view field);

// "1.234 ms" / "12.3 s": durations for humans.
std::string HumanDuration(absl::Duration d);

}  // namespace layerserve::client

#endif  // LAYERSERVE_CLIENT_CLI_COMMON_H_
