// `layerctl notebook`: the seed notebook (CNN layers: conv and max-pool
// forward/backward, naive vs fast, conv_relu[_pool]) replayed cell by cell
// against a live server, in the notebook's own words, each cell judged
// PASS/FAIL against the thresholds the library tests use (float64). Then
// the seed's "What next?": the course's spatial batch normalization checks
// (per-channel means and stds after a train-mode forward, and the gradient
// check of dx, dgamma and dbeta).
//
// Random inputs are drawn client-side exactly as the other subcommands draw
// them, so any cell can be replayed alone: e.g. In [15] is
//   layerctl gradcheck --layer conv --stride 1 --pad 1 --impl naive --seed S
//       x=randn:4,3,5,5 w=randn:2,3,3,3 b=randn:2 dout=randn:4,2,5,5
// The spatial batchnorm cells use the course's shifted and scaled inputs
// (x = 4 * randn + 10), which no generator spells, drawn from the streams
// sbn_x, sbn_gamma, sbn_beta and sbn_dout under --seed.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli.h"
#include "client/cli_common.h"
#include "client/cli_output.h"
#include "client/generators.h"
#include "lib/registry.h"
#include "lib/status_macros.h"
#include "proto/convert.h"

namespace layerserve::client {
namespace {

// The seed's thresholds (tests/lib/seed_data.h has the same numbers): its
// correct_out vectors carry 8 decimals, so a correct layer lands at ~2e-8
// (conv) and ~4e-8 (pool); its gradient checks printed ~1e-9 (conv), ~1e-12
// (pool) and up to 8e-8 (conv_relu dx).
constexpr double kVectorTol = 5e-8;
constexpr double kConvGradTol = 1e-7;
constexpr double kPoolGradTol = 1e-10;
constexpr double kCompositeGradTol = 1e-6;
// Naive vs fast conv, float64 (tests/fast/tolerances.h): judged by the
// scaled error max|naive - fast| / max|naive| per tensor, not by the seed's
// per-element rel_error, which explodes on elements that cancel to nearly
// zero although both sides are right to the last bit of the terms (the
// seed's own data gave 2.8e-11; other random data gives 1e-9 on a dx
// element of 9e-8 whose terms are ~5). The rel_error is still printed, in
// the notebook's words. Max pooling only selects values: exactly equal.
constexpr double kNaiveVsFastScaledTol = 1e-10;
// Spatial batchnorm, float64. After a train-mode forward each channel's
// mean is beta up to rounding (~1e-15 for values ~10), and its std is
// gamma * sqrt(var / (var + eps)): with eps = 1e-5 and the course's
// x = 4 * randn + 10 (var ~16) that is 3e-7 below gamma. Gradient checks
// of a correct batchnorm print ~1e-9..1e-11 (the course asks for ~1e-8).
constexpr double kBatchnormMeanAbsTol = 1e-10;
constexpr double kBatchnormStdRelTol = 1e-4;
constexpr double kBatchnormGradTol = 1e-5;

// In [14]'s correct_out, shape (2, 3, 2, 2).
constexpr double kConvCorrectOut[] = {
    -0.08759809, -0.10987781, -0.18387192, -0.2109216,   //
    0.21027089,  0.21661097,  0.22847626,  0.23004637,   //
    0.50813986,  0.54309974,  0.64082444,  0.67101435,   //
    -0.98053589, -1.03143541, -1.19128892, -1.24695841,  //
    0.69108355,  0.66880383,  0.59480972,  0.56776003,   //
    2.36270298,  2.36904306,  2.38090835,  2.38247847};

// In [16]'s correct_out, shape (2, 3, 2, 2). The notebook's literal misses
// two opening brackets in sample 0; these 24 numbers are the right ones
// (the 2x2 max of linspace(-0.3, 0.4, 96).reshape(2, 3, 4, 4)).
constexpr double kPoolCorrectOut[] = {
    -0.26315789, -0.24842105, -0.20421053, -0.18947368,  //
    -0.14526316, -0.13052632, -0.08631579, -0.07157895,  //
    -0.02736842, -0.01263158, 0.03157895,  0.04631579,   //
    0.09052632,  0.10526316,  0.14947368,  0.16421053,   //
    0.20842105,  0.22315789,  0.26736842,  0.28210526,   //
    0.32631579,  0.34105263,  0.38526316,  0.4};

// One number a cell measured; `judged` ones must be <= threshold.
struct Check {
  std::string what;  // "dx error"
  double value = 0;
  bool judged = true;
  double threshold = 0;
};

struct Cell {
  std::string label;     // "In [14]"
  std::string name;      // "conv_forward_naive"
  double threshold = 0;  // for the checks this cell judges
  bool pass = false;
  std::vector<Check> checks;
  std::string implementation;
  std::string error;  // an RPC or data error; the cell fails
};

class Notebook {
 public:
  Notebook(LayerClient& client, uint64_t seed, int repeats, std::ostream& out)
      : client_(client), seed_(seed), repeats_(repeats), out_(out) {}

