// layerserve: the LayerService gRPC server. Flags and --help only; the work
// is in RunServer (server/server.h).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/server.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051",
          "host:port to listen on; port 0 picks a free port (printed on "
          "stdout as 'listening on HOST:PORT')");
ABSL_FLAG(int32_t, max_message_bytes, 512 << 20,
          "largest request and response, bytes (both directions)");
ABSL_FLAG(int64_t, max_tensor_elements, int64_t{64} << 20,
          "largest tensor (input, dout, output or intermediate) a call may "
          "use, elements; larger requests get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_request_elements, int64_t{256} << 20,
          "most tensor elements one call may hold at once (inputs, dout, "
          "outputs, intermediates, gradients and copies together); larger "
          "calls get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_gradcheck_macs, int64_t{50'000'000'000},
          "most multiply-adds a gradient check may run (2 forward passes per "
          "checked input element); larger checks get RESOURCE_EXHAUSTED and "
          "can use sampled mode (GradCheckRequest.num_checks) instead");
ABSL_FLAG(int32_t, max_concurrent, 0,
          "computations (Forward, Backward, GradCheck, Compare) run at "
          "once; 0 = the number of cores");
ABSL_FLAG(int32_t, max_queue, 64,
          "calls that may wait for a computation slot; beyond that calls "
          "get RESOURCE_EXHAUSTED at once");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM file of the server's certificate (chain); with --tls_key, "
          "serve TLS instead of plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM file of the server's private key");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM file of the CA(s) that sign client certificates; set, clients "
          "must present one (mutual TLS)");
ABSL_FLAG(std::string, auth_token_file, "",
          "file holding a bearer token: LayerService calls must carry "
          "'authorization: Bearer <token>' (else UNAUTHENTICATED); health "
          "and reflection stay open");
ABSL_FLAG(int32_t, threads, 0,
          "intra-op threads shared by all calls; 0 = the number of cores");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "after SIGINT/SIGTERM, how long in-flight calls may run on before "
          "they are cancelled");
ABSL_FLAG(bool, log_calls, true, "one line per call on stderr");

namespace {

constexpr char kUsage[] =
    "usage: layerserve [flags]\n"
    "\n"
    "Serves layerserve.v1.LayerService (CNN layers: forward, backward, "
    "gradient\n"
    "checks, naive vs fast), grpc.health.v1 and server reflection over "
    "gRPC.\n"
    "Prints 'listening on HOST:PORT' on stdout once it accepts calls, and one "
    "line\n"
    "per call on stderr. SIGINT/SIGTERM stop it gracefully "
    "(--shutdown_grace).\n"
    "\n"
    "examples:\n"
    "  layerserve --address 127.0.0.1:50051\n"
    "  layerserve --address 0.0.0.0:50051 --tls_cert server.pem \\\n"
    "      --tls_key server.key --tls_client_ca client-ca.pem \\\n"
    "      --auth_token_file token.txt\n"
    "  TLS, client certificates required (mutual TLS), and a bearer token "
    "for\n"
    "  LayerService calls (health and reflection stay open). The client: "
    "layerctl\n"
    "  with --tls_ca, --tls_cert, --tls_key, --auth_token_file.";

// Whether `filename` (as Abseil records it) is this file: its flags are the
// ones --help lists. Abseil's default only matches files named like the
// program (layerserve.cc, layerserve_main.cc).
bool IsServerMain(absl::string_view filename) {
  return absl::EndsWith(filename, "server/main.cc");
}

// Word-wraps `text` to 80 columns, each line indented by `indent`.
std::string Wrap(absl::string_view text, size_t indent) {
  std::string out(indent, ' ');
  size_t col = indent;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (col > indent && col + 1 + word.size() > 80) {
      absl::StrAppend(&out, "\n", std::string(indent, ' '));
      col = indent;
    } else if (col > indent) {
      out += ' ';
      ++col;
    }
    absl::StrAppend(&out, word);
    col += word.size();
  }
  return out;
}

// --help: the usage text and this file's flags. Abseil's own --help exits
// with status 1, which scripts and tests read as a failure.
void PrintHelp() {
  std::vector<absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (IsServerMain(flag->Filename())) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const auto* a, const auto* b) { return a->Name() < b->Name(); });
  std::string out = absl::StrCat(kUsage, "\n\nflags:\n");
  for (const absl::CommandLineFlag* flag : flags) {
    const std::string value = flag->DefaultValue();
    const std::string shown =
        flag->IsOfType<std::string>() ? absl::StrCat("\"", value, "\"") : value;
    absl::StrAppend(&out, "  --", flag->Name(), " (default: ", shown, ")\n",
                    Wrap(flag->Help(), 6), "\n");
  }
  absl::StrAppend(&out,
                  "  --help\n      this text; --helpfull also lists "
                  "Abseil's own flags\n");
  std::fputs(out.c_str(), stdout);
}

}  // namespace

int main(int argc, char** argv) {
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = IsServerMain;
  usage_config.contains_helpshort_flags = IsServerMain;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(kUsage);
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-help" || arg == "-h" ||
        arg == "--helpshort" || arg == "-helpshort") {
      PrintHelp();
      return 0;
    }
  }
  absl::ParseCommandLine(argc, argv);
  layerserve::server::ServerOptions options;
  options.address = absl::GetFlag(FLAGS_address);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  options.service.limits.max_tensor_elements =
      absl::GetFlag(FLAGS_max_tensor_elements);
  options.service.limits.max_request_elements =
      absl::GetFlag(FLAGS_max_request_elements);
  options.service.limits.max_gradcheck_macs =
      absl::GetFlag(FLAGS_max_gradcheck_macs);
  options.service.max_concurrent = absl::GetFlag(FLAGS_max_concurrent);
  options.service.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.service.log_calls = absl::GetFlag(FLAGS_log_calls);
  const absl::Status status = layerserve::server::RunServer(options);
  if (!status.ok()) {
    std::fprintf(stderr, "layerserve: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
