// layerctl: the command-line client of layerserve. main() only picks the
// subcommand; each one parses its own flags (client/cli_flags.h).
#include <grpc/support/log.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"
#include "client/cli_common.h"

namespace {

constexpr char kUsage[] =
    "usage: layerctl COMMAND [flags] [NAME=SPEC...]\n"
    "\n"
    "The command-line client of layerserve, the CNN layer service.\n"
    "\n"
    "commands:\n"
    "  health     is the server serving? (grpc.health.v1)\n"
    "  list       the layer catalog, as a table\n"
    "  forward    run a layer's forward pass; print/write its output\n"
    "  backward   run a layer's backward pass; print/write its gradients\n"
    "  gradcheck  numerical vs analytic gradients of a layer\n"
    "  compare    naive vs fast: timings, speedups, differences\n"
    "  notebook   replay the seed notebook's cells, PASS/FAIL each\n"
    "  bench      load generator: req/s and latency percentiles\n"
    "\n"
    "Every command takes --server HOST:PORT (default 127.0.0.1:50051),\n"
    "--timeout, --json and --help (with an example), and for a secured\n"
    "server --tls or --tls_ca FILE, --tls_cert FILE and --tls_key FILE\n"
    "(mutual TLS), --tls_server_name NAME and --auth_token_file FILE.\n"
    "Exit codes: 0 ok, 1 a check failed, 2 bad command line or input file,\n"
    "3 the RPC failed (server down, deadline, request rejected).\n"
    "\n"
    "example:\n"
    "  layerctl forward --layer conv --stride 2 --pad 1 \\\n"
    "      x=randn:2,3,8,8 w=randn:4,3,3,3 b=zeros:4 --out /tmp/out\n"
    "  layerctl list --server localhost:50051 --tls_ca ca.pem \\\n"
    "      --auth_token_file token.txt\n";

// gRPC's own log lines (e.g. a failed DNS lookup) would break the promise
// of one readable error line; they stay on when GRPC_VERBOSITY asks.
void QuietGrpcLogs() {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) {
    gpr_set_log_function([](gpr_log_func_args*) {});
  }
}

}  // namespace

int main(int argc, char** argv) {
  using layerserve::client::Args;
  QuietGrpcLogs();
  if (argc < 2) {
    std::cerr << kUsage;
    return layerserve::client::kExitUsage;
  }
  const std::string command = argv[1];
  Args args(argv + 2, argv + argc);
  if (command == "help" || command == "--help" || command == "-h") {
    if (!args.empty() && args[0] != "help") {
      // "layerctl help forward" is "layerctl forward --help".
      const std::string sub = args[0];
      args = {"--help"};
      if (sub == "health") return layerserve::client::RunHealth(args);
      if (sub == "list") return layerserve::client::RunList(args);
      if (sub == "forward") return layerserve::client::RunForward(args);
      if (sub == "backward") return layerserve::client::RunBackward(args);
      if (sub == "gradcheck") return layerserve::client::RunGradCheck(args);
      if (sub == "compare") return layerserve::client::RunCompare(args);
      if (sub == "notebook") return layerserve::client::RunNotebook(args);
      if (sub == "bench") return layerserve::client::RunBench(args);
    }
    std::cout << kUsage;
    return layerserve::client::kExitOk;
  }
  if (command == "health") return layerserve::client::RunHealth(args);
  if (command == "list") return layerserve::client::RunList(args);
  if (command == "forward") return layerserve::client::RunForward(args);
  if (command == "backward") return layerserve::client::RunBackward(args);
  if (command == "gradcheck") return layerserve::client::RunGradCheck(args);
  if (command == "compare") return layerserve::client::RunCompare(args);
  if (command == "notebook") return layerserve::client::RunNotebook(args);
  if (command == "bench") return layerserve::client::RunBench(args);
  std::cerr << "layerctl: unknown command '" << command
            << "' (see 'layerctl --help')\n";
  return layerserve::client::kExitUsage;
}