  std::vector<Cell> Run() {
    std::vector<Cell> cells;
    cells.push_back(RunCell("In [14]", "conv_forward_naive", kVectorTol,
                            &Notebook::ConvForward));
    cells.push_back(RunCell("In [15]", "conv_backward_naive", kConvGradTol,
                            &Notebook::ConvBackward));
    cells.push_back(RunCell("In [16]", "max_pool_forward_naive", kVectorTol,
                            &Notebook::PoolForward));
    cells.push_back(RunCell("In [17]", "max_pool_backward_naive", kPoolGradTol,
                            &Notebook::PoolBackward));
    cells.push_back(RunCell("In [2]", "conv_fast", kNaiveVsFastScaledTol,
                            &Notebook::ConvFast));
    cells.push_back(RunCell("In [3]", "pool_fast", 0, &Notebook::PoolFast));
    cells.push_back(RunCell("In [4]", "conv_relu_pool", kCompositeGradTol,
                            &Notebook::ConvReluPool));
    cells.push_back(
        RunCell("In [5]", "conv_relu", kCompositeGradTol, &Notebook::ConvRelu));
    out_ << "## What next? Spatial batch normalization (the course's next "
            "notebook)\n\n";
    cells.push_back(RunCell("SBN [1]", "spatial_batchnorm_forward",
                            kBatchnormStdRelTol,
                            &Notebook::SpatialBatchnormForward));
    cells.push_back(RunCell("SBN [2]", "spatial_batchnorm_backward",
                            kBatchnormGradTol,
                            &Notebook::SpatialBatchnormBackward));
    return cells;
  }

 private:
  using CellFn = absl::Status (Notebook::*)(Cell&);

  Cell RunCell(absl::string_view label, absl::string_view name,
               double threshold, CellFn fn) {
    Cell cell;
    cell.label = std::string(label);
    cell.name = std::string(name);
    cell.threshold = threshold;
    out_ << cell.label << ": " << cell.name << "\n";
    absl::Status st = (this->*fn)(cell);
    if (!st.ok()) {
      cell.error =
          absl::StrCat(absl::StatusCodeToString(st.code()), ": ", st.message());
      out_ << "ERROR " << cell.error << "\n";
      cell.pass = false;
    } else {
      // NaN never passes (every comparison with it is false).
      cell.pass = false;
      const Check* worst = nullptr;
      double worst_ratio = -1;
      for (const Check& c : cell.checks) {
        if (!c.judged) continue;
        if (worst == nullptr) cell.pass = true;
        if (!(c.value <= c.threshold)) cell.pass = false;
        const double ratio =
            c.threshold > 0 ? c.value / c.threshold : (c.value > 0 ? 1e300 : 0);
        if (!(ratio <= worst_ratio)) {
          worst_ratio = ratio;
          worst = &c;
        }
      }
      out_ << (cell.pass ? "PASS" : "FAIL");
      if (worst != nullptr) {
        const bool ok = worst->value <= worst->threshold;
        out_ << "  (" << worst->what << " " << PyRepr(worst->value)
             << (ok ? " <= " : " > ") << PyRepr(worst->threshold);
      } else {
        out_ << "  (nothing was checked";
      }
      if (!cell.implementation.empty()) {
        out_ << "; implementation " << cell.implementation;
      }
      out_ << ")\n";
    }
    out_ << "\n";
    return cell;
  }

