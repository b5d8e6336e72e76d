// LayerClient: a small synchronous C++ client for layerserve.v1.LayerService
// and the server's grpc.health.v1 service.
//
// Every call carries the deadline from ClientOptions::timeout and fails fast
// (no wait-for-ready): a server that is down gives UNAVAILABLE, not a hang.
// gRPC statuses come back as absl::Status with the same code and message
// (the two code enums are numerically equal). The channel's send and
// receive limits are both set to max_message_bytes, so large tensors are not
// cut off by gRPC's 4 MiB default receive limit.
//
// Security: TLS (server verified against tls_ca, or the system's roots),
// mutual TLS (tls_cert + tls_key: the client's certificate), and a bearer
// token sent as "authorization: Bearer <auth_token>" on every call.
//
// Thread-safety: a LayerClient may be used from several threads at once
// (gRPC channels and stubs are thread-safe).
#ifndef LAYERSERVE_CLIENT_CLIENT_H_
#define LAYERSERVE_CLIENT_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "layerserve/v1/layer_service.grpc.pb.h"

namespace layerserve::client {

struct ClientOptions {
  // host:port, or any gRPC target URI.
  std::string target = "127.0.0.1:50051";
  // Per-call deadline. absl::InfiniteDuration() means none.
  absl::Duration timeout = absl::Seconds(60);
  // Send and receive limit, bytes; match the server's --max_message_bytes.
  int max_message_bytes = 512 << 20;
  // Explicit channel credentials; when set, the tls_* fields are ignored.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // TLS. Each of these is a path to a PEM file, or the PEM text itself (a
  // value starting with "-----BEGIN"). Setting any of them, or `tls`, makes
  // the channel TLS; otherwise it is plaintext.
  bool tls = false;
  // The CA(s) that signed the server's certificate; empty: the system's
  // roots.
  std::string tls_ca;
  // The client's certificate chain and private key, for servers that
  // require them (mutual TLS, --tls_client_ca). Both or neither.
  std::string tls_cert;
  std::string tls_key;
  // Overrides the name the server's certificate is checked against
  // (default: the target's host). For tests and IP targets.
  std::string tls_server_name;
  // Non-empty: sent on every call as "authorization: Bearer <auth_token>"
  // (the server's --auth_token_file). Printable ASCII without spaces.
  std::string auth_token;
};

// The channel credentials `options` asks for: options.credentials, TLS from
// the tls_* fields, or plaintext. INVALID_ARGUMENT naming the field for a
// PEM file that cannot be read or a cert without a key (or the reverse).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const ClientOptions& options);

// gRPC status -> absl::Status, same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

class LayerClient {
 public:
  // Creates the channel; does not connect (the first call does) and does not
  // block. INVALID_ARGUMENT for an empty target, a non-positive message
  // limit, unreadable TLS files or a token gRPC cannot send.
  static absl::StatusOr<std::unique_ptr<LayerClient>> Connect(
      const ClientOptions& options);

  // A client over an existing channel, e.g. a server's InProcessChannel.
  LayerClient(std::shared_ptr<grpc::Channel> channel,
              const ClientOptions& options);

  LayerClient(const LayerClient&) = delete;
  LayerClient& operator=(const LayerClient&) = delete;

  // The RPCs of LayerService: the response, or the server's status.
  absl::StatusOr<v1::ListLayersResponse> ListLayers(
      const v1::ListLayersRequest& request = {});
  absl::StatusOr<v1::ForwardResponse> Forward(
      const v1::ForwardRequest& request);
  absl::StatusOr<v1::BackwardResponse> Backward(
      const v1::BackwardRequest& request);
  absl::StatusOr<v1::GradCheckResponse> GradCheck(
      const v1::GradCheckRequest& request);
  absl::StatusOr<v1::CompareResponse> Compare(
      const v1::CompareRequest& request);

  // grpc.health.v1.Health/Check for `service` ("" is the whole server):
  // the serving status's name, e.g. "SERVING" or "NOT_SERVING".
  absl::StatusOr<std::string> Health(const std::string& service = "");

  const ClientOptions& options() const { return options_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  // A context with this client's deadline.
  std::unique_ptr<grpc::ClientContext> NewContext() const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::LayerService::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
};

}  // namespace layerserve::client

#endif  // LAYERSERVE_CLIENT_CLIENT_H_
