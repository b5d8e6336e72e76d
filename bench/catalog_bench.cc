// catalog_bench: naive vs fast for the rest of the catalog (affine,
// batchnorm, spatial_batchnorm, dropout, softmax_loss, svm_loss) through the
// public registry API, the way the server calls them. Inputs are built once,
// outside the timed loop; every timed call runs under a ComputeSlot, as one
// RPC's work would.
//
// Benchmark names are <case>/<dtype>/<direction>/<impl>, e.g.
// affine_fc/f32/bwd/fast; bench/compare_torch_catalog.py parses them.
// Counters:
//   ms       wall-clock milliseconds per call
//   best_ms  the fastest single call: on a shared machine, where another
//            process can hold a core for milliseconds, the one number that
//            neighbours do not inflate (rates below use ms)
//   GFLOP/s  affine: forward 2*N*D*M, backward twice that (dx and dw; db is
//            noise)
//   GB/s     the memory-bound layers: the least traffic a call needs, each
//            input tensor read once and each output written once (e.g.
//            batchnorm forward: x in, out out; backward: x, dout in, dx out)
// The label is the implementation that ran ("onednn:brg:avx512_core", ...).
//
//   catalog_bench --benchmark_repetitions=5
//                 --benchmark_report_aggregates_only=true
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "lib/registry.h"
#include "lib/tensor.h"
#include "lib/threading.h"

namespace layerserve {
namespace {

struct Case {
  std::string name;
  std::string layer;
  Shape x;
  int64_t outputs = 0;  // affine: M
  // Naive timing: 0 lets Google Benchmark pick the iteration count; n > 0
  // runs exactly n iterations (the naive code takes seconds on big cases);
  // -1 skips naive.
  int64_t naive_iterations = 0;
};

std::vector<Case> Cases() {
  return {
      // A CIFAR-10 fully connected layer: 3*32*32 features -> 1024.
      {"affine_fc", "affine", {128, 3072}, 1024, 1},
      // A wide hidden layer; 17 GFLOP per forward call, naive would take
      // minutes.
      {"affine_wide", "affine", {512, 4096}, 4096, -1},
      {"batchnorm", "batchnorm", {128, 1024}, 0, 0},
      // A mid-network activation (the conv issue's 3x3 layer's output).
      {"spatial_bn", "spatial_batchnorm", {32, 64, 56, 56}, 0, 1},
      {"dropout", "dropout", {32, 64, 56, 56}, 0, 1},
      // ImageNet-sized scores.
      {"softmax", "softmax_loss", {4096, 1000}, 0, 1},
      {"svm", "svm_loss", {4096, 1000}, 0, 1},
  };
}

int64_t Features(const Case& c) {
  int64_t d = 1;
  for (size_t i = 1; i < c.x.size(); ++i) d *= c.x[i];
  return d;
}

double Flops(const Case& c, bool backward) {
  if (c.layer != "affine") return 0;
  return 2.0 * static_cast<double>(c.x[0] * Features(c) * c.outputs) *
         (backward ? 2 : 1);
}

// Least bytes moved per call (see the header comment).
double Bytes(const Case& c, DType dtype, bool backward) {
  if (c.layer == "affine") return 0;
  double elems = 1;
  for (int64_t d : c.x) elems *= static_cast<double>(d);
  const bool loss = c.layer == "softmax_loss" || c.layer == "svm_loss";
  const bool bn = c.layer == "batchnorm" || c.layer == "spatial_batchnorm";
  // Tensors of x's size: forward reads x and writes out (a loss writes a
  // scalar); backward reads dout and writes dx, batchnorm also reads x, a
  // loss reads x instead of its scalar dout.
  const double tensors = backward ? (bn ? 3 : 2) : (loss ? 1 : 2);
  return tensors * elems * static_cast<double>(ItemSize(dtype));
}

TensorMap Inputs(const Case& c, DType dtype) {
  TensorMap in;
  in.emplace("x", Tensor::RandomNormal(dtype, c.x, 1).value());
  if (c.layer == "affine") {
    in.emplace(
        "w", Tensor::RandomNormal(dtype, {Features(c), c.outputs}, 2).value());
    in.emplace("b", Tensor::RandomNormal(dtype, {c.outputs}, 3).value());
  } else if (c.layer == "batchnorm" || c.layer == "spatial_batchnorm") {
    const int64_t ch = c.x[1];
    in.emplace("gamma", Tensor::RandomNormal(dtype, {ch}, 2).value());
    in.emplace("beta", Tensor::RandomNormal(dtype, {ch}, 3).value());
    in.emplace("running_mean", Tensor::Zeros(dtype, {ch}).value());
    Tensor var = Tensor::Zeros(dtype, {ch}).value();
    var.Fill(1.0);
    in.emplace("running_var", std::move(var));
  } else if (c.layer == "softmax_loss" || c.layer == "svm_loss") {
    Tensor y = Tensor::Zeros(DType::kInt64, {c.x[0]}).value();
    std::mt19937_64 rng(4);
    for (int64_t i = 0; i < c.x[0]; ++i) {
      y.SetFlat(i, static_cast<double>(rng() % static_cast<uint64_t>(c.x[1])));
    }
    in.emplace("y", std::move(y));
  }
  return in;
}

void RunCase(benchmark::State& state, const Case& c, DType dtype, bool backward,
             Impl impl) {
  LayerSpec spec;
  spec.name = c.layer;
  spec.bn.mode = BatchnormParam::Mode::kTrain;
  spec.dropout = DropoutParam{0.5, true, 1};
  const TensorMap inputs = Inputs(c, dtype);
  const absl::StatusOr<TensorDesc> out = InferOutput(spec, DescsOf(inputs));
  if (!out.ok()) {
    state.SkipWithError(std::string(out.status().message()).c_str());
    return;
  }
  const Tensor dout = Tensor::RandomNormal(dtype, out->shape, 5).value();

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

  // An untimed first call warms caches and the primitive caches; the naive
  // loops have nothing to warm and take seconds on the big cases.
  absl::StatusOr<std::string> impl_name = std::string(ImplName(impl));
  if (impl == Impl::kFast) impl_name = call();
  if (!impl_name.ok()) {
    state.SkipWithError(std::string(impl_name.status().message()).c_str());
    return;
  }

  const auto start = std::chrono::steady_clock::now();
  double best_ms = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::string> r = call();
    const double ms = std::chrono::duration<double, std::milli>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(r);
    best_ms = best_ms == 0 ? ms : std::min(best_ms, ms);
  }
  // Wall time measured here rather than as rate counters: an inverted rate
  // would print as "seconds" in the console table.
  const double ms_per_call = std::chrono::duration<double, std::milli>(
                                 std::chrono::steady_clock::now() - start)
                                 .count() /
                             static_cast<double>(state.iterations());
  state.SetLabel(*impl_name);
  state.counters["ms"] = ms_per_call;
  state.counters["best_ms"] = best_ms;
  const double flops = Flops(c, backward);
  if (flops > 0) state.counters["GFLOP/s"] = flops * 1e-6 / ms_per_call;
  const double bytes = Bytes(c, dtype, backward);
  if (bytes > 0) state.counters["GB/s"] = bytes * 1e-6 / ms_per_call;
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
          // "min" beside mean/median/stddev/cv: on a shared machine the
          // fastest repetition is the least disturbed.
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
