// Helpers of the hardening tests: the real server binary with flags, clients
// to it, the seed's conv forward as the "still answers correctly" probe, and
// raw unary calls that send bytes no stub would.
#ifndef LAYERSERVE_TESTS_HARDENING_HARDENING_UTIL_H_
#define LAYERSERVE_TESTS_HARDENING_HARDENING_UTIL_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "layerserve/v1/layer_service.pb.h"
#include "lib/registry.h"
#include "tests/lib/seed_data.h"
#include "tests/service/server_process.h"
#include "tests/service/test_util.h"

namespace layerserve::testing {

// The server binary on an ephemeral loopback port, with `flags` (plus
// --threads=1 under TSan: see kThreadSanitizer). Fails the test when it does
// not come up.
inline std::unique_ptr<ServerProcess> StartServer(
    std::vector<std::string> flags, int* port) {
  flags.insert(flags.begin(), "--address=127.0.0.1:0");
  if (kThreadSanitizer) flags.push_back("--threads=1");
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start(LAYERSERVE_BINARY, flags);
  *port = server == nullptr ? 0 : server->WaitListening();
  return server;
}

inline client::ClientOptions OptionsFor(
    int port, absl::Duration timeout = absl::Seconds(120)) {
  client::ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.timeout = timeout;
  return o;
}

inline std::unique_ptr<client::LayerClient> ConnectTo(
    int port, absl::Duration timeout = absl::Seconds(120)) {
  return ValueOrDie(client::LayerClient::Connect(OptionsFor(port, timeout)));
}

// In [14]: the seed's conv forward, float64.
inline v1::ForwardRequest SeedConvForwardRequest(
    v1::Implementation impl = v1::FAST) {
  v1::ForwardRequest r;
  *r.mutable_layer() = ConvSpec("conv", 2, 1);
  r.set_implementation(impl);
  (*r.mutable_inputs())["x"] =
      ProtoOf(Linspace(DType::kFloat64, {2, 3, 4, 4}, -0.1, 0.5));
  (*r.mutable_inputs())["w"] =
      ProtoOf(Linspace(DType::kFloat64, {3, 3, 4, 4}, -0.2, 0.3));
  (*r.mutable_inputs())["b"] =
      ProtoOf(Linspace(DType::kFloat64, {3}, -0.1, 0.2));
  return r;
}

inline Tensor SeedConvCorrect() {
  Tensor t = ValueOrDie(Tensor::Zeros(DType::kFloat64, {2, 3, 2, 2}));
  const std::vector<double>& v = SeedConvCorrectOut();
  for (size_t i = 0; i < v.size(); ++i)
    t.SetFlat(static_cast<int64_t>(i), v[i]);
  return t;
}

// The server still answers, and correctly.
inline void ExpectSeedConvWorks(client::LayerClient& client) {
  absl::StatusOr<v1::ForwardResponse> r =
      client.Forward(SeedConvForwardRequest());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->outputs().count("out"), 1u);
  EXPECT_LE(
      ValueOrDie(RelError(TensorOf(r->outputs().at("out")), SeedConvCorrect())),
      kF64VectorTol);
}

// One unary call of `method` ("/package.Service/Method") with `bytes` as
// the serialized request, through gRPC's generic stub: what a client with
// a broken encoder, or no encoder at all, sends.
inline absl::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& method,
                                 const std::string& bytes,
                                 std::string* response = nullptr) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&context, method, request, &cq);
  call->StartCall();
  grpc::ByteBuffer reply;
  grpc::Status status;
  call->Finish(&reply, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || !ok) {
    return absl::InternalError("the completion queue failed");
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (status.ok() && response != nullptr) {
    std::vector<grpc::Slice> slices;
    (void)reply.Dump(&slices);
    response->clear();
    for (const grpc::Slice& s : slices) {
      response->append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  return client::FromGrpcStatus(status);
}

}  // namespace layerserve::testing

#endif  // LAYERSERVE_TESTS_HARDENING_HARDENING_UTIL_H_
