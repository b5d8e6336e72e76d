#include "server/service.h"

#include <chrono>
#include <cstdio>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "lib/cancel.h"
#include "lib/compare.h"
#include "lib/gradcheck.h"
#include "lib/limits.h"
#include "lib/registry.h"
#include "lib/status_macros.h"
#include "lib/threading.h"
#include "proto/convert.h"

namespace layerserve::server {
namespace {

using Clock = std::chrono::steady_clock;

// The validated parts every layer call has. `inputs` is filled only once
// the call is admitted: a call waiting in the queue holds no copies.
struct LayerCall {
  LayerSpec spec;
  DescMap descs;
  TensorDesc out;
  TensorMap inputs;
};

// Layer spec and input descs from the request, checked in the order a user
// would fix them: the layer, then each tensor on its own, then the set of
// inputs against the layer and the cost limits. Nothing is copied.
absl::StatusOr<LayerCall> PrepareLayerCall(const v1::LayerSpec& layer,
                                           const ProtoTensorMap& inputs,
                                           CallKind kind,
                                           const ServiceOptions& options) {
  LayerCall call;
  LS_ASSIGN_OR_RETURN(call.spec, LayerSpecFromProto(layer));
  LS_ASSIGN_OR_RETURN(call.descs, TensorDescMapFromProto(inputs, "inputs"));
  LS_RETURN_IF_ERROR(
      CheckCallLimits(call.spec, call.descs, kind, options.limits));
  LS_ASSIGN_OR_RETURN(call.out, InferOutput(call.spec, call.descs));
  return call;
}

// An optional tensor field (dout): validated and size-checked from its
// desc; copied by the caller once admitted.
absl::Status CheckOptionalTensor(bool present, const v1::Tensor& proto,
                                 absl::string_view field,
                                 const ServiceOptions& options) {
  if (!present) return absl::OkStatus();
  LS_ASSIGN_OR_RETURN(TensorDesc desc, TensorDescFromProto(proto, field));
  return CheckTensorElements(desc, field, options.limits.max_tensor_elements,
                             options.limits.max_tensor_elements_name);
}

absl::StatusOr<Tensor> OptionalTensor(bool present, const v1::Tensor& proto,
                                      absl::string_view field) {
  if (!present) return Tensor();
  return TensorFromProto(proto, field);
}

// Saturating: with limits raised far enough, a byte count may not fit.
int64_t Bytes(const TensorDesc& desc) {
  int64_t bytes = 0;
  if (__builtin_mul_overflow(NumElements(desc.shape),
                             static_cast<int64_t>(ItemSize(desc.dtype)),
                             &bytes)) {
    return std::numeric_limits<int64_t>::max();
  }
  return bytes;
}

int64_t AddBytes(int64_t a, int64_t b) {
  int64_t sum = 0;
  return __builtin_add_overflow(a, b, &sum)
             ? std::numeric_limits<int64_t>::max()
             : sum;
}

// Refuses a call whose response could not be sent, before computing it.
absl::Status CheckResponseBytes(int64_t bytes, absl::string_view what,
                                const ServiceOptions& options) {
  if (options.max_response_bytes <= 0 || bytes <= options.max_response_bytes) {
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "the response would carry ", bytes, " bytes of ", what,
      ", more than the message limit of ", options.max_response_bytes,
      " bytes (", options.max_response_bytes_name, ")"));
}

// Stops lib loops once the client has gone away or the deadline passed.
// The deadline is compared on every check (a clock read); IsCancelled() is
// asked at most every kPollInterval, because on the sync server it polls
// the call's completion queue, a system call, and the naive loops check
// every microsecond or so.
std::function<absl::Status()> CancelCheck(grpc::ServerContext* context) {
  constexpr auto kPollInterval = std::chrono::milliseconds(20);
  const std::chrono::system_clock::time_point deadline = context->deadline();
  auto next_poll = std::make_shared<Clock::time_point>(Clock::now());
  return [context, deadline, next_poll, kPollInterval]() -> absl::Status {
    if (std::chrono::system_clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          "the call's deadline passed before the computation finished");
    }
    const Clock::time_point now = Clock::now();
    if (now < *next_poll) return absl::OkStatus();
    *next_poll = now + kPollInterval;
    if (context->IsCancelled()) {
      return absl::CancelledError("the call was cancelled");
    }
    return absl::OkStatus();
  };
}

