// layerserve: the LayerService gRPC server. Flags only; the work is in
// RunServer (server/server.h).
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
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

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "layerserve --address=HOST:PORT: serves layerserve.v1.LayerService");
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