  absl::StatusOr<Tensor> Randn(absl::string_view name, Shape shape) {
    return Tensor::RandomNormal(DType::kFloat64, std::move(shape),
                                DerivedSeed(seed_, name));
  }
  static absl::StatusOr<Tensor> Linspace(Shape shape, double a, double b) {
    return Tensor::Linspace(DType::kFloat64, std::move(shape), a, b);
  }
  static absl::StatusOr<Tensor> Literal(const double* v, Shape shape) {
    LS_ASSIGN_OR_RETURN(Tensor t, Tensor::Zeros(DType::kFloat64, shape));
    for (int64_t i = 0; i < t.size(); ++i) t.SetFlat(i, v[i]);
    return t;
  }
  // The course's bn_param = {'mode': 'train'}: eps and momentum are left
  // to the server's defaults, as layerctl does without --eps/--momentum.
  static void ToWire(const LayerSpec& spec, v1::LayerSpec* proto) {
    LayerSpecToProto(spec, proto);
    if (proto->has_bn_param()) {
      proto->mutable_bn_param()->clear_eps();
      proto->mutable_bn_param()->clear_momentum();
    }
  }
  static LayerSpec Spec(absl::string_view layer, ConvParam conv,
                        PoolParam pool = {}) {
    LayerSpec spec;
    spec.name = std::string(layer);
    spec.conv = conv;
    spec.pool = pool;
    return spec;
  }

  // Forward with the naive layer, rel_error against the seed's vector.
  absl::Status ForwardVsLiteral(const LayerSpec& spec, TensorMap inputs,
                                const double* expected, Cell& cell) {
    v1::ForwardRequest req;
    LayerSpecToProto(spec, req.mutable_layer());
    req.set_implementation(v1::NAIVE);
    TensorMapToProto(inputs, req.mutable_inputs());
    LS_ASSIGN_OR_RETURN(v1::ForwardResponse resp, client_.Forward(req));
    auto it = resp.outputs().find("out");
    if (it == resp.outputs().end()) {
      return absl::DataLossError("the response has no outputs[\"out\"]");
    }
    LS_ASSIGN_OR_RETURN(Tensor out, FromWire(it->second, "outputs[\"out\"]"));
    LS_ASSIGN_OR_RETURN(Tensor want, Literal(expected, {2, 3, 2, 2}));
    LS_ASSIGN_OR_RETURN(double diff, RelError(out, want));
    cell.implementation = resp.implementation_name();
    cell.checks.push_back({"difference", diff, true, cell.threshold});
    out_ << "difference:  " << PyRepr(diff) << "\n";
    return absl::OkStatus();
  }

