// Sustained load on the real server: 16 clients, each on its own
// connection, call Forward, Backward, GradCheck and Compare on several
// layers, naive and fast, float32 and float64, back to back for
// LAYERSERVE_LOAD_SECONDS (default 30) after a warm-up. Every response is
// checked against the naive float64 reference computed here.
//
// Passes when no call failed or came back wrong and the server's resident
// memory grew by at most 10 % from the end of the warm-up to the end of the
// run (not checked under sanitizers, which hold memory on purpose). Prints
// latency percentiles per method, as a Markdown table, also written to
// $LAYERSERVE_LOAD_REPORT when that is set.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/hardening/hardening_util.h"

namespace layerserve::testing {
namespace {

constexpr int kClients = 16;

int EnvSeconds(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int n = 0;
  return v != nullptr && absl::SimpleAtoi(v, &n) && n > 0 ? n : fallback;
}

// One kind of call with its request and a check of the response.
struct Work {
  std::string method;  // Forward, Backward, GradCheck, Compare
  std::string label;   // e.g. conv/FAST/float32
  // The call; OK when it succeeded and its result is right.
  std::function<absl::Status(client::LayerClient&)> run;
};

TensorMap AsF64(const TensorMap& in) {
  TensorMap out;
  for (const auto& [k, t] : in) out.emplace(k, t.CastTo(DType::kFloat64));
  return out;
}

// float64 agrees with the reference to rounding; float32 to ~1e-4 absolute
// on these O(1..10) values.
absl::Status CheckClose(const v1::Tensor& got_proto, const Tensor& want,
                        DType dtype, const std::string& what) {
  absl::StatusOr<Tensor> got = TensorFromProto(got_proto, what);
  if (!got.ok()) return got.status();
  const double err = dtype == DType::kFloat64
                         ? ValueOrDie(RelError(*got, want))
                         : ValueOrDie(MaxAbsError(*got, want));
  const double tol = dtype == DType::kFloat64 ? 1e-9 : 1e-3;
  if (!(err <= tol)) {
    return absl::InternalError(
        absl::StrCat(what, ": error ", err, " above ", tol));
  }
  return absl::OkStatus();
}

struct LayerSetup {
  std::string name;
  v1::LayerSpec spec;
  std::vector<std::pair<std::string, Shape>> inputs;
};

std::vector<LayerSetup> Layers() {
  v1::LayerSpec relu;
  relu.set_name("relu");
  v1::LayerSpec crp = ConvSpec("conv_relu_pool", 1, 1);
  *crp.mutable_pool_param() = PoolSpec(2, 2, 2).pool_param();
  return {
      {"conv",
       ConvSpec("conv", 1, 1),
       {{"x", {4, 3, 16, 16}}, {"w", {8, 3, 3, 3}}, {"b", {8}}}},
      {"max_pool", PoolSpec(2, 2, 2), {{"x", {4, 8, 16, 16}}}},
      {"relu", relu, {{"x", {4, 16, 16, 16}}}},
      {"conv_relu",
       ConvSpec("conv_relu", 1, 1),
       {{"x", {2, 4, 12, 12}}, {"w", {6, 4, 3, 3}}, {"b", {6}}}},
      {"conv_relu_pool",
       crp,
       {{"x", {2, 3, 16, 16}}, {"w", {4, 3, 3, 3}}, {"b", {4}}}},
  };
}

std::vector<Work> Workload() {
  std::vector<Work> work;
  uint64_t seed = 1;
  for (const LayerSetup& layer : Layers()) {
    const LayerSpec spec = ValueOrDie(LayerSpecFromProto(layer.spec));
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      TensorMap in;
      for (const auto& [name, shape] : layer.inputs) {
        in.emplace(name, Randn(dtype, shape, seed++));
      }
      const Shape out_shape = ValueOrDie(InferOutput(spec, DescsOf(in))).shape;
      const Tensor dout = Randn(dtype, out_shape, seed++);
      // Shared by the work items (tensors do not copy).
      auto want_out = std::make_shared<const Tensor>(
          std::move(ValueOrDie(Forward(spec, Impl::kNaive, AsF64(in)))
                        .outputs.at("out")));
      auto want_grads = std::make_shared<const TensorMap>(
          ValueOrDie(Backward(spec, Impl::kNaive, AsF64(in),
                              dout.CastTo(DType::kFloat64)))
              .grads);
      for (v1::Implementation impl : {v1::NAIVE, v1::FAST}) {
        const std::string label =
            absl::StrCat(layer.name, "/", v1::Implementation_Name(impl), "/",
                         DTypeName(dtype));
        v1::ForwardRequest f;
        *f.mutable_layer() = layer.spec;
        f.set_implementation(impl);
        PutInputs(in, f.mutable_inputs());
        work.push_back({"Forward", label, [f, want_out, dtype](auto& c) {
                          absl::StatusOr<v1::ForwardResponse> r = c.Forward(f);
                          if (!r.ok()) return r.status();
                          return CheckClose(r->outputs().at("out"), *want_out,
                                            dtype, "out");
                        }});
        v1::BackwardRequest b;
        *b.mutable_layer() = layer.spec;
        b.set_implementation(impl);
        PutInputs(in, b.mutable_inputs());
        *b.mutable_dout() = ProtoOf(dout);
        work.push_back(
            {"Backward", label, [b, want_grads, dtype](auto& c) {
               absl::StatusOr<v1::BackwardResponse> r = c.Backward(b);
               if (!r.ok()) return r.status();
               for (const auto& [name, g] : *want_grads) {
                 if (r->grads().count(name) == 0) {
                   return absl::InternalError(absl::StrCat("no ", name));
                 }
                 absl::Status s =
                     CheckClose(r->grads().at(name), g, dtype, name);
                 if (!s.ok()) return s;
               }
               return absl::OkStatus();
             }});
      }
    }
    // A gradient check (sampled, float64) and a compare per layer.
    TensorMap in;
    for (const auto& [name, shape] : layer.inputs) {
      in.emplace(name, Randn(DType::kFloat64, shape, seed++));
    }
    for (v1::Implementation impl : {v1::NAIVE, v1::FAST}) {
      v1::GradCheckRequest g;
      *g.mutable_layer() = layer.spec;
      g.set_implementation(impl);
      PutInputs(in, g.mutable_inputs());
      g.set_seed(seed++);
      g.set_num_checks(24);
      const size_t n_inputs = layer.inputs.size();
      work.push_back({"GradCheck",
                      absl::StrCat(layer.name, "/",
                                   v1::Implementation_Name(impl), "/float64"),
                      [g, n_inputs](auto& c) {
                        absl::StatusOr<v1::GradCheckResponse> r =
                            c.GradCheck(g);
                        if (!r.ok()) return r.status();
                        if (r->results_size() != static_cast<int>(n_inputs)) {
                          return absl::InternalError("results missing");
                        }
                        for (const auto& res : r->results()) {
                          if (!(res.rel_error() <= 1e-5)) {
                            return absl::InternalError(absl::StrCat(
                                res.input(), ": rel_error ", res.rel_error()));
                          }
                        }
                        return absl::OkStatus();
                      }});
    }
    v1::CompareRequest cmp;
    *cmp.mutable_layer() = layer.spec;
    PutInputs(in, cmp.mutable_inputs());
    cmp.set_seed(seed++);
    cmp.set_repeats(2);
    work.push_back(
        {"Compare", absl::StrCat(layer.name, "/float64"), [cmp](auto& c) {
           absl::StatusOr<v1::CompareResponse> r = c.Compare(cmp);
           if (!r.ok()) return r.status();
           if (!(r->output_rel_error() <= 1e-9)) {
             return absl::InternalError(
                 absl::StrCat("output_rel_error ", r->output_rel_error()));
           }
           return absl::OkStatus();
         }});
  }
  return work;
}

// Latencies of one method, in milliseconds.
struct Stats {
  std::vector<double> ms;
  double Percentile(double p) {
    if (ms.empty()) return 0;
    std::sort(ms.begin(), ms.end());
    const size_t i = std::min(
        ms.size() - 1, static_cast<size_t>(p / 100.0 * (ms.size() - 1) + 0.5));
    return ms[i];
  }
};

TEST(LoadTest, SixteenClientsMixedCallsNoErrorsBoundedMemory) {
  const int warmup_seconds = EnvSeconds("LAYERSERVE_LOAD_WARMUP_SECONDS", 8);
  const int run_seconds = EnvSeconds("LAYERSERVE_LOAD_SECONDS", 30);
  int port = 0;
  std::unique_ptr<ServerProcess> server =
      StartServer({"--log_calls=false"}, &port);
  ASSERT_GT(port, 0);
  const std::vector<Work> work = Workload();

  // Each client on its own connection: a local subchannel pool keeps gRPC
  // from sharing one TCP connection among equal channels.
  std::vector<std::unique_ptr<client::LayerClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    client::ClientOptions o = OptionsFor(port, absl::Seconds(120));
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(o.max_message_bytes);
    args.SetMaxSendMessageSize(o.max_message_bytes);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    clients.push_back(std::make_unique<client::LayerClient>(
        grpc::CreateCustomChannel(o.target, grpc::InsecureChannelCredentials(),
                                  args),
        o));
  }

