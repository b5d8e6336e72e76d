#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"
#include "lib/threading.h"

namespace layerserve::server {
namespace {

// "HOST" of "HOST:PORT" (IPv6 hosts keep their brackets).
std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return address;
  return address.substr(0, colon);
}

ServiceOptions WithResponseLimit(ServiceOptions service,
                                 int max_message_bytes) {
  if (service.max_response_bytes == 0) {
    service.max_response_bytes = max_message_bytes;
  }
  return service;
}

}  // namespace

LayerServer::LayerServer(const ServerOptions& options)
    : options_(options),
      service_(WithResponseLimit(options.service, options.max_message_bytes)) {}

absl::StatusOr<std::unique_ptr<LayerServer>> LayerServer::Start(
    const ServerOptions& options) {
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_message_bytes: must be > 0, got ", options.max_message_bytes));
  }
  if (options.service.max_tensor_elements <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_tensor_elements: must be > 0, got ",
                     options.service.max_tensor_elements));
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--threads: must be >= 0 (0 = all cores), got ", options.threads));
  }
  // Both are process-wide switches read by the next BuildAndStart.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<LayerServer> server(new LayerServer(options));
  grpc::ServerBuilder builder;
  if (!options.address.empty()) {
    builder.AddListeningPort(options.address, grpc::InsecureServerCredentials(),
                             &server->port_);
  }
  // gRPC sets SO_REUSEPORT by default, and a second server on the same port
  // would then start silently and take half the traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(&server->service_);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr ||
      (!options.address.empty() && server->port_ == 0)) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.address,
        " (--address): the port is in use or the address is not one of "
        "this host's"));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(
      v1::LayerService::service_full_name(), true);
  if (!options.address.empty()) {
    server->bound_address_ =
        absl::StrCat(HostOf(options.address), ":", server->port_);
  }
  return server;
}

LayerServer::~LayerServer() { Shutdown(absl::ZeroDuration()); }

std::shared_ptr<grpc::Channel> LayerServer::InProcessChannel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  return server_->InProcessChannel(args);
}

void LayerServer::Shutdown(absl::Duration grace) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() +
                    absl::ToChronoNanoseconds(grace));
  server_->Wait();
}

absl::Status RunServer(const ServerOptions& options) {
  // Blocked here, before gRPC starts its threads, so every thread inherits
  // the mask and the signals wait for sigwait below: no work happens in a
  // signal handler.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  SetMaxThreads(options.threads);
  LS_ASSIGN_OR_RETURN(std::unique_ptr<LayerServer> server,
                      LayerServer::Start(options));
  std::fprintf(stdout, "listening on %s\n", server->bound_address().c_str());
  std::fflush(stdout);
  std::fprintf(stderr,
               "layerserve: serving on %s (threads %d, max message %d bytes, "
               "max tensor %lld elements)\n",
               server->bound_address().c_str(), MaxThreads(),
               options.max_message_bytes,
               static_cast<long long>(options.service.max_tensor_elements));

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) != 0) {
  }
  std::fprintf(stderr,
               "layerserve: %s: no new calls; in-flight calls have %s to "
               "finish\n",
               strsignal(signal_number),
               absl::FormatDuration(options.shutdown_grace).c_str());
  server->Shutdown(options.shutdown_grace);
  std::fprintf(stderr, "layerserve: stopped\n");
  return absl::OkStatus();
}

}  // namespace layerserve::server