  // GradCheck with an explicit dout; prints "dx error: ..." per input.
  absl::Status GradCheck(const LayerSpec& spec, v1::Implementation impl,
                         TensorMap inputs, const Tensor& dout, Cell& cell) {
    v1::GradCheckRequest req;
    ToWire(spec, req.mutable_layer());
    req.set_implementation(impl);
    TensorMapToProto(inputs, req.mutable_inputs());
    TensorToProto(dout, req.mutable_dout());
    req.set_seed(seed_);
    LS_ASSIGN_OR_RETURN(v1::GradCheckResponse resp, client_.GradCheck(req));
    cell.implementation = resp.implementation_name();
    for (const v1::GradCheckResult& r : resp.results()) {
      const std::string what = absl::StrCat("d", r.input(), " error");
      cell.checks.push_back({what, r.rel_error(), true, cell.threshold});
      out_ << what << ":  " << PyRepr(r.rel_error()) << "\n";
    }
    // One result per differentiable input (labels and running statistics
    // get none).
    size_t expected = inputs.size();
    if (absl::StatusOr<const LayerDef*> def = FindLayer(spec.name); def.ok()) {
      expected = (*def)->grad_inputs.size();
    }
    if (resp.results_size() != static_cast<int>(expected)) {
      return absl::DataLossError(absl::StrCat("expected ", expected,
                                              " gradient check results, got ",
                                              resp.results_size()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::CompareResponse> Compare(const LayerSpec& spec,
                                              const TensorMap& inputs,
                                              const Tensor& dout) {
    v1::CompareRequest req;
    LayerSpecToProto(spec, req.mutable_layer());
    TensorMapToProto(inputs, req.mutable_inputs());
    TensorToProto(dout, req.mutable_dout());
    req.set_seed(seed_);
    req.set_repeats(repeats_);
    return client_.Compare(req);
  }

  // In [14].
  absl::Status ConvForward(Cell& cell) {
    TensorMap in;
    LS_ASSIGN_OR_RETURN(in["x"], Linspace({2, 3, 4, 4}, -0.1, 0.5));
    LS_ASSIGN_OR_RETURN(in["w"], Linspace({3, 3, 4, 4}, -0.2, 0.3));
    LS_ASSIGN_OR_RETURN(in["b"], Linspace({3}, -0.1, 0.2));
    out_ << "Testing conv_forward_naive\n";
    return ForwardVsLiteral(Spec("conv", {2, 1}), std::move(in),
                            kConvCorrectOut, cell);
  }

  // In [15].
  absl::Status ConvBackward(Cell& cell) {
    TensorMap in;
    LS_ASSIGN_OR_RETURN(in["x"], Randn("x", {4, 3, 5, 5}));
    LS_ASSIGN_OR_RETURN(in["w"], Randn("w", {2, 3, 3, 3}));
    LS_ASSIGN_OR_RETURN(in["b"], Randn("b", {2}));
    LS_ASSIGN_OR_RETURN(Tensor dout, Randn("dout", {4, 2, 5, 5}));
    out_ << "Testing conv_backward_naive function\n";
    return GradCheck(Spec("conv", {1, 1}), v1::NAIVE, std::move(in), dout,
                     cell);
  }

  // In [16].
  absl::Status PoolForward(Cell& cell) {
    TensorMap in;
    LS_ASSIGN_OR_RETURN(in["x"], Linspace({2, 3, 4, 4}, -0.3, 0.4));
    out_ << "Testing max_pool_forward_naive function:\n";
    return ForwardVsLiteral(Spec("max_pool", {}, {2, 2, 2}), std::move(in),
                            kPoolCorrectOut, cell);
  }

  // In [17].
  absl::Status PoolBackward(Cell& cell) {
    TensorMap in;
    LS_ASSIGN_OR_RETURN(in["x"], Randn("x", {3, 2, 8, 8}));
    LS_ASSIGN_OR_RETURN(Tensor dout, Randn("dout", {3, 2, 4, 4}));
    out_ << "Testing max_pool_backward_naive function:\n";
    return GradCheck(Spec("max_pool", {}, {2, 2, 2}), v1::NAIVE, std::move(in),
                     dout, cell);
  }

  // In [2]: naive vs fast conv on the seed's benchmark shapes.
  absl::Status ConvFast(Cell& cell) {
    TensorMap in;
    LS_ASSIGN_OR_RETURN(in["x"], Randn("x", {100, 3, 31, 31}));
    LS_ASSIGN_OR_RETURN(in["w"], Randn("w", {25, 3, 3, 3}));
    LS_ASSIGN_OR_RETURN(in["b"], Randn("b", {25}));
    LS_ASSIGN_OR_RETURN(Tensor dout, Randn("dout", {100, 25, 16, 16}));
    const LayerSpec spec = Spec("conv", {2, 1});
    LS_ASSIGN_OR_RETURN(v1::CompareResponse r, Compare(spec, in, dout));
    cell.implementation = r.fast_implementation_name();
    out_ << "Testing conv_forward_fast:\n"
         << absl::StrFormat("Naive: %fs\nFast: %fs\nSpeedup: %fx\n",
                            r.naive_forward_seconds(), r.fast_forward_seconds(),
                            r.forward_speedup())
         << "Difference:  " << PyRepr(r.output_rel_error()) << "\n\n"
         << "Testing conv_backward_fast:\n"
         << absl::StrFormat("Naive: %fs\nFast: %fs\nSpeedup: %fx\n",
                            r.naive_backward_seconds(),
                            r.fast_backward_seconds(), r.backward_speedup());
    cell.checks.push_back({"difference", r.output_rel_error(), false, 0});
    LS_RETURN_IF_ERROR(GradDifferences(r, {"dx", "dw", "db"}, false, cell));

    // The verdict: the scaled error of every tensor (see the tolerance).
    out_ << "scaled difference max|naive - fast| / max|naive|: out "
         << absl::StrFormat("%.3g", r.output_scaled_error());
    cell.checks.push_back({"out scaled difference", r.output_scaled_error(),
                           true, cell.threshold});
    for (const char* name : {"dx", "dw", "db"}) {
      auto it = r.grad_scaled_errors().find(name);
      if (it == r.grad_scaled_errors().end()) {
        return absl::DataLossError(absl::StrCat(
            "the response has no grad_scaled_errors[\"", name, "\"]"));
      }
      cell.checks.push_back({absl::StrCat(name, " scaled difference"),
                             it->second, true, cell.threshold});
      out_ << " " << name << " " << absl::StrFormat("%.3g", it->second);
    }
    out_ << "\n";
    return absl::OkStatus();
  }

  // In [3]: naive vs fast max pool; the results must be identical.
  absl::Status PoolFast(Cell& cell) {
    TensorMap in;
    LS_ASSIGN_OR_RETURN(in["x"], Randn("x", {100, 3, 32, 32}));
    LS_ASSIGN_OR_RETURN(Tensor dout, Randn("dout", {100, 3, 16, 16}));
    LS_ASSIGN_OR_RETURN(v1::CompareResponse r,
                        Compare(Spec("max_pool", {}, {2, 2, 2}), in, dout));
    cell.implementation = r.fast_implementation_name();
    out_ << "Testing pool_forward_fast:\n"
         << absl::StrFormat("Naive: %fs\nfast: %fs\nspeedup: %fx\n",
                            r.naive_forward_seconds(), r.fast_forward_seconds(),
                            r.forward_speedup())
         << "difference:  " << PyRepr(r.output_rel_error()) << "\n\n"
         << "Testing pool_backward_fast:\n"
         << absl::StrFormat("Naive: %fs\nfast: %fs\nspeedup: %fx\n",
                            r.naive_backward_seconds(),
                            r.fast_backward_seconds(), r.backward_speedup());
    cell.checks.push_back(
        {"difference", r.output_rel_error(), true, cell.threshold});
    return GradDifferences(r, {"dx"}, true, cell);
  }

  absl::Status GradDifferences(const v1::CompareResponse& r,
                               const std::vector<std::string>& grads,
                               bool judged, Cell& cell) {
    for (const std::string& g : grads) {
      auto it = r.grad_rel_errors().find(g);
      if (it == r.grad_rel_errors().end()) {
        return absl::DataLossError(
            absl::StrCat("the response has no grad_rel_errors[\"", g, "\"]"));
      }
      const std::string what = absl::StrCat(g, " difference");
      cell.checks.push_back({what, it->second, judged, cell.threshold});
      out_ << what << ":  " << PyRepr(it->second) << "\n";
    }
    return absl::OkStatus();
  }

  // In [4]: the cascaded layer, fast implementation (as in the seed).
  absl::Status ConvReluPool(Cell& cell) {
    TensorMap in;
    LS_ASSIGN_OR_RETURN(in["x"], Randn("x", {2, 3, 16, 16}));
    LS_ASSIGN_OR_RETURN(in["w"], Randn("w", {3, 3, 3, 3}));
    LS_ASSIGN_OR_RETURN(in["b"], Randn("b", {3}));
    LS_ASSIGN_OR_RETURN(Tensor dout, Randn("dout", {2, 3, 8, 8}));
    out_ << "Testing conv_relu_pool\n";
    return GradCheck(Spec("conv_relu_pool", {1, 1}, {2, 2, 2}), v1::FAST,
                     std::move(in), dout, cell);
  }

  // In [5].
  absl::Status ConvRelu(Cell& cell) {
    TensorMap in;
    LS_ASSIGN_OR_RETURN(in["x"], Randn("x", {2, 3, 8, 8}));
    LS_ASSIGN_OR_RETURN(in["w"], Randn("w", {3, 3, 3, 3}));
    LS_ASSIGN_OR_RETURN(in["b"], Randn("b", {3}));
    LS_ASSIGN_OR_RETURN(Tensor dout, Randn("dout", {2, 3, 8, 8}));
    out_ << "Testing conv_relu:\n";
    return GradCheck(Spec("conv_relu", {1, 1}), v1::FAST, std::move(in), dout,
                     cell);
  }

  // scale * randn + shift, float64.
  absl::StatusOr<Tensor> ScaledRandn(absl::string_view name, Shape shape,
                                     double scale, double shift) {
    LS_ASSIGN_OR_RETURN(Tensor t, Randn(name, std::move(shape)));
    for (int64_t i = 0; i < t.size(); ++i) {
      t.SetFlat(i, scale * t.GetFlat(i) + shift);
    }
    return t;
  }
  static absl::StatusOr<Tensor> Vector(const std::vector<double>& v) {
    return Literal(v.data(), {static_cast<int64_t>(v.size())});
  }
  // The inputs of spatial_batchnorm; the running statistics only matter in
  // test mode, and are the course's starting values.
  static absl::Status AddRunningStats(int64_t channels, TensorMap& in) {
    LS_ASSIGN_OR_RETURN(in["running_mean"],
                        Tensor::Zeros(DType::kFloat64, {channels}));
    LS_ASSIGN_OR_RETURN(in["running_var"],
                        Tensor::Zeros(DType::kFloat64, {channels}));
    return absl::OkStatus();
  }

  // Per-channel mean and (population, numpy's default) std of an NCHW
  // tensor: x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3)).
  static void ChannelStats(const Tensor& x, std::vector<double>& mean,
                           std::vector<double>& std) {
    const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
    mean.assign(c, 0);
    std.assign(c, 0);
    for (int64_t ch = 0; ch < c; ++ch) {
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < hw; ++j)
          sum += x.GetFlat((i * c + ch) * hw + j);
      }
      const double m = sum / static_cast<double>(n * hw);
      double sq = 0;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < hw; ++j) {
          const double d = x.GetFlat((i * c + ch) * hw + j) - m;
          sq += d * d;
        }
      }
      mean[ch] = m;
      std[ch] = std::sqrt(sq / static_cast<double>(n * hw));
    }
  }
  // "[9.83, 10.1, 10.4]": Python's list repr.
  static std::string ListRepr(const std::vector<double>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) {
      absl::StrAppend(&s, i == 0 ? "" : ", ", PyRepr(v[i]));
    }
    return s + "]";
  }
  void PrintStats(const Tensor& x, const std::vector<double>& mean,
                  const std::vector<double>& std) {
    out_ << "  Shape:  " << ShapeString(x.shape()) << "\n"
         << "  Means:  " << ListRepr(mean) << "\n"
         << "  Stds:  " << ListRepr(std) << "\n";
  }