// Runs fn() as one computation: on this call's share of the cores,
// cancellable, timed into *compute_ns. The caller holds an admission slot.
template <typename Fn>
auto Compute(const std::function<absl::Status()>& cancelled,
             int64_t* compute_ns, Fn&& fn) {
  ComputeSlot slot;
  CancellationScope scope(cancelled);
  const Clock::time_point start = Clock::now();
  auto result = fn();
  *compute_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start)
          .count();
  return result;
}

// Constant-time comparison: how long it takes must not tell an attacker
// how much of a guessed token was right. Only the length leaks.
bool SameToken(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

// Exceptions must not escape into gRPC: lib reports errors as statuses,
// but an allocation deep in a library can still throw.
template <typename Fn>
absl::Status Guarded(Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory during the call");
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("unexpected exception: ", e.what()));
  }
}

// One log line per call, written when the call ends:
//   call=Forward layer=conv impl=FAST ran=im2col+openblas dtype=FLOAT64
//   shapes=b(3,),w(3, 3, 4, 4),x(2, 3, 4, 4) status=OK latency_ms=0.41
class CallLog {
 public:
  CallLog(const ServiceOptions& options, absl::string_view method)
      : enabled_(options.log_calls), method_(method), start_(Clock::now()) {}

  void Describe(const v1::LayerSpec& layer, absl::string_view impl,
                const ProtoTensorMap& inputs, const v1::Tensor* dout) {
    if (!enabled_) return;
    layer_ = layer.name().empty() ? "-" : layer.name();
    impl_ = std::string(impl);
    std::set<std::string> dtypes;
    std::vector<std::string> shapes;
    auto add = [&](absl::string_view name, const v1::Tensor& t) {
      dtypes.insert(ProtoDTypeName(t.dtype()));
      shapes.push_back(absl::StrCat(
          name, ShapeString(Shape(t.shape().begin(), t.shape().end()))));
    };
    // Sorted by name: a protobuf map's iteration order is unspecified.
    std::map<std::string, const v1::Tensor*> sorted;
    for (const auto& [name, t] : inputs) sorted.emplace(name, &t);
    for (const auto& [name, t] : sorted) add(name, *t);
    if (dout != nullptr) add("dout", *dout);
    dtype_ = dtypes.empty() ? "-" : absl::StrJoin(dtypes, "+");
    shapes_ = shapes.empty() ? "-" : absl::StrJoin(shapes, ",");
  }

  void set_ran(absl::string_view impl_name) { ran_ = std::string(impl_name); }
  void set_queued(absl::Duration waited) { queued_ = waited; }

  // Logs the call and maps its status to gRPC's.
  grpc::Status Finish(const absl::Status& status) {
    if (enabled_) {
      const double ms =
          std::chrono::duration<double, std::milli>(Clock::now() - start_)
              .count();
      std::string line = absl::StrFormat(
          "call=%s layer=%s impl=%s ran=%s dtype=%s shapes=%s status=%s "
          "latency_ms=%.3f queued_ms=%.3f",
          method_, layer_, impl_, ran_.empty() ? "-" : ran_, dtype_, shapes_,
          absl::StatusCodeToString(status.code()), ms,
          absl::ToDoubleMilliseconds(queued_));
      if (!status.ok()) {
        absl::string_view message = status.message();
        constexpr size_t kMaxMessage = 300;
        absl::StrAppend(&line, " error=\"", message.substr(0, kMaxMessage),
                        message.size() > kMaxMessage ? "..." : "", "\"");
      }
      line.push_back('\n');
      // One fwrite per line: stdio locks the stream per call, so lines
      // from concurrent calls do not interleave.
      std::fwrite(line.data(), 1, line.size(), stderr);
    }
    return ToGrpcStatus(status);
  }

 private:
  const bool enabled_;
  const std::string method_;
  const Clock::time_point start_;
  std::string layer_ = "-", impl_ = "-", ran_, dtype_ = "-", shapes_ = "-";
  absl::Duration queued_ = absl::ZeroDuration();
};

// The number of cores, the default of --max_concurrent.
int Cores() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

