#include "client/client.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"

namespace layerserve::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

namespace {

// A PEM given inline, or read from the file it names; `field` names it in
// errors.
absl::StatusOr<std::string> PemFrom(const std::string& value,
                                    absl::string_view field) {
  if (absl::StartsWith(value, "-----BEGIN")) return value;
  std::ifstream in(value, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": cannot read '", value, "': ", std::strerror(errno)));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const ClientOptions& options) {
  if (options.credentials != nullptr) return options.credentials;
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert and tls_key: give both (a client certificate for mutual "
        "TLS) or neither");
  }
  const bool tls = options.tls || !options.tls_ca.empty() ||
                   !options.tls_cert.empty() ||
                   !options.tls_server_name.empty();
  if (!tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca.empty()) {
    LS_ASSIGN_OR_RETURN(ssl.pem_root_certs, PemFrom(options.tls_ca, "tls_ca"));
  }
  if (!options.tls_cert.empty()) {
    LS_ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                        PemFrom(options.tls_cert, "tls_cert"));
    LS_ASSIGN_OR_RETURN(ssl.pem_private_key,
                        PemFrom(options.tls_key, "tls_key"));
  }
  return grpc::SslCredentials(ssl);
}

absl::StatusOr<std::unique_ptr<LayerClient>> LayerClient::Connect(
    const ClientOptions& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("target: must not be empty");
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_message_bytes: must be > 0, got ", options.max_message_bytes));
  }
  for (char c : options.auth_token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "auth_token: must be printable ASCII without spaces");
    }
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  LS_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> creds,
                      ChannelCredentialsFor(options));
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options.target, creds, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "target: cannot create a channel to '", options.target, "'"));
  }
  return std::make_unique<LayerClient>(std::move(channel), options);
}

LayerClient::LayerClient(std::shared_ptr<grpc::Channel> channel,
                         const ClientOptions& options)
    : options_(options),
      channel_(std::move(channel)),
      stub_(v1::LayerService::NewStub(channel_)),
      health_stub_(grpc::health::v1::Health::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> LayerClient::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (options_.timeout != absl::InfiniteDuration()) {
    context->set_deadline(std::chrono::system_clock::now() +
                          absl::ToChronoNanoseconds(options_.timeout));
  }
  // Fail fast: a server that is down is an error now, not a wait.
  context->set_wait_for_ready(false);
  if (!options_.auth_token.empty()) {
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", options_.auth_token));
  }
  return context;
}

namespace {

// One unary call through `method` of `stub`: the response or the status.
template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Call(Stub* stub,
                              grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                           const Request&,
                                                           Response*),
                              grpc::ClientContext* context,
                              const Request& request) {
  Response response;
  grpc::Status status = (stub->*method)(context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

}  // namespace

absl::StatusOr<v1::ListLayersResponse> LayerClient::ListLayers(
    const v1::ListLayersRequest& request) {
  return Call(stub_.get(), &v1::LayerService::Stub::ListLayers,
              NewContext().get(), request);
}

absl::StatusOr<v1::ForwardResponse> LayerClient::Forward(
    const v1::ForwardRequest& request) {
  return Call(stub_.get(), &v1::LayerService::Stub::Forward, NewContext().get(),
              request);
}

absl::StatusOr<v1::BackwardResponse> LayerClient::Backward(
    const v1::BackwardRequest& request) {
  return Call(stub_.get(), &v1::LayerService::Stub::Backward,
              NewContext().get(), request);
}

absl::StatusOr<v1::GradCheckResponse> LayerClient::GradCheck(
    const v1::GradCheckRequest& request) {
  return Call(stub_.get(), &v1::LayerService::Stub::GradCheck,
              NewContext().get(), request);
}

absl::StatusOr<v1::CompareResponse> LayerClient::Compare(
    const v1::CompareRequest& request) {
  return Call(stub_.get(), &v1::LayerService::Stub::Compare, NewContext().get(),
              request);
}

absl::StatusOr<std::string> LayerClient::Health(const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  absl::StatusOr<grpc::health::v1::HealthCheckResponse> response =
      Call(health_stub_.get(), &grpc::health::v1::Health::Stub::Check,
           NewContext().get(), request);
  if (!response.ok()) return response.status();
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
      response->status());
}

}  // namespace layerserve::client