  // The course's spatial batchnorm forward check: means and stds per
  // channel before, and after a train-mode forward with trivial and with
  // nontrivial gamma and beta (means should be beta, stds gamma).
  absl::Status SpatialBatchnormForward(Cell& cell) {
    const int64_t kC = 3;
    LS_ASSIGN_OR_RETURN(Tensor x, ScaledRandn("sbn_x", {2, kC, 4, 5}, 4, 10));
    std::vector<double> mean, std;
    ChannelStats(x, mean, std);
    out_ << "Before spatial batch normalization:\n";
    PrintStats(x, mean, std);
    LayerSpec spec;
    spec.name = "spatial_batchnorm";
    spec.bn.mode = BatchnormParam::Mode::kTrain;
    const std::vector<std::pair<std::vector<double>, std::vector<double>>>
        settings = {{{1, 1, 1}, {0, 0, 0}}, {{3, 4, 5}, {6, 7, 8}}};
    for (const auto& [gamma, beta] : settings) {
      TensorMap in;
      in["x"] = x.Clone();
      LS_ASSIGN_OR_RETURN(in["gamma"], Vector(gamma));
      LS_ASSIGN_OR_RETURN(in["beta"], Vector(beta));
      LS_RETURN_IF_ERROR(AddRunningStats(kC, in));
      v1::ForwardRequest req;
      ToWire(spec, req.mutable_layer());
      req.set_implementation(v1::FAST);
      TensorMapToProto(in, req.mutable_inputs());
      LS_ASSIGN_OR_RETURN(v1::ForwardResponse resp, client_.Forward(req));
      cell.implementation = resp.implementation_name();
      auto it = resp.outputs().find("out");
      if (it == resp.outputs().end()) {
        return absl::DataLossError("the response has no outputs[\"out\"]");
      }
      LS_ASSIGN_OR_RETURN(Tensor out, FromWire(it->second, "outputs[\"out\"]"));
      if (out.shape() != x.shape()) {
        return absl::DataLossError(absl::StrCat(
            "outputs[\"out\"] has shape ", ShapeString(out.shape()),
            ", expected ", ShapeString(x.shape())));
      }
      ChannelStats(out, mean, std);
      out_ << "After spatial batch normalization (gamma=" << ListRepr(gamma)
           << ", beta=" << ListRepr(beta) << "):\n";
      PrintStats(out, mean, std);
      double mean_err = 0, std_err = 0;
      for (int64_t c = 0; c < kC; ++c) {
        // NaN-propagating maxima: a NaN must fail the cell.
        const double me = std::abs(mean[c] - beta[c]);
        const double se = std::abs(std[c] / gamma[c] - 1);
        mean_err = std::isnan(me) || me > mean_err ? me : mean_err;
        std_err = std::isnan(se) || se > std_err ? se : std_err;
      }
      const std::string which = absl::StrCat(" (gamma=", ListRepr(gamma), ")");
      cell.checks.push_back({absl::StrCat("max|mean - beta|", which), mean_err,
                             true, kBatchnormMeanAbsTol});
      cell.checks.push_back({absl::StrCat("max|std / gamma - 1|", which),
                             std_err, true, kBatchnormStdRelTol});
    }
    return absl::OkStatus();
  }