std::string ImplLabel(int impl) {
  if (v1::Implementation_IsValid(impl)) {
    return v1::Implementation_Name(static_cast<v1::Implementation>(impl));
  }
  return absl::StrCat(impl);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

LayerServiceImpl::LayerServiceImpl(ServiceOptions options)
    : options_(std::move(options)),
      admission_(
          options_.max_concurrent > 0 ? options_.max_concurrent : Cores(),
          options_.max_queue) {}

absl::Status LayerServiceImpl::CheckAuth(
    const grpc::ServerContext* context) const {
  if (options_.auth_token.empty()) return absl::OkStatus();
  constexpr absl::string_view kScheme = "Bearer ";
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "this server requires a bearer token: send the metadata "
        "'authorization: Bearer <token>'");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (value.substr(0, kScheme.size()) != kScheme ||
      !SameToken(value.substr(kScheme.size()), options_.auth_token)) {
    return absl::UnauthenticatedError(
        "the bearer token in 'authorization' is not valid");
  }
  return absl::OkStatus();
}

grpc::Status LayerServiceImpl::ListLayers(grpc::ServerContext* context,
                                          const v1::ListLayersRequest*,
                                          v1::ListLayersResponse* response) {
  CallLog log(options_, "ListLayers");
  if (absl::Status auth = CheckAuth(context); !auth.ok()) {
    return log.Finish(auth);
  }
  for (const LayerDef* def : AllLayers()) {
    LayerInfoToProto(*def, response->add_layers());
  }
  return log.Finish(absl::OkStatus());
}

grpc::Status LayerServiceImpl::Forward(grpc::ServerContext* context,
                                       const v1::ForwardRequest* request,
                                       v1::ForwardResponse* response) {
  CallLog log(options_, "Forward");
  log.Describe(request->layer(), ImplLabel(request->implementation()),
               request->inputs(), nullptr);
  absl::Status status = CheckAuth(context);
  if (status.ok()) {
    absl::Duration queued = absl::ZeroDuration();
    status = Guarded(
        [&] { return DoForward(context, *request, response, &queued); });
    log.set_queued(queued);
  }
  if (status.ok()) log.set_ran(response->implementation_name());
  return log.Finish(status);
}

grpc::Status LayerServiceImpl::Backward(grpc::ServerContext* context,
                                        const v1::BackwardRequest* request,
                                        v1::BackwardResponse* response) {
  CallLog log(options_, "Backward");
  log.Describe(request->layer(), ImplLabel(request->implementation()),
               request->inputs(),
               request->has_dout() ? &request->dout() : nullptr);
  absl::Status status = CheckAuth(context);
  if (status.ok()) {
    absl::Duration queued = absl::ZeroDuration();
    status = Guarded(
        [&] { return DoBackward(context, *request, response, &queued); });
    log.set_queued(queued);
  }
  if (status.ok()) log.set_ran(response->implementation_name());
  return log.Finish(status);
}

grpc::Status LayerServiceImpl::GradCheck(grpc::ServerContext* context,
                                         const v1::GradCheckRequest* request,
                                         v1::GradCheckResponse* response) {
  CallLog log(options_, "GradCheck");
  log.Describe(request->layer(), ImplLabel(request->implementation()),
               request->inputs(),
               request->has_dout() ? &request->dout() : nullptr);
  absl::Status status = CheckAuth(context);
  if (status.ok()) {
    absl::Duration queued = absl::ZeroDuration();
    status = Guarded(
        [&] { return DoGradCheck(context, *request, response, &queued); });
    log.set_queued(queued);
  }
  if (status.ok()) log.set_ran(response->implementation_name());
  return log.Finish(status);
}

grpc::Status LayerServiceImpl::Compare(grpc::ServerContext* context,
                                       const v1::CompareRequest* request,
                                       v1::CompareResponse* response) {
  CallLog log(options_, "Compare");
  log.Describe(request->layer(), "NAIVE+FAST", request->inputs(),
               request->has_dout() ? &request->dout() : nullptr);
  absl::Status status = CheckAuth(context);
  if (status.ok()) {
    absl::Duration queued = absl::ZeroDuration();
    status = Guarded(
        [&] { return DoCompare(context, *request, response, &queued); });
    log.set_queued(queued);
  }
  if (status.ok()) log.set_ran(response->fast_implementation_name());
  return log.Finish(status);
}

absl::StatusOr<AdmissionControl::Ticket> LayerServiceImpl::Admit(
    const std::function<absl::Status()>& cancelled, absl::Duration* queued) {
  LS_ASSIGN_OR_RETURN(AdmissionControl::Ticket ticket,
                      admission_.Admit(cancelled));
  *queued = ticket.waited();
  return ticket;
}

