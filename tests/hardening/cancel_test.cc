// Cancellation and deadlines against the real server process: a long naive
// gradient check (and a long Compare) stop soon after the client cancels or
// the deadline passes, the server's CPU goes quiet (its utime + stime stop
// growing), and the next call is answered. Also admission control over TCP:
// a busy server refuses at once.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "layerserve/v1/layer_service.grpc.pb.h"
#include "tests/hardening/hardening_util.h"

namespace layerserve::testing {
namespace {

using ::testing::HasSubstr;

// Minutes of naive loops unless stopped.
template <typename Request>
Request LongNaiveConv() {
  Request req;
  *req.mutable_layer() = ConvSpec("conv", 1, 1);
  (*req.mutable_inputs())["x"] =
      ProtoOf(Randn(DType::kFloat64, {4, 8, 32, 32}, 1));
  (*req.mutable_inputs())["w"] =
      ProtoOf(Randn(DType::kFloat64, {8, 8, 3, 3}, 2));
  (*req.mutable_inputs())["b"] = ProtoOf(Randn(DType::kFloat64, {8}, 3));
  return req;
}

// Polls the server's log until it contains `what`; how long that took, or
// nullopt after `timeout`.
std::optional<absl::Duration> WaitForLog(ServerProcess& server,
                                         const std::string& what,
                                         absl::Duration timeout) {
  const absl::Time start = absl::Now();
  while (absl::Now() - start < timeout) {
    if (server.Stderr().find(what) != std::string::npos) {
      return absl::Now() - start;
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  return std::nullopt;
}

// CPU seconds the server burns over `window`.
double CpuOver(ServerProcess& server, absl::Duration window) {
  const double before = server.CpuSeconds();
  absl::SleepFor(window);
  return server.CpuSeconds() - before;
}

class CancelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = StartServer({"--max_gradcheck_macs=1000000000000"}, &port_);
    ASSERT_GT(port_, 0);
    client_ = ConnectTo(port_);
    stub_ = v1::LayerService::NewStub(client_->channel());
    // Connected and warmed up before anything is measured.
    ExpectSeedConvWorks(*client_);
  }

  // After the long call has ended: the server is idle again (a running
  // naive loop would burn ~1 CPU second per second) and answers at once.
  void ExpectIdleAndServing() {
    absl::SleepFor(absl::Milliseconds(100));
    const double cpu = CpuOver(*server_, absl::Seconds(1));
    std::printf("server CPU over the second after the stop: %.3f s\n", cpu);
    EXPECT_GE(cpu, 0.0);
    EXPECT_LT(cpu, 0.25) << "the server still computes for nobody";
    ExpectSeedConvWorks(*client_);
  }

  std::unique_ptr<ServerProcess> server_;
  int port_ = 0;
  std::unique_ptr<client::LayerClient> client_;
  std::unique_ptr<v1::LayerService::Stub> stub_;
};

TEST_F(CancelTest, CancelledNaiveGradCheckStopsAndFreesTheCpu) {
  auto req = LongNaiveConv<v1::GradCheckRequest>();
  req.set_implementation(v1::NAIVE);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(300));
  v1::GradCheckResponse response;
  grpc::Status status;
  std::thread call(
      [&] { status = stub_->GradCheck(&context, req, &response); });

  // It is computing: up to a core's worth of CPU (less on a machine shared
  // with other tests).
  absl::SleepFor(absl::Milliseconds(300));
  const double busy = CpuOver(*server_, absl::Milliseconds(500));
  std::printf("server CPU over 0.5 s while the check runs: %.3f s\n", busy);
  EXPECT_GT(busy, 0.1);

  context.TryCancel();
  const std::optional<absl::Duration> stopped = WaitForLog(
      *server_, "call=GradCheck layer=conv impl=NAIVE ran=- dtype=FLOAT64",
      absl::Seconds(30));
  call.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(stopped.has_value()) << server_->Stderr();
  std::printf("the handler returned %.1f ms after the cancellation\n",
              absl::ToDoubleMilliseconds(*stopped));
  // Nominally ~20 ms (the cancellation poll interval); generous for slow
  // (sanitizer) builds and a busy machine.
  EXPECT_LT(*stopped, absl::Seconds(2));
  EXPECT_THAT(server_->Stderr(), HasSubstr("status=CANCELLED"));
  ExpectIdleAndServing();
}

TEST_F(CancelTest, NaiveGradCheckPastItsDeadlineStops) {
  auto req = LongNaiveConv<v1::GradCheckRequest>();
  req.set_implementation(v1::NAIVE);
  std::unique_ptr<client::LayerClient> hurried =
      ConnectTo(port_, absl::Milliseconds(500));
  EXPECT_EQ(hurried->GradCheck(req).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  const std::optional<absl::Duration> stopped =
      WaitForLog(*server_, "status=DEADLINE_EXCEEDED", absl::Seconds(30));
  ASSERT_TRUE(stopped.has_value()) << server_->Stderr();
  EXPECT_LT(*stopped, absl::Seconds(2));
  ExpectIdleAndServing();
}

TEST_F(CancelTest, CancelledCompareStopsBetweenRepeats) {
  auto req = LongNaiveConv<v1::CompareRequest>();
  req.set_repeats(100);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(300));
  v1::CompareResponse response;
  grpc::Status status;
  std::thread call([&] { status = stub_->Compare(&context, req, &response); });
  absl::SleepFor(absl::Milliseconds(500));
  context.TryCancel();
  const std::optional<absl::Duration> stopped =
      WaitForLog(*server_, "call=Compare layer=conv", absl::Seconds(30));
  call.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(stopped.has_value()) << server_->Stderr();
  EXPECT_LT(*stopped, absl::Seconds(2));
  ExpectIdleAndServing();
}

TEST(AdmissionOverTcpTest, BusyServerRefusesAtOnce) {
  int port = 0;
  std::unique_ptr<ServerProcess> server =
      StartServer({"--max_concurrent=1", "--max_queue=0",
                   "--max_gradcheck_macs=1000000000000"},
                  &port);
  ASSERT_GT(port, 0);
  std::unique_ptr<client::LayerClient> client = ConnectTo(port);
  std::unique_ptr<client::LayerClient> hurried =
      ConnectTo(port, absl::Seconds(3));
  auto req = LongNaiveConv<v1::GradCheckRequest>();
  req.set_implementation(v1::NAIVE);
  absl::Status long_status;
  std::thread call([&] { long_status = hurried->GradCheck(req).status(); });
  ASSERT_TRUE(WaitForLog(*server, "serving on", absl::Seconds(30)));
  absl::SleepFor(absl::Milliseconds(500));

  v1::ForwardRequest small = SeedConvForwardRequest();
  absl::StatusOr<v1::ForwardResponse> refused = client->Forward(small);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted)
      << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("server busy: 1 computations running "
                        "(--max_concurrent=1) and 0 waiting (--max_queue=0)"));
  call.join();
  EXPECT_EQ(long_status.code(), absl::StatusCode::kDeadlineExceeded);
  // The client gives up at its deadline; the server's handler notices it a
  // moment later and frees the slot: then the next call is served.
  ASSERT_TRUE(WaitForLog(*server, "call=GradCheck", absl::Seconds(30)));
  ExpectSeedConvWorks(*client);
}

}  // namespace
}  // namespace layerserve::testing
