#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
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

// The whole of a small file (a PEM, a token); `flag` names it in errors.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path,
                                          absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": cannot read '", path, "': ", std::strerror(errno)));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": error reading '", path, "'"));
  }
  return contents.str();
}

// The credentials the listening port uses: plaintext, TLS, or mutual TLS.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const ServerOptions& options) {
  const bool cert = !options.tls_cert_file.empty();
  const bool key = !options.tls_key_file.empty();
  if (cert != key) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key: give both (TLS) or neither (plaintext)");
  }
  if (!cert) {
    if (!options.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca: mutual TLS needs TLS; set --tls_cert and "
          "--tls_key too");
    }
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  LS_ASSIGN_OR_RETURN(pair.cert_chain,
                      ReadSmallFile(options.tls_cert_file, "--tls_cert"));
  LS_ASSIGN_OR_RETURN(pair.private_key,
                      ReadSmallFile(options.tls_key_file, "--tls_key"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (options.tls_client_ca_file.empty()) {
    ssl.client_certificate_request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  } else {
    LS_ASSIGN_OR_RETURN(
        ssl.pem_root_certs,
        ReadSmallFile(options.tls_client_ca_file, "--tls_client_ca"));
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// The service options with what the server adds: the response limit from
// the message limit, the token from its file.
absl::StatusOr<ServiceOptions> CompleteServiceOptions(
    const ServerOptions& options) {
  ServiceOptions service = options.service;
  if (service.max_response_bytes == 0) {
    service.max_response_bytes = options.max_message_bytes;
  }
  if (!options.auth_token_file.empty()) {
    LS_ASSIGN_OR_RETURN(
        std::string token,
        ReadSmallFile(options.auth_token_file, "--auth_token_file"));
    token = std::string(absl::StripAsciiWhitespace(token));
    if (token.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--auth_token_file: '", options.auth_token_file, "' is empty"));
    }
    for (char c : token) {
      // What gRPC accepts in a metadata value, minus whitespace.
      if (c < 0x21 || c > 0x7e) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--auth_token_file: the token in '", options.auth_token_file,
            "' must be printable ASCII without spaces"));
      }
    }
    service.auth_token = std::move(token);
  }
  return service;
}

}  // namespace

LayerServer::LayerServer(const ServerOptions& options, ServiceOptions service)
    : options_(options), service_(std::move(service)) {}

absl::StatusOr<std::unique_ptr<LayerServer>> LayerServer::Start(
    const ServerOptions& options) {
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_message_bytes: must be > 0, got ", options.max_message_bytes));
  }
  const CallLimits& limits = options.service.limits;
  for (const auto& [value, name] :
       {std::pair(limits.max_tensor_elements, "--max_tensor_elements"),
        std::pair(limits.max_request_elements, "--max_request_elements"),
        std::pair(limits.max_gradcheck_macs, "--max_gradcheck_macs")}) {
    if (value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": must be > 0, got ", value));
    }
  }
  if (options.service.max_concurrent < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_concurrent: must be >= 0 (0 = the number of "
                     "cores), got ",
                     options.service.max_concurrent));
  }
  if (options.service.max_queue < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_queue: must be >= 0, got ", options.service.max_queue));
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--threads: must be >= 0 (0 = all cores), got ", options.threads));
  }
  // Both are process-wide switches read by the next BuildAndStart.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  LS_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                      ServerCredentialsFor(options));
  LS_ASSIGN_OR_RETURN(ServiceOptions service, CompleteServiceOptions(options));
  std::unique_ptr<LayerServer> server(
      new LayerServer(options, std::move(service)));
  grpc::ServerBuilder builder;
  if (!options.address.empty()) {
    builder.AddListeningPort(options.address, credentials, &server->port_);
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
  std::lock_guard<std::mutex> lock(shutdown_mu_);
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
  const ServiceOptions& service = server->service().options();
  std::fprintf(
      stderr,
      "layerserve: serving on %s (%s%s; threads %d, max concurrent %d, max "
      "queue %d, max message %d bytes, max tensor %lld elements, max call "
      "%lld elements, max gradcheck %lld multiply-adds)\n",
      server->bound_address().c_str(),
      options.tls_cert_file.empty()        ? "plaintext"
      : options.tls_client_ca_file.empty() ? "TLS"
                                           : "mutual TLS",
      service.auth_token.empty() ? "" : ", bearer token required", MaxThreads(),
      server->service().admission().max_concurrent(),
      server->service().admission().max_queue(), options.max_message_bytes,
      static_cast<long long>(service.limits.max_tensor_elements),
      static_cast<long long>(service.limits.max_request_elements),
      static_cast<long long>(service.limits.max_gradcheck_macs));

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