absl::Status LayerServiceImpl::DoForward(grpc::ServerContext* context,
                                         const v1::ForwardRequest& request,
                                         v1::ForwardResponse* response,
                                         absl::Duration* queued) {
  LS_ASSIGN_OR_RETURN(Impl impl, ImplFromProto(request.implementation()));
  LS_ASSIGN_OR_RETURN(LayerCall call,
                      PrepareLayerCall(request.layer(), request.inputs(),
                                       CallKind::kForward, options_));
  LS_RETURN_IF_ERROR(CheckResponseBytes(Bytes(call.out), "output", options_));
  const std::function<absl::Status()> cancelled = CancelCheck(context);
  LS_ASSIGN_OR_RETURN(AdmissionControl::Ticket ticket,
                      Admit(cancelled, queued));
  LS_ASSIGN_OR_RETURN(call.inputs,
                      TensorMapFromProto(request.inputs(), "inputs"));
  int64_t compute_ns = 0;
  absl::StatusOr<ForwardResult> result = Compute(cancelled, &compute_ns, [&] {
    return layerserve::Forward(call.spec, impl, call.inputs);
  });
  if (!result.ok()) return result.status();
  TensorMapToProto(result->outputs, response->mutable_outputs());
  response->set_implementation_name(result->impl_name);
  response->set_compute_ns(compute_ns);
  return absl::OkStatus();
}

absl::Status LayerServiceImpl::DoBackward(grpc::ServerContext* context,
                                          const v1::BackwardRequest& request,
                                          v1::BackwardResponse* response,
                                          absl::Duration* queued) {
  LS_ASSIGN_OR_RETURN(Impl impl, ImplFromProto(request.implementation()));
  LS_ASSIGN_OR_RETURN(LayerCall call,
                      PrepareLayerCall(request.layer(), request.inputs(),
                                       CallKind::kBackward, options_));
  LS_RETURN_IF_ERROR(CheckOptionalTensor(request.has_dout(), request.dout(),
                                         "dout", options_));
  int64_t grad_bytes = 0;
  for (const auto& [name, desc] : call.descs) {
    grad_bytes = AddBytes(grad_bytes, Bytes(desc));
  }
  LS_RETURN_IF_ERROR(CheckResponseBytes(grad_bytes, "gradients", options_));
  const std::function<absl::Status()> cancelled = CancelCheck(context);
  LS_ASSIGN_OR_RETURN(AdmissionControl::Ticket ticket,
                      Admit(cancelled, queued));
  LS_ASSIGN_OR_RETURN(call.inputs,
                      TensorMapFromProto(request.inputs(), "inputs"));
  LS_ASSIGN_OR_RETURN(
      Tensor dout, OptionalTensor(request.has_dout(), request.dout(), "dout"));
  int64_t compute_ns = 0;
  absl::StatusOr<BackwardResult> result = Compute(cancelled, &compute_ns, [&] {
    return layerserve::Backward(call.spec, impl, call.inputs, dout);
  });
  if (!result.ok()) return result.status();
  TensorMapToProto(result->grads, response->mutable_grads());
  response->set_implementation_name(result->impl_name);
  response->set_compute_ns(compute_ns);
  return absl::OkStatus();
}

