// AdmissionControl on its own (slots, the FIFO queue, refusal beyond it,
// cancellation while waiting), then through the service over an in-process
// channel: a busy server refuses at once, a queued call honours its
// deadline, and the cost limits with their flags.
#include "server/admission.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/service/test_util.h"

namespace layerserve::testing {
namespace {

[[maybe_unused]] const bool kOneThreadUnderTsan = OneIntraOpThreadUnderTsan();

using server::AdmissionControl;
using ::testing::HasSubstr;

absl::Status NeverCancelled() { return absl::OkStatus(); }

// Spins until `pred` holds (the other thread got where the test needs it).
template <typename Pred>
bool WaitFor(Pred pred, absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

TEST(AdmissionControlTest, SlotsThenQueueThenRefusal) {
  AdmissionControl admission(2, 1);
  absl::StatusOr<AdmissionControl::Ticket> a = admission.Admit(NeverCancelled);
  absl::StatusOr<AdmissionControl::Ticket> b = admission.Admit(NeverCancelled);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(admission.running(), 2);

  std::atomic<bool> third_admitted{false};
  std::thread third([&] {
    absl::StatusOr<AdmissionControl::Ticket> c =
        admission.Admit(NeverCancelled);
    EXPECT_TRUE(c.ok()) << c.status();
    third_admitted = true;
  });
  ASSERT_TRUE(WaitFor([&] { return admission.queued() == 1; }));

  // Both slots taken, the queue full: refused at once.
  absl::StatusOr<AdmissionControl::Ticket> fourth =
      admission.Admit(NeverCancelled);
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(fourth.status().message()),
              HasSubstr("server busy: 2 computations running "
                        "(--max_concurrent=2) and 1 waiting (--max_queue=1)"));
  EXPECT_FALSE(third_admitted.load());

  {
    // Releasing one slot admits the waiter.
    AdmissionControl::Ticket released = std::move(*a);
  }
  third.join();
  EXPECT_TRUE(third_admitted.load());
  EXPECT_EQ(admission.queued(), 0);
}

TEST(AdmissionControlTest, QueueIsFirstInFirstOut) {
  AdmissionControl admission(1, 3);
  std::optional<AdmissionControl::Ticket> held;
  held.emplace(*admission.Admit(NeverCancelled));
  std::vector<int> order;
  std::mutex order_mu;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&, i] {
      absl::StatusOr<AdmissionControl::Ticket> t =
          admission.Admit(NeverCancelled);
      ASSERT_TRUE(t.ok());
      std::lock_guard<std::mutex> lock(order_mu);
      order.push_back(i);
    });
    // Queue them in a known order.
    ASSERT_TRUE(WaitFor([&] { return admission.queued() == i + 1; }));
  }
  held.reset();
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(admission.running(), 0);
}