  std::atomic<bool> measuring{false}, stop{false};
  std::atomic<int64_t> calls{0}, errors{0};
  std::mutex mu;
  std::map<std::string, Stats> stats;  // by method, and "all"
  std::vector<std::string> error_samples;
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      size_t next = static_cast<size_t>(t) * 7;  // spread the start
      while (!stop.load()) {
        const Work& w = work[next++ % work.size()];
        const absl::Time start = absl::Now();
        const absl::Status status = w.run(*clients[static_cast<size_t>(t)]);
        const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
        if (!status.ok()) {
          ++errors;
          std::lock_guard<std::mutex> lock(mu);
          if (error_samples.size() < 10) {
            error_samples.push_back(
                absl::StrCat(w.method, " ", w.label, ": ", status.ToString()));
          }
        }
        if (measuring.load()) {
          ++calls;
          std::lock_guard<std::mutex> lock(mu);
          stats[w.method].ms.push_back(ms);
          stats["all"].ms.push_back(ms);
        }
      }
    });
  }

  absl::SleepFor(absl::Seconds(warmup_seconds));
  const double cpu_start = server->CpuSeconds();
  // RSS swings by MBs with the calls in flight (each holds its tensors a
  // few times over), so growth compares the medians of the first and the
  // last few seconds' samples rather than two single samples.
  constexpr int kWindow = 5;
  std::vector<int64_t> samples;
  measuring = true;
  const absl::Time run_start = absl::Now();
  while (absl::Now() - run_start < absl::Seconds(run_seconds)) {
    absl::SleepFor(absl::Seconds(1));
    samples.push_back(server->RssKb());
    if (std::getenv("LAYERSERVE_LOAD_VERBOSE") != nullptr) {
      std::ifstream status(absl::StrCat("/proc/", server->pid(), "/status"));
      std::string line, threads;
      while (std::getline(status, line)) {
        if (line.rfind("Threads:", 0) == 0) threads = line;
      }
      std::printf("t=%.0f s RSS %lld KiB %s\n",
                  absl::ToDoubleSeconds(absl::Now() - run_start),
                  static_cast<long long>(samples.back()), threads.c_str());
    }
  }
  measuring = false;
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - run_start);
  const int window = std::min<int>(kWindow, samples.size() / 2);
  ASSERT_GT(window, 0) << "run too short to measure memory";
  auto median = [](std::vector<int64_t> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const int64_t rss_start = median({samples.begin(), samples.begin() + window});
  const int64_t rss_end = median({samples.end() - window, samples.end()});
  const int64_t rss_max = *std::max_element(samples.begin(), samples.end());
  const double cpu = server->CpuSeconds() - cpu_start;
  stop = true;
  for (std::thread& t : threads) t.join();

  std::string report = absl::StrFormat(
      "%d clients, %d s after %d s of warm-up, %zu kinds of call (%d layers "
      "x naive/fast x float32/float64 Forward and Backward, sampled "
      "GradCheck, Compare); %lld calls, %.0f calls/s, %lld errors; server "
      "CPU %.1f s (%.2f cores); server RSS (median of each %d s window) %lld "
      "KiB at the start, %lld KiB at the end (%+.1f %%), %lld KiB at most\n\n",
      kClients, run_seconds, warmup_seconds, work.size(),
      static_cast<int>(Layers().size()), static_cast<long long>(calls.load()),
      calls.load() / elapsed, static_cast<long long>(errors.load()), cpu,
      cpu / elapsed, window, static_cast<long long>(rss_start),
      static_cast<long long>(rss_end),
      100.0 * static_cast<double>(rss_end - rss_start) /
          static_cast<double>(rss_start),
      static_cast<long long>(rss_max));
  absl::StrAppend(&report,
                  "| method | calls | p50 ms | p90 ms | p99 ms | max ms |\n"
                  "|---|---:|---:|---:|---:|---:|\n");
  for (const std::string method :
       {"Forward", "Backward", "GradCheck", "Compare", "all"}) {
    Stats& s = stats[method];
    absl::StrAppendFormat(&report, "| %s | %zu | %.2f | %.2f | %.2f | %.2f |\n",
                          method, s.ms.size(), s.Percentile(50),
                          s.Percentile(90), s.Percentile(99),
                          s.Percentile(100));
  }
  std::printf("%s", report.c_str());
  if (const char* path = std::getenv("LAYERSERVE_LOAD_REPORT")) {
    std::ofstream(path) << report;
  }

  EXPECT_EQ(errors.load(), 0);
  if (errors.load() > 0) {
    const std::string log = server->Stderr();
    std::printf("server stderr (last 6000 bytes):\n%s\n",
                log.substr(log.size() > 6000 ? log.size() - 6000 : 0).c_str());
  }
  for (const std::string& e : error_samples) ADD_FAILURE() << e;
  EXPECT_GT(calls.load(), kClients);
  for (const std::string method :
       {"Forward", "Backward", "GradCheck", "Compare"}) {
    EXPECT_GT(stats[method].ms.size(), 0u) << method;
  }
  ASSERT_GT(rss_start, 0);
  // Sanitizers keep memory (ASan's quarantine, TSan's shadow and history)
  // on purpose: the bound is for the real server.
  if (!kAddressSanitizer && !kThreadSanitizer) {
    EXPECT_LE(rss_end, rss_start + rss_start / 10)
        << "RSS grew by more than 10 % under steady load";
  }
  ExpectSeedConvWorks(*clients[0]);
}

}  // namespace
}  // namespace layerserve::testing
