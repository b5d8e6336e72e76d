// `layerctl bench`: a closed-loop load generator. C worker threads share
// one channel and send the same prebuilt request back to back until N
// requests have been sent or T seconds have passed, whichever comes first;
// then it prints throughput and latency percentiles.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/cli.h"
#include "client/cli_common.h"
#include "client/cli_output.h"
#include "lib/registry.h"
#include "proto/convert.h"

namespace layerserve::client {
namespace {

// One prebuilt request of the chosen RPC.
struct Workload {
  std::string rpc;
  v1::ForwardRequest forward;
  v1::BackwardRequest backward;
  v1::GradCheckRequest gradcheck;
  v1::CompareRequest compare;

  absl::Status Call(LayerClient& client) const {
    if (rpc == "forward") return client.Forward(forward).status();
    if (rpc == "backward") return client.Backward(backward).status();
    if (rpc == "gradcheck") return client.GradCheck(gradcheck).status();
    return client.Compare(compare).status();
  }
};

// Shared between the workers and the progress printer.
struct Shared {
  int64_t max_requests = 0;
  absl::Time deadline;
  std::atomic<int64_t> issued{0};
  std::atomic<int64_t> done{0};
  std::atomic<int64_t> errors{0};
  absl::Mutex mu;
  std::vector<double> latencies_s ABSL_GUARDED_BY(mu);
  absl::Status first_error ABSL_GUARDED_BY(mu);
};

void Worker(const Workload& work, LayerClient& client, Shared& shared) {
  std::vector<double> mine;
  while (absl::Now() < shared.deadline &&
         shared.issued.fetch_add(1) < shared.max_requests) {
    const absl::Time start = absl::Now();
    absl::Status st = work.Call(client);
    const double s = absl::ToDoubleSeconds(absl::Now() - start);
    if (st.ok()) {
      mine.push_back(s);
    } else {
      shared.errors.fetch_add(1);
      absl::MutexLock lock(&shared.mu);
      if (shared.first_error.ok()) shared.first_error = st;
    }
    shared.done.fetch_add(1);
  }
  absl::MutexLock lock(&shared.mu);
  shared.latencies_s.insert(shared.latencies_s.end(), mine.begin(), mine.end());
}

// Nearest-rank percentile of sorted values.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * sorted.size()));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

}  // namespace

int RunBench(const Args& args) {
  ConnectionFlags conn;
  LayerFlags lf;
  std::string rpc = "forward";
  int64_t requests = 100;
  int64_t concurrency = 1;
  double duration_s = 60;
  FlagSet flags(
      "layerctl bench",
      "Load generator: sends one prebuilt request (--rpc) from --concurrency "
      "threads\nuntil --requests have been sent or --duration_s has passed, "
      "then prints\nreq/s and latency p50/p90/p99/max. A progress line goes "
      "to stderr while it\nruns. Exit 1 if any request failed. Inputs as for "
      "forward (NAME=SPEC...).",
      "NAME=SPEC... [dout=SPEC]",
      "  layerctl bench --rpc forward --layer conv --stride 1 --pad 1 \\\n"
      "      --requests 1000 --concurrency 4 \\\n"
      "      x=randn:8,3,32,32 w=randn:16,3,3,3 b=randn:16\n"
      "  layerctl bench --rpc backward --layer spatial_batchnorm --mode train "
      "\\\n"
      "      --requests 200 x=randn:16,32,16,16 gamma=randn:32 beta=randn:32 "
      "\\\n"
      "      running_mean=zeros:32 running_var=linspace:1,1:32\n"
      "  layerctl bench --rpc forward --layer softmax_loss --requests 500 \\\n"
      "      x=randn:64,10 y=labels:64:10");
  AddConnectionFlags(flags, conn, absl::Seconds(60));
  flags.String("rpc", &rpc, "forward, backward, gradcheck or compare");
  AddLayerFlags(flags, lf, /*with_impl=*/true);
  flags.Int("requests", &requests, "stop after this many requests");
  flags.Int("concurrency", &concurrency, "parallel requests in flight");
  flags.Double("duration_s", &duration_s, "stop after this many seconds");
  if (std::optional<int> rc = ParseFlags(flags, args, "bench")) return *rc;

  auto usage = [](const std::string& msg) {
    return ReportError("bench", absl::InvalidArgumentError(msg), false);
  };
  if (rpc != "forward" && rpc != "backward" && rpc != "gradcheck" &&
      rpc != "compare") {
    return usage(absl::StrCat(
        "--rpc: expected forward, backward, gradcheck or compare, got '", rpc,
        "'"));
  }
  if (requests < 1) {
    return usage(absl::StrCat("--requests: must be >= 1, got ", requests));
  }
  if (concurrency < 1 || concurrency > 256) {
    return usage(
        absl::StrCat("--concurrency: expected 1..256, got ", concurrency));
  }
  if (!(duration_s > 0)) {
    return usage(absl::StrCat("--duration_s: must be > 0, got ", duration_s));
  }
  absl::StatusOr<LayerSpec> spec = LayerSpecFromFlags(flags, lf);
  if (!spec.ok()) return ReportError("bench", spec.status(), false);
  absl::StatusOr<Impl> impl = ImplFromFlags(lf);
  if (!impl.ok()) return ReportError("bench", impl.status(), false);
  absl::StatusOr<TensorMap> tensors =
      TensorsFromArgs(flags, lf, *spec, {"dout"});
  if (!tensors.ok()) return ReportError("bench", tensors.status(), false);

  Workload work;
  work.rpc = rpc;
  if (rpc == "backward") {
    if (absl::Status st = AddDefaultDout(*spec, *tensors, lf.seed); !st.ok()) {
      return ReportError("bench", st, false);
    }
  }
  auto fill = [&](auto& req) {
    LayerSpecToWire(flags, *spec, req.mutable_layer());
    InputsToProto(*tensors, {"dout"}, req.mutable_inputs());
    if (auto it = tensors->find("dout"); it != tensors->end()) {
      TensorToProto(it->second, req.mutable_dout());
    }
  };
  if (rpc == "forward") {
    LayerSpecToWire(flags, *spec, work.forward.mutable_layer());
    work.forward.set_implementation(ImplToProto(*impl));
    InputsToProto(*tensors, {"dout"}, work.forward.mutable_inputs());
  } else if (rpc == "backward") {
    fill(work.backward);
    work.backward.set_implementation(ImplToProto(*impl));
  } else if (rpc == "gradcheck") {
    fill(work.gradcheck);
    work.gradcheck.set_implementation(ImplToProto(*impl));
    work.gradcheck.set_seed(lf.seed);
  } else {
    fill(work.compare);
    work.compare.set_seed(lf.seed);
  }

  absl::StatusOr<std::unique_ptr<LayerClient>> client = ConnectFromFlags(conn);
  if (!client.ok()) return ReportError("bench", client.status(), false);
  // One untimed call: connects the channel, warms the server's caches, and
  // turns a down server or a bad request into one clear line.
  if (absl::Status st = work.Call(**client); !st.ok()) {
    return ReportError("bench", st, true, &conn);
  }

  Shared shared;
  shared.max_requests = requests;
  const absl::Time start = absl::Now();
  shared.deadline = start + absl::Seconds(duration_s);
  std::vector<std::thread> threads;
  for (int64_t i = 0; i < concurrency; ++i) {
    threads.emplace_back(Worker, std::cref(work), std::ref(**client),
                         std::ref(shared));
  }
  const bool tty = isatty(STDERR_FILENO);
  absl::Time last_line = start;
  while (shared.done.load() < requests && absl::Now() < shared.deadline) {
    absl::SleepFor(absl::Milliseconds(100));
    const absl::Time now = absl::Now();
    // On a terminal the line redraws in place; in a log, one line a second.
    if (!tty && now - last_line < absl::Seconds(1)) continue;
    last_line = now;
    const std::string line = absl::StrFormat(
        "bench: %d/%d requests, %d errors, %.1f s", shared.done.load(),
        requests, shared.errors.load(), absl::ToDoubleSeconds(now - start));
    if (tty) {
      std::cerr << "\r" << line << std::flush;
    } else {
      std::cerr << line << "\n";
    }
  }
  for (std::thread& t : threads) t.join();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  if (tty) std::cerr << "\r\033[K" << std::flush;

  std::vector<double> lat;
  absl::Status first_error;
  {
    absl::MutexLock lock(&shared.mu);
    lat = shared.latencies_s;
    first_error = shared.first_error;
  }
  std::sort(lat.begin(), lat.end());
  const int64_t ok = static_cast<int64_t>(lat.size());
  const int64_t errors = shared.errors.load();
  const double rps = elapsed > 0 ? static_cast<double>(ok) / elapsed : 0;
  const double p50 = Percentile(lat, 50), p90 = Percentile(lat, 90),
               p99 = Percentile(lat, 99), max = lat.empty() ? 0 : lat.back();
  if (conn.json) {
    JsonWriter json;
    json.BeginObject().Key("command").String("bench");
    json.Key("rpc").String(rpc).Key("layer").String(spec->name);
    json.Key("concurrency").Int(concurrency);
    json.Key("requests").Int(ok + errors).Key("ok").Int(ok);
    json.Key("errors").Int(errors);
    json.Key("elapsed_s").Number(elapsed).Key("requests_per_s").Number(rps);
    json.Key("latency_ms").BeginObject();
    json.Key("p50").Number(p50 * 1e3).Key("p90").Number(p90 * 1e3);
    json.Key("p99").Number(p99 * 1e3).Key("max").Number(max * 1e3);
    json.EndObject();
    if (!first_error.ok()) {
      json.Key("first_error").String(first_error.ToString());
    }
    json.EndObject();
    std::cout << json.str() << "\n";
  } else {
    std::cout << absl::StrFormat(
        "bench %s %s: %d requests (%d ok, %d errors) in %.3f s, "
        "concurrency %d\n"
        "throughput: %.1f req/s\n"
        "latency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n",
        rpc, spec->name, ok + errors, ok, errors, elapsed, concurrency, rps,
        p50 * 1e3, p90 * 1e3, p99 * 1e3, max * 1e3);
  }
  if (!first_error.ok()) {
    ReportError("bench", first_error, true, &conn);
    return ok == 0 ? kExitRpc : kExitCheckFailed;
  }
  return kExitOk;
}

}  // namespace layerserve::client