absl::Status LayerServiceImpl::DoGradCheck(grpc::ServerContext* context,
                                           const v1::GradCheckRequest& request,
                                           v1::GradCheckResponse* response,
                                           absl::Duration* queued) {
  LS_ASSIGN_OR_RETURN(Impl impl, ImplFromProto(request.implementation()));
  LS_ASSIGN_OR_RETURN(LayerCall call,
                      PrepareLayerCall(request.layer(), request.inputs(),
                                       CallKind::kGradCheck, options_));
  LS_RETURN_IF_ERROR(CheckOptionalTensor(request.has_dout(), request.dout(),
                                         "dout", options_));
  if (request.num_checks() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_checks: must be >= 0 (0 checks every element), got ",
                     request.num_checks()));
  }
  LS_RETURN_IF_ERROR(CheckGradCheckCost(call.spec, call.descs,
                                        request.num_checks(), options_.limits));
  if (request.return_gradients()) {
    int64_t grad_bytes = 0;
    for (const auto& [name, desc] : call.descs) {
      grad_bytes = AddBytes(grad_bytes, AddBytes(Bytes(desc), Bytes(desc)));
    }
    LS_RETURN_IF_ERROR(CheckResponseBytes(
        grad_bytes, "numeric and analytic gradients", options_));
  }
  const std::function<absl::Status()> cancelled = CancelCheck(context);
  LS_ASSIGN_OR_RETURN(AdmissionControl::Ticket ticket,
                      Admit(cancelled, queued));
  LS_ASSIGN_OR_RETURN(call.inputs,
                      TensorMapFromProto(request.inputs(), "inputs"));
  LS_ASSIGN_OR_RETURN(
      Tensor dout, OptionalTensor(request.has_dout(), request.dout(), "dout"));
  GradCheckOptions gc;
  gc.h = request.h() == 0 ? kDefaultGradCheckStep : request.h();
  gc.dout = request.has_dout() ? &dout : nullptr;
  gc.seed = request.seed();
  gc.return_gradients = request.return_gradients();
  gc.num_checks = request.num_checks();
  int64_t compute_ns = 0;
  absl::StatusOr<GradCheckReport> report = Compute(cancelled, &compute_ns, [&] {
    return layerserve::GradCheck(call.spec, impl, call.inputs, gc);
  });
  if (!report.ok()) return report.status();
  for (const GradCheckResult& r : report->results) {
    v1::GradCheckResult* out = response->add_results();
    out->set_input(r.input);
    out->set_rel_error(r.rel_error);
    out->set_max_abs_error(r.max_abs_error);
    for (int64_t i : r.worst_index) out->add_worst_index(i);
    for (int64_t i : r.checked_indices) out->add_checked_indices(i);
    if (request.return_gradients()) {
      TensorToProto(r.numeric, out->mutable_numeric());
      TensorToProto(r.analytic, out->mutable_analytic());
    }
  }
  response->set_implementation_name(report->impl_name);
  response->set_compute_ns(compute_ns);
  return absl::OkStatus();
}

absl::Status LayerServiceImpl::DoCompare(grpc::ServerContext* context,
                                         const v1::CompareRequest& request,
                                         v1::CompareResponse* response,
                                         absl::Duration* queued) {
  LS_ASSIGN_OR_RETURN(LayerCall call,
                      PrepareLayerCall(request.layer(), request.inputs(),
                                       CallKind::kCompare, options_));
  LS_RETURN_IF_ERROR(CheckOptionalTensor(request.has_dout(), request.dout(),
                                         "dout", options_));
  // Checked here as well as in lib: a bad count must not wait for a slot.
  if (request.repeats() < 0 || request.repeats() > kMaxCompareRepeats) {
    return absl::InvalidArgumentError(
        absl::StrCat("repeats: must be 0..", kMaxCompareRepeats,
                     " (0 means 1), got ", request.repeats()));
  }
  const std::function<absl::Status()> cancelled = CancelCheck(context);
  LS_ASSIGN_OR_RETURN(AdmissionControl::Ticket ticket,
                      Admit(cancelled, queued));
  LS_ASSIGN_OR_RETURN(call.inputs,
                      TensorMapFromProto(request.inputs(), "inputs"));
  LS_ASSIGN_OR_RETURN(
      Tensor dout, OptionalTensor(request.has_dout(), request.dout(), "dout"));
  CompareOptions co;
  co.dout = request.has_dout() ? &dout : nullptr;
  co.seed = request.seed();
  co.repeats = request.repeats();
  int64_t compute_ns = 0;
  absl::StatusOr<CompareReport> report = Compute(cancelled, &compute_ns, [&] {
    return layerserve::Compare(call.spec, call.inputs, co);
  });
  if (!report.ok()) return report.status();
  response->set_naive_implementation_name(report->naive_impl_name);
  response->set_fast_implementation_name(report->fast_impl_name);
  response->set_repeats(report->repeats);
  response->set_naive_forward_seconds(report->naive_forward_seconds);
  response->set_fast_forward_seconds(report->fast_forward_seconds);
  response->set_forward_speedup(report->forward_speedup);
  response->set_naive_backward_seconds(report->naive_backward_seconds);
  response->set_fast_backward_seconds(report->fast_backward_seconds);
  response->set_backward_speedup(report->backward_speedup);
  response->set_output_rel_error(report->output_rel_error);
  for (const auto& [name, e] : report->grad_rel_errors) {
    (*response->mutable_grad_rel_errors())[name] = e;
  }
  response->set_output_scaled_error(report->output_scaled_error);
  for (const auto& [name, e] : report->grad_scaled_errors) {
    (*response->mutable_grad_scaled_errors())[name] = e;
  }
  return absl::OkStatus();
}

}  // namespace layerserve::server
