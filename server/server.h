// LayerServer: a running gRPC server with the LayerService, the standard
// grpc.health.v1 health service and server reflection (grpc.reflection.
// v1alpha on Debian's gRPC 1.51), and RunServer, the `layerserve` binary's
// whole life: start, serve until SIGINT/SIGTERM, shut down gracefully.
//
// Message limits are set explicitly in both directions; SO_REUSEPORT is off
// so that a second server on a taken port fails instead of silently sharing
// it. Optionally TLS (with client certificates: mutual TLS) and a bearer
// token that every LayerService call must carry.
//
// Thread-safety: a LayerServer's methods may be called from any thread;
// Shutdown is idempotent.
#ifndef LAYERSERVE_SERVER_SERVER_H_
#define LAYERSERVE_SERVER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/service.h"

namespace layerserve::server {

struct ServerOptions {
  // host:port to listen on; port 0 picks a free one. Empty: no listening
  // port, only InProcessChannel() (for tests).
  std::string address = "127.0.0.1:50051";
  // Send and receive limit, bytes.
  int max_message_bytes = 512 << 20;
  // Intra-op threads for all calls together; 0 = the number of cores. A
  // process-wide setting (lib/threading.h): RunServer applies it, Start
  // only checks it.
  int threads = 0;
  // How long in-flight calls may run on after a shutdown signal before
  // they are cancelled.
  absl::Duration shutdown_grace = absl::Seconds(10);
  // TLS: PEM files of the server's certificate chain and private key, both
  // or neither (plaintext).
  std::string tls_cert_file;
  std::string tls_key_file;
  // With TLS: a PEM file of the CA(s) whose client certificates are
  // accepted; set, clients must present one (mutual TLS).
  std::string tls_client_ca_file;
  // A file holding the bearer token every LayerService call must carry
  // (whitespace around it is ignored); sets service.auth_token.
  std::string auth_token_file;
  ServiceOptions service;
};

class LayerServer {
 public:
  // Builds and starts the server. UNAVAILABLE when the address cannot be
  // bound (e.g. the port is taken), INVALID_ARGUMENT for bad options or a
  // TLS or token file that cannot be read.
  static absl::StatusOr<std::unique_ptr<LayerServer>> Start(
      const ServerOptions& options);

  ~LayerServer();
  LayerServer(const LayerServer&) = delete;
  LayerServer& operator=(const LayerServer&) = delete;

  // The port bound (0 without an address).
  int port() const { return port_; }
  // "HOST:PORT" as bound: the address's host and the actual port.
  const std::string& bound_address() const { return bound_address_; }

  // A channel to this server that bypasses the network (and TLS), with the
  // same message limits as the server.
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // The service, e.g. to look at its admission control in tests.
  const LayerServiceImpl& service() const { return service_; }

  // Stops accepting calls, lets in-flight ones finish for up to `grace`,
  // cancels the rest and returns once every handler has returned.
  void Shutdown(absl::Duration grace);

 private:
  LayerServer(const ServerOptions& options, ServiceOptions service);

  const ServerOptions options_;
  LayerServiceImpl service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string bound_address_;
  // std::mutex: Debian's Abseil is not TSan-instrumented (admission.h).
  std::mutex shutdown_mu_;
  bool shut_down_ = false;  // guarded by shutdown_mu_
};

// The server binary: applies options.threads, starts the server, prints
// "listening on HOST:PORT" on stdout, serves until SIGINT or SIGTERM, then
// shuts down with options.shutdown_grace. OK after a clean shutdown; the
// Start error otherwise. Call it before any other thread exists: it blocks
// the two signals for the whole process and waits for them synchronously.
absl::Status RunServer(const ServerOptions& options);

}  // namespace layerserve::server

#endif  // LAYERSERVE_SERVER_SERVER_H_
