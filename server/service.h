// LayerServiceImpl: the handlers of layerserve.v1.LayerService.
//
// Each handler only translates: the caller's bearer token is checked (when
// the server has one), the request becomes a validated lib layer spec and
// tensor descs (proto/convert.h), cost limits are checked from the shapes
// before anything is allocated (lib/limits.h), the call waits for an
// admission slot (server/admission.h), then its tensors are copied and one
// lib call does the work (registry Forward/Backward, GradCheck, Compare)
// under a ComputeSlot (so concurrent calls share the cores) and a
// CancellationScope (so a cancelled call or one past its deadline stops),
// and the result goes back as proto. absl::Status becomes grpc::Status in
// one place, at the end of each handler, which also writes the call's log
// line.
//
// Thread-safety: the handlers may run concurrently (gRPC's sync server calls
// them from its thread pool); the only mutable state is the admission
// control, which is thread-safe.
#ifndef LAYERSERVE_SERVER_SERVICE_H_
#define LAYERSERVE_SERVER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "layerserve/v1/layer_service.grpc.pb.h"
#include "lib/limits.h"
#include "server/admission.h"

namespace layerserve::server {

struct ServiceOptions {
  // Elements per tensor and per call, and the cost of a gradient check,
  // with the flags that raise them (named in RESOURCE_EXHAUSTED messages).
  CallLimits limits;
  // The largest response the server will send; a call whose results would
  // not fit is refused before it computes. 0: no check.
  int64_t max_response_bytes = 0;
  std::string max_response_bytes_name = "--max_message_bytes";
  // Computations at once (0: the number of cores) and callers waiting for
  // one; beyond both, RESOURCE_EXHAUSTED at once.
  int max_concurrent = 0;
  int max_queue = 64;
  // Non-empty: every LayerService call must carry the metadata
  // "authorization: Bearer <auth_token>" (else UNAUTHENTICATED). The health
  // and reflection services stay open.
  std::string auth_token;
  // One line per call on stderr.
  bool log_calls = true;
};

// absl::Status -> grpc::Status with the same code and message (the two code
// enums are numerically equal).
grpc::Status ToGrpcStatus(const absl::Status& status);

class LayerServiceImpl final : public v1::LayerService::Service {
 public:
  explicit LayerServiceImpl(ServiceOptions options);

  const ServiceOptions& options() const { return options_; }
  const AdmissionControl& admission() const { return admission_; }

  grpc::Status ListLayers(grpc::ServerContext* context,
                          const v1::ListLayersRequest* request,
                          v1::ListLayersResponse* response) override;
  grpc::Status Forward(grpc::ServerContext* context,
                       const v1::ForwardRequest* request,
                       v1::ForwardResponse* response) override;
  grpc::Status Backward(grpc::ServerContext* context,
                        const v1::BackwardRequest* request,
                        v1::BackwardResponse* response) override;
  grpc::Status GradCheck(grpc::ServerContext* context,
                         const v1::GradCheckRequest* request,
                         v1::GradCheckResponse* response) override;
  grpc::Status Compare(grpc::ServerContext* context,
                       const v1::CompareRequest* request,
                       v1::CompareResponse* response) override;

 private:
  absl::Status DoForward(grpc::ServerContext* context,
                         const v1::ForwardRequest& request,
                         v1::ForwardResponse* response, absl::Duration* queued);
  absl::Status DoBackward(grpc::ServerContext* context,
                          const v1::BackwardRequest& request,
                          v1::BackwardResponse* response,
                          absl::Duration* queued);
  absl::Status DoGradCheck(grpc::ServerContext* context,
                           const v1::GradCheckRequest& request,
                           v1::GradCheckResponse* response,
                           absl::Duration* queued);
  absl::Status DoCompare(grpc::ServerContext* context,
                         const v1::CompareRequest& request,
                         v1::CompareResponse* response, absl::Duration* queued);

  // An admission slot; *queued is how long the call waited for it.
  absl::StatusOr<AdmissionControl::Ticket> Admit(
      const std::function<absl::Status()>& cancelled, absl::Duration* queued);
  // OK when the server has no token or the call carries it.
  absl::Status CheckAuth(const grpc::ServerContext* context) const;

  const ServiceOptions options_;
  AdmissionControl admission_;
};

}  // namespace layerserve::server

#endif  // LAYERSERVE_SERVER_SERVICE_H_
