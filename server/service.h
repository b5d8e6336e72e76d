// LayerServiceImpl: the handlers of layerserve.v1.LayerService.
//
// Each handler only translates: the request becomes a validated lib layer
// spec and tensors (proto/convert.h), size limits are checked from the
// shapes before anything is allocated (lib/limits.h), one lib call does the
// work (registry Forward/Backward, GradCheck, Compare) under a ComputeSlot
// (so concurrent calls share the cores) and a CancellationScope (so a
// cancelled call or one past its deadline stops), and the result goes back
// as proto. absl::Status becomes grpc::Status in one place, at the end of
// each handler, which also writes the call's log line.
//
// Thread-safety: the handlers may run concurrently (gRPC's sync server calls
// them from its thread pool); the service holds no mutable state.
#ifndef LAYERSERVE_SERVER_SERVICE_H_
#define LAYERSERVE_SERVER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "layerserve/v1/layer_service.grpc.pb.h"

namespace layerserve::server {

struct ServiceOptions {
  // The most elements any one tensor of a call may have: each input, dout,
  // the output and intermediates.
  int64_t max_tensor_elements = int64_t{64} << 20;
  // The knob that sets it, named in RESOURCE_EXHAUSTED messages.
  std::string max_tensor_elements_name = "--max_tensor_elements";
  // The largest response the server will send; a call whose results would
  // not fit is refused before it computes. 0: no check.
  int64_t max_response_bytes = 0;
  std::string max_response_bytes_name = "--max_message_bytes";
  // One line per call on stderr.
  bool log_calls = true;
};

// absl::Status -> grpc::Status with the same code and message (the two code
// enums are numerically equal).
grpc::Status ToGrpcStatus(const absl::Status& status);

class LayerServiceImpl final : public v1::LayerService::Service {
 public:
  explicit LayerServiceImpl(ServiceOptions options);

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
                         v1::ForwardResponse* response);
  absl::Status DoBackward(grpc::ServerContext* context,
                          const v1::BackwardRequest& request,
                          v1::BackwardResponse* response);
  absl::Status DoGradCheck(grpc::ServerContext* context,
                           const v1::GradCheckRequest& request,
                           v1::GradCheckResponse* response);
  absl::Status DoCompare(grpc::ServerContext* context,
                         const v1::CompareRequest& request,
                         v1::CompareResponse* response);

  const ServiceOptions options_;
};

}  // namespace layerserve::server

#endif  // LAYERSERVE_SERVER_SERVICE_H_
