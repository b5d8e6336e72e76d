// layerserve_bench: naive vs fast layers through the public registry API
// (lib/registry.h), the way the server calls them, on the fast-layers
// issue's cases. Inputs are built once, outside the timed loop; every timed
// call runs under a ComputeSlot, as one RPC's work would.
//
// Benchmark names are <case>/<dtype>/<direction>/<impl>, e.g.
// conv_3x3/f32/bwd/fast; bench/compare_torch.py parses them. Counters:
//   ms       wall-clock milliseconds per call
//   GFLOP/s  conv only: forward 2*N*F*C*HH*WW*H'*W', backward twice that
//            (data and weights gradients; the bias gradient is noise)
// The label is the implementation that ran ("onednn:jit:avx2", ...).
//
//   layerserve_bench --benchmark_repetitions=5
//                    --benchmark_report_aggregates_only=true
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "lib/layers/conv.h"
#include "lib/registry.h"
#include "lib/tensor.h"
#include "lib/threading.h"

namespace layerserve {
namespace {

struct Case {
  std::string name;
  std::string layer;  // "conv" or "max_pool"
  Shape x;
  Shape w;  // conv only
  ConvParam conv;
  PoolParam pool;
  // Naive timing: 0 lets Google Benchmark pick the iteration count; n > 0
  // runs exactly n iterations (the naive code takes seconds on big layers);
  // -1 skips naive.
  int64_t naive_iterations = 0;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  // The seed notebook's fast-layer cells.
  cases.push_back({"conv_seed",
                   "conv",
                   {100, 3, 31, 31},
                   {25, 3, 3, 3},
                   ConvParam{2, 1},
                   {},
                   0});
  cases.push_back({"pool_seed",
                   "max_pool",
                   {100, 3, 32, 32},
                   {},
                   {},
                   PoolParam{2, 2, 2},
                   0});
  // CIFAR-style first layer: few input channels, a big kernel.
  cases.push_back({"conv_7x7",
                   "conv",
                   {128, 3, 32, 32},
                   {32, 3, 7, 7},
                   ConvParam{1, 3},
                   {},
                   1});
  // A mid-network ResNet-style layer: 7.4 GFLOP per forward call. The
  // naive loops would need tens of seconds per call, so they are skipped.
  cases.push_back({"conv_3x3",
                   "conv",
                   {32, 64, 56, 56},
                   {64, 64, 3, 3},
                   ConvParam{1, 1},
                   {},
                   -1});
  // Overlapping pooling (the general path) on a mid-network activation.
  cases.push_back({"pool_3x3s2",
                   "max_pool",
                   {32, 64, 56, 56},
                   {},
                   {},
                   PoolParam{3, 3, 2},
                   1});
  return cases;
}

double ForwardFlops(const Case& c) {
  if (c.layer != "conv") return 0;
  const Shape out = ConvOutputShape("conv", c.x, c.w, {c.w[0]}, c.conv).value();
  return 2.0 * static_cast<double>(c.x[0] * c.w[0] * c.x[1] * c.w[2] * c.w[3] *
                                   out[2] * out[3]);
}

void RunCase(benchmark::State& state, const Case& c, DType dtype, bool backward,
             Impl impl) {
  LayerSpec spec;
  spec.name = c.layer;
  spec.conv = c.conv;
  spec.pool = c.pool;
  TensorMap inputs;
  inputs.emplace("x", Tensor::RandomNormal(dtype, c.x, 1).value());
  if (c.layer == "conv") {
    inputs.emplace("w", Tensor::RandomNormal(dtype, c.w, 2).value());
    inputs.emplace("b", Tensor::RandomNormal(dtype, {c.w[0]}, 3).value());
  }
  const absl::StatusOr<TensorDesc> out = InferOutput(spec, DescsOf(inputs));
  if (!out.ok()) {
    state.SkipWithError(std::string(out.status().message()).c_str());
    return;
  }
  const Tensor dout = Tensor::RandomNormal(dtype, out->shape, 4).value();

  // One call: returns the implementation that ran. Results are destroyed
  // inside the timed loop, as a server frees them after replying.
  auto call = [&]() -> absl::StatusOr<std::string> {
    ComputeSlot slot;
    if (backward) {
      absl::StatusOr<BackwardResult> r = Backward(spec, impl, inputs, dout);
      if (!r.ok()) return r.status();
      return std::move(r->impl_name);
    }
    absl::StatusOr<ForwardResult> r = Forward(spec, impl, inputs);
    if (!r.ok()) return r.status();
    return std::move(r->impl_name);
  };

  // An untimed first call warms caches and the fast paths' primitive
  // caches. The naive loops have nothing to warm and take seconds on the
  // big cases, so they skip it.
  absl::StatusOr<std::string> impl_name = std::string(ImplName(impl));
  if (impl == Impl::kFast) impl_name = call();
  if (!impl_name.ok()) {
    state.SkipWithError(std::string(impl_name.status().message()).c_str());
    return;
  }

  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    absl::StatusOr<std::string> r = call();
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(r);
  }

  // Wall time measured here rather than as rate counters: an inverted rate
  // would print as "seconds" in the console table.
  const double ms_per_call = std::chrono::duration<double, std::milli>(
                                 std::chrono::steady_clock::now() - start)
                                 .count() /
                             static_cast<double>(state.iterations());

  state.SetLabel(*impl_name);
  state.counters["ms"] = ms_per_call;
  const double flops = ForwardFlops(c) * (backward ? 2 : 1);
  if (flops > 0) state.counters["GFLOP/s"] = flops * 1e-6 / ms_per_call;
}

double Min(const std::vector<double>& v) {
  return *std::min_element(v.begin(), v.end());
}

void RegisterAll() {
  for (const Case& c : Cases()) {
    for (DType dtype : {DType::kFloat32, DType::kFloat64}) {
      for (bool backward : {false, true}) {
        for (Impl impl : {Impl::kNaive, Impl::kFast}) {
          if (impl == Impl::kNaive && c.naive_iterations < 0) continue;
          const std::string name = absl::StrCat(
              c.name, "/", dtype == DType::kFloat32 ? "f32" : "f64", "/",
              backward ? "bwd" : "fwd", "/", ImplName(impl));
          benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(
              name.c_str(), [c, dtype, backward, impl](benchmark::State& s) {
                RunCase(s, c, dtype, backward, impl);
              });
          // "min" beside Google Benchmark's mean/median/stddev/cv: on a
          // shared machine the fastest repetition is the least disturbed.
          b->UseRealTime()->Unit(benchmark::kMillisecond);
          b->ComputeStatistics("min", Min);
          if (impl == Impl::kNaive && c.naive_iterations > 0) {
            b->Iterations(c.naive_iterations);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace layerserve

int main(int argc, char** argv) {
  layerserve::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("layerserve_threads",
                              std::to_string(layerserve::MaxThreads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
