// The libFuzzer entry point over the LayerService: request decoding (a
// protobuf parse of the selected RPC's request type), validation, cost
// limits, admission and layer dispatch, by calling the service
// implementation directly (no network, no threads).
//
// Input: byte 0 selects the RPC (modulo 5: ListLayers, Forward, Backward,
// GradCheck, Compare); the rest is the serialized request. Inputs that do
// not parse are rejected early, as gRPC would.
//
// The service runs with small limits so that no input can keep it busy for
// long (a naive conv of the largest tensors allowed takes milliseconds), and
// Compare's repeats are capped at 2 here for the same reason. Besides the
// sanitizers, the harness checks the contract: an OK response carries
// well-formed tensors, and every status is one of the codes the service
// documents; a violation aborts (a crash for libFuzzer).
#include <google/protobuf/stubs/logging.h>
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "layerserve/v1/layer_service.pb.h"
#include "lib/compare.h"
#include "lib/threading.h"
#include "proto/convert.h"
#include "server/service.h"

namespace layerserve::fuzz {
namespace {

server::LayerServiceImpl& Service() {
  static server::LayerServiceImpl* const service = [] {
    // One intra-op thread: the fuzzer is single-threaded and should stay so.
    SetMaxThreads(1);
    // Invalid UTF-8 in a string field is an expected parse failure, not
    // worth a log line per input.
    google::protobuf::SetLogHandler(nullptr);
    server::ServiceOptions o;
    o.limits.max_tensor_elements = 2048;
    o.limits.max_request_elements = 16384;
    o.limits.max_gradcheck_macs = 2'000'000;
    o.max_response_bytes = 1 << 20;
    o.max_concurrent = 1;
    o.max_queue = 0;
    o.log_calls = false;
    return new server::LayerServiceImpl(o);
  }();
  return *service;
}

[[noreturn]] void Violation(const char* what, const std::string& detail) {
  std::fprintf(stderr, "contract violation: %s: %s\n", what, detail.c_str());
  std::abort();
}

// The codes a handler may answer with. LAYERSERVE_FUZZ_VERBOSE=1 prints
// each status (to see what a corpus reaches).
void CheckStatus(const grpc::Status& status) {
  static const bool verbose = std::getenv("LAYERSERVE_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "status %d %s\n",
                 static_cast<int>(status.error_code()),
                 status.error_message().substr(0, 200).c_str());
  }
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return;
    default:
      Violation("unexpected status code", status.error_message());
  }
}

void CheckTensor(const v1::Tensor& t, const char* what) {
  if (!TensorDescFromProto(t, what).ok()) {
    Violation("malformed tensor in an OK response", t.ShortDebugString());
  }
}

template <typename Request, typename Response, typename Method>
void Run(const uint8_t* data, size_t size, Method method,
         void (*check)(const Response&)) {
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  Response response;
  grpc::ServerContext context;
  const grpc::Status status =
      (Service().*method)(&context, &request, &response);
  CheckStatus(status);
  if (status.ok()) check(response);
}

void CheckListLayers(const v1::ListLayersResponse& r) {
  if (r.layers_size() == 0) Violation("ListLayers", "no layers");
}

void CheckForward(const v1::ForwardResponse& r) {
  if (r.outputs().empty()) Violation("Forward", "no outputs");
  for (const auto& [name, t] : r.outputs()) CheckTensor(t, "outputs");
}

void CheckBackward(const v1::BackwardResponse& r) {
  for (const auto& [name, t] : r.grads()) CheckTensor(t, "grads");
}

void CheckGradCheck(const v1::GradCheckResponse& r) {
  for (const v1::GradCheckResult& res : r.results()) {
    if (res.has_numeric()) CheckTensor(res.numeric(), "numeric");
    if (res.has_analytic()) CheckTensor(res.analytic(), "analytic");
    for (int i = 1; i < res.checked_indices_size(); ++i) {
      if (res.checked_indices(i) <= res.checked_indices(i - 1)) {
        Violation("GradCheck", "checked_indices not strictly ascending");
      }
    }
  }
}

void CheckCompare(const v1::CompareResponse& r) {
  if (r.repeats() < 1 || r.repeats() > kMaxCompareRepeats) {
    Violation("Compare", "repeats out of range");
  }
}

}  // namespace
}  // namespace layerserve::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace layerserve;        // NOLINT
  using namespace layerserve::fuzz;  // NOLINT
  using Impl = server::LayerServiceImpl;
  Service();  // set up (and silence protobuf's log) before the first parse
  if (size < 1) return 0;
  const uint8_t selector = data[0] % 5;
  ++data;
  --size;
  switch (selector) {
    case 0:
      Run<v1::ListLayersRequest, v1::ListLayersResponse>(
          data, size, &Impl::ListLayers, &CheckListLayers);
      break;
    case 1:
      Run<v1::ForwardRequest, v1::ForwardResponse>(data, size, &Impl::Forward,
                                                   &CheckForward);
      break;
    case 2:
      Run<v1::BackwardRequest, v1::BackwardResponse>(
          data, size, &Impl::Backward, &CheckBackward);
      break;
    case 3:
      Run<v1::GradCheckRequest, v1::GradCheckResponse>(
          data, size, &Impl::GradCheck, &CheckGradCheck);
      break;
    default: {
      v1::CompareRequest request;
      if (!request.ParseFromArray(data, static_cast<int>(size))) break;
      // Up to 100 timed repeats of each pass is a legitimate request, but
      // not one a fuzzer can afford millions of.
      if (request.repeats() > 2 && request.repeats() <= kMaxCompareRepeats) {
        request.set_repeats(2);
      }
      v1::CompareResponse response;
      grpc::ServerContext context;
      const grpc::Status status =
          Service().Compare(&context, &request, &response);
      CheckStatus(status);
      if (status.ok()) CheckCompare(response);
      break;
    }
  }
  return 0;
}
