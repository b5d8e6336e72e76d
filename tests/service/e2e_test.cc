// End to end: the real `layerserve` binary on an ephemeral port, called
// through the client library over TCP. Health and reflection answered,
// tensors of tens of MB both ways, SIGTERM with a call in flight, a second
// server on a taken port, a server that is down.
#include <fcntl.h>
#include <google/protobuf/descriptor.pb.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
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
#include "tests/service/test_util.h"

extern char** environ;

namespace layerserve::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

// A child process running the server binary: stdout on a pipe (for the
// "listening on" line), stderr into a file (the call log; a pipe nobody
// reads would fill up and block the server).
class ServerProcess {
 public:
  static std::unique_ptr<ServerProcess> Start(
      const std::vector<std::string>& flags) {
    static int counter = 0;
    auto p = std::unique_ptr<ServerProcess>(new ServerProcess);
    p->stderr_path_ = absl::StrCat(::testing::TempDir(), "layerserve_e2e_",
                                   getpid(), "_", counter++, ".log");
    int out[2];
    if (pipe(out) != 0) return nullptr;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addclose(&actions, out[1]);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO,
                                     p->stderr_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> args = {LAYERSERVE_BINARY};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&p->pid_, LAYERSERVE_BINARY, &actions, nullptr,
                               argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    p->stdout_fd_ = out[0];
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << LAYERSERVE_BINARY << ": " << rc;
      p->pid_ = -1;
    }
    return p;
  }

  ~ServerProcess() {
    if (pid_ > 0 && !exit_status_.has_value()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
    unlink(stderr_path_.c_str());
  }

  // The next stdout line, or "" on EOF or after `timeout`.
  std::string ReadLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    std::string line;
    while (absl::Now() < deadline) {
      pollfd pfd = {stdout_fd_, POLLIN, 0};
      const int ms = static_cast<int>(
          absl::ToInt64Milliseconds(deadline - absl::Now()) + 1);
      if (poll(&pfd, 1, ms) <= 0) continue;
      char c;
      if (read(stdout_fd_, &c, 1) != 1) break;
      if (c == '\n') return line;
      line.push_back(c);
    }
    return "";
  }

  // Reads "listening on HOST:PORT" and returns the port (0 on failure).
  int WaitListening() {
    const std::string line = ReadLine(absl::Seconds(60));
    constexpr absl::string_view kPrefix = "listening on 127.0.0.1:";
    int port = 0;
    if (!absl::StartsWith(line, kPrefix) ||
        !absl::SimpleAtoi(line.substr(kPrefix.size()), &port)) {
      ADD_FAILURE() << "stdout said '" << line << "'; stderr: " << Stderr();
      return 0;
    }
    return port;
  }

  void Signal(int sig) { kill(pid_, sig); }

  // The exit code, or nullopt if still running after `timeout` or killed
  // by a signal.
  std::optional<int> WaitExit(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!exit_status_.has_value() && absl::Now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_status_ = status;
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (!exit_status_.has_value() || !WIFEXITED(*exit_status_)) {
      return std::nullopt;
    }
    return WEXITSTATUS(*exit_status_);
  }

  std::string Stderr() const {
    std::ifstream in(stderr_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string stderr_path_;
  std::optional<int> exit_status_;
};

std::unique_ptr<client::LayerClient> ConnectTo(
    int port, absl::Duration timeout = absl::Seconds(120)) {
  client::ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.timeout = timeout;
  return ValueOrDie(client::LayerClient::Connect(o));
}

class EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start({"--address=127.0.0.1:0"});
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

TEST_F(EndToEndTest, SigtermFinishesTheCallInFlightAndExitsZero) {
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
  // Connected first, so that the call below reaches the server at once.
  ASSERT_TRUE(client_->ListLayers().ok());
  std::thread call([&] { in_flight = client_->GradCheck(req); });
  absl::SleepFor(absl::Milliseconds(300));
  server_->Signal(SIGTERM);
  call.join();
  ASSERT_TRUE(in_flight.ok()) << in_flight.status();
  EXPECT_EQ(in_flight->results_size(), 3);
  EXPECT_EQ(server_->WaitExit(absl::Seconds(30)), std::optional<int>(0))
      << server_->Stderr();
  // The signal came first, the call ended after it (calls are logged when
  // they end), then the server stopped.
  const std::string log = server_->Stderr();
  const size_t signalled = log.find("Terminated: no new calls");
  const size_t ended = log.find("call=GradCheck layer=conv");
  const size_t stopped = log.find("layerserve: stopped");
  ASSERT_NE(signalled, std::string::npos) << log;
  ASSERT_NE(ended, std::string::npos) << log;
  ASSERT_NE(stopped, std::string::npos) << log;
  EXPECT_LT(signalled, ended) << log;
  EXPECT_LT(ended, stopped) << log;

  // Now nobody listens: a call fails fast with UNAVAILABLE.
  std::unique_ptr<client::LayerClient> late =
      ConnectTo(port_, absl::Seconds(10));
  const absl::Time start = absl::Now();
  EXPECT_EQ(late->ListLayers().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST_F(EndToEndTest, SecondServerOnTheSamePortFailsLoudly) {
  std::unique_ptr<ServerProcess> second =
      ServerProcess::Start({absl::StrCat("--address=127.0.0.1:", port_)});
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
  std::unique_ptr<ServerProcess> server = ServerProcess::Start(
      {"--address=127.0.0.1:0", "--max_tensor_elements=0"});
  ASSERT_NE(server, nullptr);
  const std::optional<int> code = server->WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_THAT(server->Stderr(),
              HasSubstr("--max_tensor_elements: must be > 0, got 0"));
}

}  // namespace
}  // namespace layerserve::testing
