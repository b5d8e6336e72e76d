// End to end: the real `layerserve` binary on an ephemeral port, called
// through the client library over TCP. Health and reflection answered,
// tensors of tens of MB both ways, SIGTERM with a call in flight, a second
// server on a taken port, a server that is down.
#include <google/protobuf/descriptor.pb.h>
#include <signal.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "lib/registry.h"
#include "tests/service/server_process.h"
#include "tests/service/test_util.h"

namespace layerserve::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

// Under TSan the server runs one intra-op thread (see kThreadSanitizer).
std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> flags) {
  if (kThreadSanitizer) flags.push_back("--threads=1");
  return ServerProcess::Start(LAYERSERVE_BINARY, flags);
}

std::unique_ptr<client::LayerClient> ConnectTo(
    int port, absl::Duration timeout = absl::Seconds(120)) {
  client::ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.timeout = timeout;
  return ValueOrDie(client::LayerClient::Connect(o));
}

// A client on a connection of its own: gRPC otherwise shares one
// connection (and its reconnect backoff) among equal channels, and "a new
// client" would not be new.
std::unique_ptr<client::LayerClient> ConnectFresh(int port,
                                                  absl::Duration timeout) {
  client::ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.timeout = timeout;
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return std::make_unique<client::LayerClient>(
      grpc::CreateCustomChannel(o.target, grpc::InsecureChannelCredentials(),
                                args),
      o);
}

class EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = StartServer({"--address=127.0.0.1:0"});
    ASSERT_NE(server_, nullptr);
    port_ = server_->WaitListening();
    ASSERT_GT(port_, 0);
    client_ = ConnectTo(port_);
  }

  std::unique_ptr<ServerProcess> server_;
  int port_ = 0;
  std::unique_ptr<client::LayerClient> client_;
};