TEST(AdmissionControlTest, WaiterLeavesTheQueueWhenCancelled) {
  AdmissionControl admission(1, 4);
  absl::StatusOr<AdmissionControl::Ticket> held =
      admission.Admit(NeverCancelled);
  ASSERT_TRUE(held.ok());
  std::atomic<bool> cancel{false};
  absl::Status waited;
  std::thread waiter([&] {
    waited = admission
                 .Admit([&] {
                   return cancel.load()
                              ? absl::CancelledError("the call was cancelled")
                              : absl::OkStatus();
                 })
                 .status();
  });
  ASSERT_TRUE(WaitFor([&] { return admission.queued() == 1; }));
  cancel = true;
  waiter.join();
  EXPECT_EQ(waited.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(admission.queued(), 0);
  EXPECT_EQ(admission.running(), 1);  // the held slot only
}

TEST(AdmissionControlTest, NoQueueMeansRefuseWhenBusy) {
  AdmissionControl admission(1, 0);
  absl::StatusOr<AdmissionControl::Ticket> held =
      admission.Admit(NeverCancelled);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(admission.Admit(NeverCancelled).status().code(),
            absl::StatusCode::kResourceExhausted);
}

// --- through the service ----------------------------------------------------

// A naive gradient check that runs for many seconds unless stopped.
v1::GradCheckRequest LongGradCheck() {
  v1::GradCheckRequest req;
  *req.mutable_layer() = ConvSpec("conv", 1, 1);
  req.set_implementation(v1::NAIVE);
  (*req.mutable_inputs())["x"] =
      ProtoOf(Randn(DType::kFloat64, {4, 8, 32, 32}, 1));
  (*req.mutable_inputs())["w"] =
      ProtoOf(Randn(DType::kFloat64, {8, 8, 3, 3}, 2));
  (*req.mutable_inputs())["b"] = ProtoOf(Randn(DType::kFloat64, {8}, 3));
  return req;
}

v1::ForwardRequest SmallForward() {
  v1::ForwardRequest r;
  r.mutable_layer()->set_name("relu");
  (*r.mutable_inputs())["x"] = ProtoOf(Randn(DType::kFloat64, {8}, 1));
  return r;
}

std::unique_ptr<server::LayerServer> StartInProcess(int max_concurrent,
                                                    int max_queue) {
  server::ServerOptions o;
  o.address = "";
  o.service.log_calls = false;
  o.service.max_concurrent = max_concurrent;
  o.service.max_queue = max_queue;
  o.service.limits.max_gradcheck_macs = int64_t{1} << 62;
  return ValueOrDie(server::LayerServer::Start(o));
}

TEST(ServiceAdmissionTest, BusyServerRefusesAtOnceThenServesAgain) {
  std::unique_ptr<server::LayerServer> server = StartInProcess(1, 0);
  client::ClientOptions long_opts;
  long_opts.timeout = absl::Seconds(2);
  client::LayerClient long_client(server->InProcessChannel(), long_opts);
  client::LayerClient client(server->InProcessChannel(), {});

  absl::Status long_status;
  std::thread long_call(
      [&] { long_status = long_client.GradCheck(LongGradCheck()).status(); });
  ASSERT_TRUE(
      WaitFor([&] { return server->service().admission().running() == 1; }));

  absl::StatusOr<v1::ForwardResponse> refused = client.Forward(SmallForward());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("server busy"));
  // Listing the layers is not a computation: answered while busy.
  EXPECT_TRUE(client.ListLayers().ok());

  long_call.join();
  EXPECT_EQ(long_status.code(), absl::StatusCode::kDeadlineExceeded);
  // The handler frees its slot a moment after the client gave up.
  ASSERT_TRUE(
      WaitFor([&] { return server->service().admission().running() == 0; }));
  EXPECT_TRUE(client.Forward(SmallForward()).ok());
}

TEST(ServiceAdmissionTest, QueuedCallHonoursItsDeadlineThenQueueRuns) {
  std::unique_ptr<server::LayerServer> server = StartInProcess(1, 4);
  client::ClientOptions long_opts;
  long_opts.timeout = absl::Seconds(3);
  client::LayerClient long_client(server->InProcessChannel(), long_opts);

  absl::Status long_status;
  std::thread long_call(
      [&] { long_status = long_client.GradCheck(LongGradCheck()).status(); });
  ASSERT_TRUE(
      WaitFor([&] { return server->service().admission().running() == 1; }));

  // Waits behind the long call and gives up at its own deadline, well
  // before the long call ends.
  client::ClientOptions short_opts;
  short_opts.timeout = absl::Milliseconds(300);
  client::LayerClient short_client(server->InProcessChannel(), short_opts);
  EXPECT_EQ(short_client.Forward(SmallForward()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(
      WaitFor([&] { return server->service().admission().queued() == 0; }));

  // A patient call waits in the queue and runs once the slot frees up.
  client::LayerClient patient(server->InProcessChannel(), {});
  absl::StatusOr<v1::ForwardResponse> later = patient.Forward(SmallForward());
  EXPECT_TRUE(later.ok()) << later.status();
  long_call.join();
  EXPECT_EQ(long_status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(server->service().admission().running(), 0);
}

}  // namespace
}  // namespace layerserve::testing