  // The course's spatial batchnorm gradient check, train mode.
  absl::Status SpatialBatchnormBackward(Cell& cell) {
    const int64_t kC = 3;
    TensorMap in;
    LS_ASSIGN_OR_RETURN(in["x"], ScaledRandn("sbn_x", {2, kC, 4, 5}, 5, 12));
    LS_ASSIGN_OR_RETURN(in["gamma"], Randn("sbn_gamma", {kC}));
    LS_ASSIGN_OR_RETURN(in["beta"], Randn("sbn_beta", {kC}));
    LS_RETURN_IF_ERROR(AddRunningStats(kC, in));
    LS_ASSIGN_OR_RETURN(Tensor dout, Randn("sbn_dout", {2, kC, 4, 5}));
    LayerSpec spec;
    spec.name = "spatial_batchnorm";
    spec.bn.mode = BatchnormParam::Mode::kTrain;
    out_ << "Spatial batchnorm backward\n";
    return GradCheck(spec, v1::FAST, std::move(in), dout, cell);
  }

  LayerClient& client_;
  uint64_t seed_;
  int repeats_;
  std::ostream& out_;
};

}  // namespace

int RunNotebook(const Args& args) {
  ConnectionFlags conn;
  uint64_t seed = 0;
  int64_t repeats = 3;
  FlagSet flags(
      "layerctl notebook",
      "Replays every cell of the seed notebook (CNN layers) against the "
      "server:\nconv and max-pool forward vs the notebook's vectors, their "
      "gradient checks,\nnaive vs fast on the benchmark shapes with "
      "speedups, and the conv_relu_pool\nand conv_relu gradient checks; "
      "then the course's next step, spatial batch\nnormalization: "
      "per-channel means and stds after a train-mode forward (means\n= "
      "beta, stds = gamma) and its dx/dgamma/dbeta gradient check. All "
      "float64.\nEach cell prints PASS or FAIL; the exit code is 1 if any "
      "cell fails, 3 if\nthe server cannot be reached.",
      "",
      "  layerctl notebook --server 127.0.0.1:50051\n"
      "  ends with a line like 'notebook: 10 passed, 0 failed'");
  AddConnectionFlags(flags, conn, absl::Seconds(300));
  flags.Uint("seed", &seed, "seed of the random inputs (randn per name)");
  flags.Int("repeats", &repeats,
            "timed runs per pass in the naive-vs-fast cells (best reported)");
  if (std::optional<int> rc = ParseFlags(flags, args, "notebook")) return *rc;
  if (repeats < 1 || repeats > 100) {
    return ReportError("notebook",
                       absl::InvalidArgumentError(absl::StrCat(
                           "--repeats: expected 1..100, got ", repeats)),
                       false);
  }
  absl::StatusOr<std::unique_ptr<LayerClient>> client = ConnectFromFlags(conn);
  if (!client.ok()) return ReportError("notebook", client.status(), false);
  // One quick call first: an unreachable server is one line, not 10
  // failures.
  {
    ConnectionFlags probe = conn;
    probe.timeout = std::min(conn.timeout, absl::Seconds(10));
    absl::StatusOr<std::unique_ptr<LayerClient>> quick =
        ConnectFromFlags(probe);
    absl::StatusOr<std::string> health =
        quick.ok() ? (*quick)->Health() : quick.status();
    if (!health.ok()) {
      return ReportError("notebook", health.status(), true, &conn);
    }
  }

  std::ostringstream discard;
  std::ostream& out = conn.json ? discard : std::cout;
  out << "layerctl notebook: the seed notebook against " << conn.server
      << " (float64, seed " << seed << ")\n\n";
  Notebook notebook(**client, seed, static_cast<int>(repeats), out);
  const std::vector<Cell> cells = notebook.Run();
  int passed = 0;
  for (const Cell& c : cells) passed += c.pass ? 1 : 0;
  const int failed = static_cast<int>(cells.size()) - passed;

  if (conn.json) {
    JsonWriter json;
    json.BeginObject().Key("server").String(conn.server);
    json.Key("seed").Int(static_cast<int64_t>(seed));
    json.Key("cells").BeginArray();
    for (const Cell& c : cells) {
      json.BeginObject().Key("cell").String(c.label);
      json.Key("name").String(c.name);
      json.Key("pass").Bool(c.pass);
      json.Key("threshold").Number(c.threshold);
      json.Key("implementation").String(c.implementation);
      json.Key("checks").BeginArray();
      for (const Check& k : c.checks) {
        json.BeginObject().Key("what").String(k.what);
        json.Key("value").Number(k.value).Key("judged").Bool(k.judged);
        if (k.judged) json.Key("threshold").Number(k.threshold);
        json.EndObject();
      }
      json.EndArray();
      if (!c.error.empty()) json.Key("error").String(c.error);
      json.EndObject();
    }
    json.EndArray().Key("passed").Int(passed).Key("failed").Int(failed);
    json.EndObject();
    std::cout << json.str() << "\n";
  } else {
    std::cout << "notebook: " << passed << " passed, " << failed << " failed\n";
  }
  return failed == 0 ? kExitOk : kExitCheckFailed;
}

}  // namespace layerserve::client