TEST_F(EndToEndTest, HealthIsServing) {
  EXPECT_EQ(client_->Health().value_or("error"), "SERVING");
  EXPECT_EQ(client_->Health("layerserve.v1.LayerService").value_or("error"),
            "SERVING");
  EXPECT_EQ(client_->Health("no.such.Service").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(EndToEndTest, ReflectionListsAndDescribesTheService) {
  using grpc::reflection::v1alpha::ServerReflection;
  using grpc::reflection::v1alpha::ServerReflectionRequest;
  using grpc::reflection::v1alpha::ServerReflectionResponse;
  std::unique_ptr<ServerReflection::Stub> stub =
      ServerReflection::NewStub(client_->channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  auto stream = stub->ServerReflectionInfo(&context);

  ServerReflectionRequest list;
  list.set_list_services("");
  ASSERT_TRUE(stream->Write(list));
  ServerReflectionResponse listed;
  ASSERT_TRUE(stream->Read(&listed));
  std::vector<std::string> services;
  for (const auto& s : listed.list_services_response().service()) {
    services.push_back(s.name());
  }
  EXPECT_THAT(services, Contains("layerserve.v1.LayerService"));
  EXPECT_THAT(services, Contains("grpc.health.v1.Health"));

  // What grpcurl does next: fetch the file that defines the service.
  ServerReflectionRequest file;
  file.set_file_containing_symbol("layerserve.v1.LayerService");
  ASSERT_TRUE(stream->Write(file));
  ServerReflectionResponse described;
  ASSERT_TRUE(stream->Read(&described));
  ASSERT_GE(described.file_descriptor_response().file_descriptor_proto_size(),
            1)
      << described.DebugString();
  google::protobuf::FileDescriptorProto fd;
  ASSERT_TRUE(fd.ParseFromString(
      described.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(fd.name(), "layerserve/v1/layer_service.proto");
  EXPECT_EQ(fd.package(), "layerserve.v1");
  ASSERT_EQ(fd.service_size(), 1);
  std::vector<std::string> methods;
  for (const auto& m : fd.service(0).method()) methods.push_back(m.name());
  EXPECT_THAT(methods,
              ::testing::ElementsAre("ListLayers", "Forward", "Backward",
                                     "GradCheck", "Compare"));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(EndToEndTest, TensorsOfTensOfMegabytes) {
  // 32 MB in, 8 MB out: far past gRPC's 4 MiB default.
  v1::ForwardRequest pool;
  *pool.mutable_layer() = PoolSpec(2, 2, 2);
  TensorMap in;
  in.emplace("x", Randn(DType::kFloat64, {4, 16, 256, 256}, 1));
  PutInputs(in, pool.mutable_inputs());
  ASSERT_GE(pool.ByteSizeLong(), 10u << 20);
  absl::StatusOr<v1::ForwardResponse> r = client_->Forward(pool);
  ASSERT_TRUE(r.ok()) << r.status();
  LayerSpec spec = ValueOrDie(LayerSpecFromProto(pool.layer()));
  ForwardResult want = ValueOrDie(Forward(spec, Impl::kNaive, in));
  // Max pooling selects, it does not round: exact.
  EXPECT_EQ(ValueOrDie(MaxAbsError(TensorOf(r->outputs().at("out")),
                                   want.outputs.at("out"))),
            0.0);

  // 32 MB in (x and dout), 16 MB back.
  v1::BackwardRequest relu;
  relu.mutable_layer()->set_name("relu");
  TensorMap rin;
  rin.emplace("x", Randn(DType::kFloat64, {2, 16, 256, 256}, 2));
  const Tensor dout = Randn(DType::kFloat64, {2, 16, 256, 256}, 3);
  PutInputs(rin, relu.mutable_inputs());
  *relu.mutable_dout() = ProtoOf(dout);
  absl::StatusOr<v1::BackwardResponse> g = client_->Backward(relu);
  ASSERT_TRUE(g.ok()) << g.status();
  LayerSpec relu_spec;
  relu_spec.name = "relu";
  BackwardResult gwant =
      ValueOrDie(Backward(relu_spec, Impl::kNaive, rin, dout));
  EXPECT_EQ(ValueOrDie(MaxAbsError(TensorOf(g->grads().at("dx")),
                                   gwant.grads.at("dx"))),
            0.0);
  EXPECT_THAT(server_->Stderr(),
              HasSubstr("call=Backward layer=relu impl=IMPLEMENTATION_"
                        "UNSPECIFIED"));
}

TEST(EndToEndShutdownTest, SigtermFinishesTheCallInFlightRefusesNewOnes) {
  // A long grace period: the in-flight call must finish, even on a slow
  // (sanitizer) build.
  std::unique_ptr<ServerProcess> server =
      StartServer({"--address=127.0.0.1:0", "--shutdown_grace=120s"});
  ASSERT_NE(server, nullptr);
  const int port = server->WaitListening();
  ASSERT_GT(port, 0);
  std::unique_ptr<client::LayerClient> client = ConnectTo(port);
  // A naive gradient check of a few seconds.
  v1::GradCheckRequest req;
  *req.mutable_layer() = ConvSpec("conv", 1, 1);
  req.set_implementation(v1::NAIVE);
  (*req.mutable_inputs())["x"] =
      ProtoOf(Randn(DType::kFloat64, {2, 3, 24, 24}, 1));
  (*req.mutable_inputs())["w"] =
      ProtoOf(Randn(DType::kFloat64, {8, 3, 3, 3}, 2));
  (*req.mutable_inputs())["b"] = ProtoOf(Randn(DType::kFloat64, {8}, 3));
  absl::StatusOr<v1::GradCheckResponse> in_flight =
      absl::UnknownError("not run");
  std::atomic<bool> done{false};
  // Connected first, so that the call below reaches the server at once.
  ASSERT_TRUE(client->ListLayers().ok());
  std::thread call([&] {
    in_flight = client->GradCheck(req);
    done = true;
  });
  absl::SleepFor(absl::Milliseconds(300));
  server->Signal(SIGTERM);
  absl::SleepFor(absl::Milliseconds(200));

  // During the grace period: new calls are refused, on a new connection and
  // on the one that carries the call in flight, while that call runs on.
  std::unique_ptr<client::LayerClient> fresh =
      ConnectFresh(port, absl::Seconds(10));
  EXPECT_EQ(fresh->ListLayers().status().code(),
            absl::StatusCode::kUnavailable);
  v1::ForwardRequest small;
  small.mutable_layer()->set_name("relu");
  (*small.mutable_inputs())["x"] = ProtoOf(Randn(DType::kFloat64, {4}, 4));
  EXPECT_EQ(fresh->Forward(small).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->Forward(small).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_FALSE(done.load())
      << "the call in flight ended before the refusals could be checked "
         "during the grace period";

  call.join();
  ASSERT_TRUE(in_flight.ok()) << in_flight.status();
  EXPECT_EQ(in_flight->results_size(), 3);
  EXPECT_EQ(server->WaitExit(absl::Seconds(60)), std::optional<int>(0))
      << server->Stderr();
  // The signal came first, the call ended after it (calls are logged when
  // they end), then the server stopped. The refused calls never reached a
  // handler.
  const std::string log = server->Stderr();
  const size_t signalled = log.find("Terminated: no new calls");
  const size_t ended = log.find("call=GradCheck layer=conv");
  const size_t stopped = log.find("layerserve: stopped");
  ASSERT_NE(signalled, std::string::npos) << log;
  ASSERT_NE(ended, std::string::npos) << log;
  ASSERT_NE(stopped, std::string::npos) << log;
  EXPECT_LT(signalled, ended) << log;
  EXPECT_LT(ended, stopped) << log;
  EXPECT_EQ(log.find("call=Forward"), std::string::npos) << log;

  // Now nobody listens: a call fails fast with UNAVAILABLE.
  std::unique_ptr<client::LayerClient> late =
      ConnectFresh(port, absl::Seconds(10));
  const absl::Time start = absl::Now();
  EXPECT_EQ(late->ListLayers().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST_F(EndToEndTest, SecondServerOnTheSamePortFailsLoudly) {
  std::unique_ptr<ServerProcess> second =
      StartServer({absl::StrCat("--address=127.0.0.1:", port_)});
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->ReadLine(absl::Seconds(30)), "");  // never "listening"
  const std::optional<int> code = second->WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_THAT(second->Stderr(),
              HasSubstr(absl::StrCat("cannot listen on 127.0.0.1:", port_)));
  // The first one is untouched.
  EXPECT_EQ(client_->Health().value_or("error"), "SERVING");
}

TEST(EndToEndFlagsTest, BadFlagValueExitsNonZero) {
  std::unique_ptr<ServerProcess> server =
      StartServer({"--address=127.0.0.1:0", "--max_tensor_elements=0"});
  ASSERT_NE(server, nullptr);
  const std::optional<int> code = server->WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_THAT(server->Stderr(),
              HasSubstr("--max_tensor_elements: must be > 0, got 0"));
}

}  // namespace
}  // namespace layerserve::testing
