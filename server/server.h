// LayerServer: a running gRPC server with the LayerService, the standard
// grpc.health.v1 health service and server reflection (grpc.reflection.
// v1alpha on Debian's gRPC 1.51), and RunServer, the `layerserve` binary's
// whole life: start, serve until SIGINT/SIGTERM, shut down gracefully.
//
// Message limits are set explicitly in both directions; SO_REUSEPORT is off
// so that a second server on a taken port fails instead of silently sharing
// it.
//
// Thread-safety: a LayerServer's methods may be called from any thread;
// Shutdown is idempotent.
#ifndef LAYERSERVE_SERVER_SERVER_H_
#define LAYERSERVE_SERVER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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
  ServiceOptions service;
};

class LayerServer {
 public:
  // Builds and starts the server. UNAVAILABLE when the address cannot be
  // bound (e.g. the port is taken), INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<LayerServer>> Start(
      const ServerOptions& options);

  ~LayerServer();
  LayerServer(const LayerServer&) = delete;
  LayerServer& operator=(const LayerServer&) = delete;

  // The port bound (0 without an address).
  int port() const { return port_; }
  // "HOST:PORT" as bound: the address's host and the actual port.
  const std::string& bound_address() const { return bound_address_; }

  // A channel to this server that bypasses the network, with the same
  // message limits as the server.
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // Stops accepting calls, lets in-flight ones finish for up to `grace`,
  // cancels the rest and returns once every handler has returned.
  void Shutdown(absl::Duration grace);

 private:
  LayerServer(const ServerOptions& options);

  const ServerOptions options_;
  LayerServiceImpl service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string bound_address_;
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

// The server binary: applies options.threads, starts the server, prints
// "listening on HOST:PORT" on stdout, serves until SIGINT or SIGTERM, then
// shuts down with options.shutdown_grace. OK after a clean shutdown; the
// Start error otherwise. Call it before any other thread exists: it blocks
// the two signals for the whole process and waits for them synchronously.
absl::Status RunServer(const ServerOptions& options);

}  // namespace layerserve::server

#endif  // LAYERSERVE_SERVER_SERVER_H_
