// layerctl end to end: every subcommand run as a real process against the
// real layerserve binary on an ephemeral port, checking stdout, --json (parsed
// by Python's json module), files written with --out, and the exit codes and
// one-line errors scripts rely on.
#include <stdlib.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/generators.h"
#include "client/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/tensor.h"
#include "tests/client/subprocess.h"
#include "tests/lib/seed_data.h"

namespace layerserve::testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// The inputs of the seed's conv forward cell (In [14]).
const std::vector<std::string> kSeedConv = {"--layer",
                                            "conv",
                                            "--stride",
                                            "2",
                                            "--pad",
                                            "1",
                                            "x=linspace:-0.1,0.5:2,3,4,4",
                                            "w=linspace:-0.2,0.3:3,3,4,4",
                                            "b=linspace:-0.1,0.2:3"};
// The seed's conv backward cell (In [15]).
const std::vector<std::string> kSeedConvBackward = {
    "--layer",         "conv",
    "--stride",        "1",
    "--pad",           "1",
    "x=randn:4,3,5,5", "w=randn:2,3,3,3",
    "b=randn:2",       "dout=randn:4,2,5,5"};

int Lines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

// Exit `code`, nothing on stdout, one line on stderr holding `fragment`.
void ExpectOneLineError(const RunResult& r, int code,
                        const std::string& fragment);

class LayerctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = ServerProcess::Start(LAYERSERVE_BINARY).release();
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(), 0) << "layerserve did not exit cleanly";
    }
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ASSERT_FALSE(server_->address().empty());
    std::string tmpl = ::testing::TempDir() + "layerctl_e2e_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }

  // layerctl COMMAND --server ADDRESS ARGS...
  static RunResult Layerctl(const std::string& command,
                            std::vector<std::string> args = {}) {
    std::vector<std::string> argv = {LAYERCTL_BINARY, command, "--server",
                                     server_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv);
  }

  // A layerctl run with the given argv (no --server added).
  static RunResult LayerctlRaw(std::vector<std::string> args) {
    args.insert(args.begin(), LAYERCTL_BINARY);
    return RunProcess(args, absl::Seconds(60));
  }

  // Evaluates a Python expression over `d` = json.loads(text).
  static std::string Py(const std::string& json, const std::string& expr) {
    RunResult r = RunProcess(
        {LAYERSERVE_PYTHON, "-c",
         absl::StrCat("import json, sys; d = json.load(sys.stdin); print(",
                      expr, ")")},
        absl::Seconds(30), json);
    EXPECT_EQ(r.exit_code, 0) << "not JSON?\n" << json << "\n" << r.err;
    return std::string(absl::StripTrailingAsciiWhitespace(r.out));
  }

  static std::vector<std::string> With(std::vector<std::string> a,
                                       const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }

  static ServerProcess* server_;
  std::string dir_;
};
ServerProcess* LayerctlTest::server_ = nullptr;

TEST_F(LayerctlTest, HealthSaysServing) {
  RunResult r = Layerctl("health");
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "SERVING\n");
  EXPECT_EQ(r.err, "");

  r = Layerctl("health", {"--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "d['status']"), "SERVING");
  EXPECT_EQ(Py(r.out, "d['server']"), server_->address());
}

TEST_F(LayerctlTest, ListPrintsTheCatalog) {
  RunResult r = Layerctl("list");
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines =
      absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 15u) << r.out;  // a header and 14 layers
  EXPECT_THAT(lines[0], StartsWith("LAYER "));
  EXPECT_THAT(lines[1], AllOf(StartsWith("conv "), HasSubstr("x,w,b"),
                              HasSubstr("conv_param"), HasSubstr("dx,dw,db"),
                              HasSubstr("float32,float64")));
  EXPECT_THAT(r.out, HasSubstr("\nmax_pool "));
  EXPECT_THAT(r.out, HasSubstr("\nconv_relu_pool "));
  // Labels marked with their dtype, extra outputs after the output.
  EXPECT_THAT(lines[11],
              AllOf(StartsWith("softmax_loss "), HasSubstr(" x,y:int64 "),
                    HasSubstr(" loss "), HasSubstr(" dx ")));
  EXPECT_THAT(lines[9],
              AllOf(StartsWith("spatial_batchnorm "),
                    HasSubstr(" x,gamma,beta,running_mean,running_var "),
                    HasSubstr(" bn_param "),
                    HasSubstr(" out(+running_mean,running_var) "),
                    HasSubstr(" dx,dgamma,dbeta ")));
  EXPECT_THAT(lines[10],
              AllOf(StartsWith("dropout "), HasSubstr(" dropout_param "),
                    HasSubstr("probability of KEEPING")));

  r = Layerctl("list", {"--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "','.join(l['name'] for l in d['layers'])"),
            "conv,max_pool,relu,conv_relu,conv_relu_pool,affine,affine_relu,"
            "batchnorm,spatial_batchnorm,dropout,softmax_loss,svm_loss,"
            "conv_batchnorm_relu,affine_batchnorm_relu");
  EXPECT_EQ(Py(r.out, "d['layers'][0]['grads']"), "['dx', 'dw', 'db']");
  EXPECT_EQ(Py(r.out,
               "[(l['label_inputs'], l['output'], l['extra_outputs'], "
               "l['grad_inputs']) for l in d['layers'] if l['name'] in "
               "('softmax_loss', 'spatial_batchnorm')]"),
            "[([], 'out', ['running_mean', 'running_var'], ['x', 'gamma', "
            "'beta']), (['y'], 'loss', [], ['x'])]");
  EXPECT_EQ(Py(r.out, "d['layers'][0]['label_inputs']"), "[]");
}

TEST_F(LayerctlTest, ForwardSeedCellWritesNpy) {
  RunResult r = Layerctl(
      "forward", With(kSeedConv, {"--impl", "naive", "--out", dir_ + "/o"}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, StartsWith("forward conv: implementation naive, "));
  EXPECT_THAT(r.out, HasSubstr("\nout: (2, 3, 2, 2) float64 min -1.24696 max "
                               "2.38248 mean "));
  EXPECT_THAT(r.out, HasSubstr("-> " + dir_ + "/o/out.npy\n"));
  EXPECT_EQ(r.err, "");

  absl::StatusOr<Tensor> out = client::ReadNpy(dir_ + "/o/out.npy");
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->shape(), Shape({2, 3, 2, 2}));
  Tensor want = std::move(Tensor::Zeros(DType::kFloat64, {2, 3, 2, 2})).value();
  for (int64_t i = 0; i < 24; ++i) want.SetFlat(i, SeedConvCorrectOut()[i]);
  EXPECT_LE(RelError(*out, want).value(), kF64VectorTol);

  // numpy reads it too.
  RunResult np = RunProcess(
      {LAYERSERVE_PYTHON, "-c",
       absl::StrCat("import numpy as np; a = np.load('", dir_,
                    "/o/out.npy'); assert a.shape == (2, 3, 2, 2) and "
                    "a.dtype == np.float64; print(round(float(a[1, 2, 1, "
                    "1]), 8))")});
  ASSERT_EQ(np.exit_code, 0) << Describe(np);
  EXPECT_EQ(np.out, "2.38247847\n");
}

TEST_F(LayerctlTest, ForwardJsonAndFloat32NpyInputs) {
  for (const auto& [name, shape] : std::vector<std::pair<std::string, Shape>>{
           {"x", {2, 3, 8, 8}}, {"w", {4, 3, 3, 3}}, {"b", {4}}}) {
    Tensor t =
        std::move(Tensor::RandomNormal(DType::kFloat32, shape, 1)).value();
    ASSERT_TRUE(client::WriteNpy(dir_ + "/" + name + ".npy", t).ok());
  }
  RunResult r =
      Layerctl("forward", {"--layer", "conv", "--pad", "1", "--json",
                           "x=" + dir_ + "/x.npy", "w=" + dir_ + "/w.npy",
                           "b=" + dir_ + "/b.npy"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Lines(r.out), 1);
  EXPECT_EQ(Py(r.out, "d['outputs']['out']['shape']"), "[2, 4, 8, 8]");
  EXPECT_EQ(Py(r.out, "d['outputs']['out']['dtype']"), "float32");
  EXPECT_EQ(Py(r.out, "d['compute_ns'] > 0 and d['round_trip_ns'] > 0"),
            "True");

  // --dtype converts the files.
  r = Layerctl("forward", {"--layer", "conv", "--pad", "1", "--json", "--dtype",
                           "float64", "x=" + dir_ + "/x.npy",
                           "w=" + dir_ + "/w.npy", "b=" + dir_ + "/b.npy"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "d['outputs']['out']['dtype']"), "float64");
}

TEST_F(LayerctlTest, MaxPoolStrideFlagIsThePoolStride) {
  RunResult r = Layerctl(
      "forward", {"--layer", "max_pool", "--pool_height", "3", "--pool_width",
                  "3", "--stride", "1", "x=randn:1,2,5,5", "--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "d['outputs']['out']['shape']"), "[1, 2, 3, 3]");
  // conv_relu_pool: --stride is the conv's, --pool_stride the pool's.
  r = Layerctl("forward",
               {"--layer", "conv_relu_pool", "--stride", "1", "--pad", "1",
                "--pool_stride", "4", "--pool_height", "4", "--pool_width", "4",
                "x=randn:1,3,8,8", "w=randn:2,3,3,3", "b=zeros:2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "d['outputs']['out']['shape']"), "[1, 2, 2, 2]");
}

TEST_F(LayerctlTest, BackwardWritesGradients) {
  RunResult r = Layerctl(
      "backward", With(kSeedConvBackward, {"--seed", "3", "--out", dir_}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("\ndx: (4, 3, 5, 5) float64 min "));
  EXPECT_THAT(r.out, HasSubstr("\ndw: (2, 3, 3, 3) float64 min "));
  EXPECT_THAT(r.out, HasSubstr("\ndb: (2,) float64 min "));
  for (const char* g : {"dx", "dw", "db"}) {
    absl::StatusOr<Tensor> t =
        client::ReadNpy(absl::StrCat(dir_, "/", g, ".npy"));
    ASSERT_TRUE(t.ok()) << t.status();
  }
  // Naive and fast agree on what they wrote.
  r = Layerctl("backward",
               With(kSeedConvBackward, {"--seed", "3", "--impl", "naive",
                                        "--out", dir_ + "/naive"}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  Tensor fast = client::ReadNpy(dir_ + "/dw.npy").value();
  Tensor naive = client::ReadNpy(dir_ + "/naive/dw.npy").value();
  EXPECT_LE(MaxAbsError(fast, naive).value(), 1e-12);

  // Without dout=, the output's shape is inferred and dout is randn.
  r = Layerctl("backward", {"--layer", "relu", "x=randn:3,4", "--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "d['grads']['dx']['shape']"), "[3, 4]");
}

TEST_F(LayerctlTest, GradCheckSeedCell) {
  RunResult r = Layerctl(
      "gradcheck",
      With(kSeedConvBackward,
           {"--impl", "naive", "--max_rel_error", "1e-7", "--out", dir_}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, StartsWith("gradcheck conv: implementation naive\n"));
  EXPECT_THAT(r.out, HasSubstr("\ndx error:  "));
  EXPECT_THAT(r.out, HasSubstr("\ndw error:  "));
  EXPECT_THAT(r.out, HasSubstr("\ndb error:  "));
  EXPECT_EQ(Lines(r.out), 4);
  EXPECT_THAT(r.out, Not(HasSubstr("FAIL")));
  Tensor num = client::ReadNpy(dir_ + "/dx_numeric.npy").value();
  Tensor ana = client::ReadNpy(dir_ + "/dx_analytic.npy").value();
  EXPECT_EQ(num.shape(), Shape({4, 3, 5, 5}));
  EXPECT_LE(RelError(num, ana).value(), kF64ConvGradTol);

  // A threshold nothing meets: exit 1, FAIL printed.
  r = Layerctl("gradcheck",
               With(kSeedConvBackward, {"--max_rel_error", "1e-30", "--json"}));
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_EQ(Py(r.out, "d['pass']"), "False");
  EXPECT_EQ(Py(r.out, "[x['input'] for x in d['results']]"), "['x', 'w', 'b']");
}

TEST_F(LayerctlTest, GradCheckSampledChecksKElementsPerInput) {
  // x has 300 elements, w 54, b 2 (fewer than K: checked whole).
  const std::vector<std::string> conv = {"--layer",         "conv",
                                         "--pad",           "1",
                                         "--num_checks",    "12",
                                         "--seed",          "5",
                                         "x=randn:4,3,5,5", "w=randn:2,3,3,3",
                                         "b=randn:2"};
  RunResult r = Layerctl("gradcheck", With(conv, {"--json"}));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "[x['input'] for x in d['results']]"), "['x', 'w', 'b']");
  EXPECT_EQ(Py(r.out, "[len(x['checked_indices']) for x in d['results']]"),
            "[12, 12, 0]");
  EXPECT_EQ(Py(r.out, "[x['num_checked'] for x in d['results']]"),
            "[12, 12, 2]");
  EXPECT_EQ(Py(r.out, "[x['num_elements'] for x in d['results']]"),
            "[300, 54, 2]");
  // Distinct, ascending, in range; the worst element is one of them.
  EXPECT_EQ(Py(r.out,
               "all(x['checked_indices'] == sorted(set(x['checked_indices'])) "
               "and 0 <= min(x['checked_indices']) and "
               "max(x['checked_indices']) < x['num_elements'] "
               "for x in d['results'][:2])"),
            "True");
  EXPECT_EQ(Py(r.out,
               "[__import__('numpy').ravel_multi_index(x['worst_index'], s) in "
               "x['checked_indices'] for x, s in zip(d['results'][:2], "
               "[(4, 3, 5, 5), (2, 3, 3, 3)])]"),
            "[True, True]");
  EXPECT_EQ(Py(r.out, "max(x['rel_error'] for x in d['results']) < 1e-6"),
            "True");
  const std::string first_x = Py(r.out, "d['results'][0]['checked_indices']");

  // The text form: a count and the first indices as multi-indices.
  r = Layerctl("gradcheck", conv);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const std::vector<std::string> lines = absl::StrSplit(r.out, '\n');
  ASSERT_GE(lines.size(), 7u) << r.out;
  EXPECT_THAT(lines[1], StartsWith("dx error:  "));
  EXPECT_THAT(lines[2], StartsWith("  checked 12 of 300 elements: ("));
  EXPECT_THAT(lines[2], EndsWith(", ... (7 more)"));
  EXPECT_THAT(lines[4], StartsWith("  checked 12 of 54 elements: ("));
  EXPECT_EQ(lines[6], "  checked all 2 elements");
  // The first index shown is the first checked flat index, unraveled.
  int64_t flat = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      absl::StripSuffix(
          absl::StripPrefix(first_x.substr(0, first_x.find(',')), "["), "]"),
      &flat))
      << first_x;
  EXPECT_THAT(lines[2], HasSubstr(absl::StrCat(
                            "elements: (", flat / 75, ", ", flat / 25 % 3, ", ",
                            flat / 5 % 5, ", ", flat % 5, ")")));

  // A negative K is a usage error.
  ExpectOneLineError(
      Layerctl("gradcheck",
               {"--layer", "relu", "--num_checks", "-1", "x=randn:3"}),
      2, "--num_checks: expected 0 (all elements) .. 2147483647, got -1");
}

TEST_F(LayerctlTest, CompareMaxPoolIsExact) {
  RunResult r =
      Layerctl("compare", {"--layer", "max_pool", "--stride", "2",
                           "x=randn:4,3,16,16", "--max_rel_error", "1e-300"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, StartsWith("compare max_pool: naive (naive) vs fast ("));
  EXPECT_THAT(r.out, HasSubstr("difference 0.0\n"));
  EXPECT_THAT(r.out, HasSubstr("\ndx difference:  0.0\n"));
  EXPECT_THAT(r.out, HasSubstr("\nPASS"));

  r = Layerctl("compare",
               {"--layer", "conv", "--pad", "1", "x=randn:2,3,8,8",
                "w=randn:4,3,3,3", "b=randn:4", "--repeats", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "d['repeats']"), "2");
  EXPECT_EQ(Py(r.out, "sorted(d['grad_rel_errors'])"), "['db', 'dw', 'dx']");
  EXPECT_EQ(Py(r.out, "d['output_rel_error'] < 1e-9"), "True");
}

// The inputs of spatial_batchnorm with C channels, but x.
std::vector<std::string> BatchnormInputs(int c) {
  return {absl::StrCat("gamma=linspace:1,3:", c),
          absl::StrCat("beta=linspace:-1,1:", c),
          absl::StrCat("running_mean=zeros:", c),
          absl::StrCat("running_var=linspace:1,1:", c)};
}

TEST_F(LayerctlTest, ForwardSoftmaxLossWithGeneratedLabels) {
  RunResult r = Layerctl("forward", {"--layer", "softmax_loss", "--seed", "4",
                                     "x=randn:16,10", "y=labels:16:10"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, StartsWith("forward softmax_loss: implementation "));
  // The loss prints as a scalar; ~log(10) for random scores.
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n');
  ASSERT_GE(lines.size(), 2u);
  ASSERT_THAT(lines[1], StartsWith("loss: (1,) float64 = ")) << r.out;
  double loss = 0;
  ASSERT_TRUE(absl::SimpleAtod(
      absl::StripPrefix(lines[1], "loss: (1,) float64 = "), &loss));
  EXPECT_GT(loss, 1.0);
  EXPECT_LT(loss, 5.0);

  // --json and --out; --dtype makes x float32 and leaves y int64; numpy
  // recomputes the loss from the same labels (written by us as int64).
  r = Layerctl("forward",
               {"--layer", "softmax_loss", "--seed", "4", "x=randn:16,10",
                "y=labels:16:10", "--json", "--dtype", "float32"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out,
               "(d['outputs']['loss']['dtype'], "
               "d['outputs']['loss']['shape'])"),
            "('float32', [1])");
  const double loss32 = std::stod(Py(r.out, "d['outputs']['loss']['value']"));
  EXPECT_NEAR(loss32, loss, 1e-5);

  absl::StatusOr<TensorMap> in =
      client::MakeTensors({"x=randn:16,10", "y=labels:16:10"}, {}, 4);
  ASSERT_TRUE(in.ok()) << in.status();
  ASSERT_TRUE(client::WriteNpy(dir_ + "/x.npy", in->at("x")).ok());
  ASSERT_TRUE(client::WriteNpy(dir_ + "/y.npy", in->at("y")).ok());
  RunResult np = RunProcess(
      {LAYERSERVE_PYTHON, "-c",
       absl::StrCat("import numpy as np; x = np.load('", dir_,
                    "/x.npy'); y = np.load('", dir_,
                    "/y.npy'); assert y.dtype == np.int64; "
                    "s = x - x.max(1, keepdims=True); "
                    "p = s - np.log(np.exp(s).sum(1, keepdims=True)); "
                    "print(repr(-p[np.arange(16), y].mean()))")});
  ASSERT_EQ(np.exit_code, 0) << Describe(np);
  EXPECT_NEAR(std::stod(np.out), loss, 1e-12);
  // The same labels from the .npy file (numpy-readable int64).
  r = Layerctl("forward", {"--layer", "softmax_loss", "x=" + dir_ + "/x.npy",
                           "y=" + dir_ + "/y.npy"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("\n" + lines[1] + "\n"));

  // backward: dout defaults to 1.0, so dx is the loss's own gradient, whose
  // rows sum to zero.
  r = Layerctl("backward", {"--layer", "softmax_loss", "x=randn:16,10",
                            "y=labels:16:10", "--out", dir_ + "/g"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  Tensor dx = client::ReadNpy(dir_ + "/g/dx.npy").value();
  ASSERT_EQ(dx.shape(), Shape({16, 10}));
  for (int64_t n = 0; n < 16; ++n) {
    double row = 0, neg = 0;
    for (int64_t c = 0; c < 10; ++c) {
      row += dx.GetFlat(n * 10 + c);
      neg += std::min(0.0, dx.GetFlat(n * 10 + c));
    }
    EXPECT_NEAR(row, 0, 1e-15) << n;
    EXPECT_LT(neg, 0) << n;  // -(1 - p_y) / N at the label
  }
  EXPECT_THAT(r.out, Not(HasSubstr("dy")));
}

TEST_F(LayerctlTest, ForwardSpatialBatchnormTrainMode) {
  RunResult r = Layerctl(
      "forward", With({"--layer", "spatial_batchnorm", "--mode", "train",
                       "--seed", "2", "x=randn:4,3,5,5", "--out", dir_},
                      BatchnormInputs(3)));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("\nout: (4, 3, 5, 5) float64 min "));
  EXPECT_THAT(r.out, HasSubstr("\nrunning_mean: (3,) float64 min "));
  EXPECT_THAT(r.out, HasSubstr("\nrunning_var: (3,) float64 min "));
  // Per channel: mean beta, std gamma (the course's check), and the running
  // mean updated with the server's default momentum 0.9.
  RunResult np = RunProcess(
      {LAYERSERVE_PYTHON, "-c",
       absl::StrCat(
           "import numpy as np; o = np.load('", dir_,
           "/out.npy'); rm = np.load('", dir_,
           "/running_mean.npy'); "
           "assert np.allclose(o.mean((0, 2, 3)), [-1, 0, 1], atol=1e-12); "
           "assert np.allclose(o.std((0, 2, 3)), [1, 2, 3], rtol=1e-4); "
           "print(rm.shape, rm.dtype)")});
  ASSERT_EQ(np.exit_code, 0) << Describe(np);
  EXPECT_EQ(np.out, "(3,) float64\n");
  Tensor rm09 = client::ReadNpy(dir_ + "/running_mean.npy").value();

  // --momentum 0 makes the running mean the batch mean: 10x the update.
  r = Layerctl("forward", With({"--layer", "spatial_batchnorm", "--mode",
                                "train", "--momentum", "0", "--seed", "2",
                                "x=randn:4,3,5,5", "--out", dir_ + "/m0"},
                               BatchnormInputs(3)));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  Tensor rm0 = client::ReadNpy(dir_ + "/m0/running_mean.npy").value();
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_NEAR(rm0.GetFlat(c), 10 * rm09.GetFlat(c), 1e-12) << c;
  }

  // Test mode: the running statistics normalize and come back unchanged.
  r = Layerctl("forward",
               With({"--layer", "spatial_batchnorm", "--mode", "test", "--eps",
                     "0.25", "--seed", "2", "x=randn:4,3,5,5", "--json"},
                    BatchnormInputs(3)));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out,
               "[(o['min'], o['max']) for k, o in "
               "sorted(d['outputs'].items()) if k != 'out']"),
            "[(0, 0), (1, 1)]");
}

TEST_F(LayerctlTest, GradCheckBatchnormLayers) {
  RunResult r = Layerctl(
      "gradcheck", With({"--layer", "batchnorm", "--mode", "train", "--seed",
                         "5", "x=randn:8,4", "--max_rel_error", "1e-5"},
                        BatchnormInputs(4)));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, StartsWith("gradcheck batchnorm: implementation "));
  for (const char* g :
       {"\ndx error:  ", "\ndgamma error:  ", "\ndbeta error:  "}) {
    EXPECT_THAT(r.out, HasSubstr(g));
  }
  EXPECT_EQ(Lines(r.out), 4);  // no check for the running statistics
  EXPECT_THAT(r.out, Not(HasSubstr("FAIL")));

  r = Layerctl("gradcheck", With({"--layer", "spatial_batchnorm", "--mode",
                                  "train", "--impl", "naive", "x=randn:2,3,4,5",
                                  "--max_rel_error", "1e-5", "--json"},
                                 BatchnormInputs(3)));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "([x['input'] for x in d['results']], d['pass'])"),
            "(['x', 'gamma', 'beta'], True)");

  // The loss: only x gets a gradient.
  r = Layerctl("gradcheck", {"--layer", "svm_loss", "x=randn:6,5",
                             "y=labels:6:5", "--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "[x['input'] for x in d['results']]"), "['x']");
}

TEST_F(LayerctlTest, CompareAndBenchTakeTheNewParams) {
  RunResult r =
      Layerctl("compare", With({"--layer", "spatial_batchnorm", "--mode",
                                "train", "x=randn:4,3,6,6", "--json"},
                               BatchnormInputs(3)));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "sorted(d['grad_rel_errors'])"),
            "['dbeta', 'dgamma', 'dx']");
  EXPECT_EQ(Py(r.out, "d['output_rel_error'] < 1e-9"), "True");

  r = Layerctl("bench",
               {"--rpc", "forward", "--layer", "dropout", "--mode", "train",
                "--p", "0.5", "--requests", "5", "x=randn:4,8", "--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "(d['requests'], d['ok'])"), "(5, 5)");
}

TEST_F(LayerctlTest, NotebookPassesEveryCell) {
  RunResult r = Layerctl("notebook", {"--repeats", "1"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  for (const char* words :
       {"Testing conv_forward_naive\ndifference:  ",
        "Testing conv_backward_naive function\ndx error:  ",
        "Testing max_pool_forward_naive function:\ndifference:  ",
        "Testing max_pool_backward_naive function:\ndx error:  ",
        "Testing conv_forward_fast:\nNaive: ", "\nSpeedup: ",
        "Testing conv_backward_fast:\n", "\ndb difference:  ",
        "Testing pool_forward_fast:\n", "Testing pool_backward_fast:\n",
        "Testing conv_relu_pool\ndx error:  ", "Testing conv_relu:\n",
        "Before spatial batch normalization:\n  Shape:  (2, 3, 4, 5)\n"
        "  Means:  [",
        "After spatial batch normalization (gamma=[1.0, 1.0, 1.0], "
        "beta=[0.0, 0.0, 0.0]):\n  Shape:  (2, 3, 4, 5)\n  Means:  [",
        "After spatial batch normalization (gamma=[3.0, 4.0, 5.0], "
        "beta=[6.0, 7.0, 8.0]):\n",
        "\n  Stds:  [", "Spatial batchnorm backward\ndx error:  ",
        "\ndgamma error:  ", "\ndbeta error:  "}) {
    EXPECT_THAT(r.out, HasSubstr(words));
  }
  EXPECT_THAT(r.out, Not(HasSubstr("FAIL")));
  EXPECT_THAT(r.out, EndsWith("\nnotebook: 10 passed, 0 failed\n"));
}

TEST_F(LayerctlTest, NotebookJson) {
  RunResult r = Layerctl("notebook", {"--repeats", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Lines(r.out), 1);
  EXPECT_EQ(Py(r.out, "(d['passed'], d['failed'], len(d['cells']))"),
            "(10, 0, 10)");
  EXPECT_EQ(Py(r.out, "[c['cell'] for c in d['cells']]"),
            "['In [14]', 'In [15]', 'In [16]', 'In [17]', 'In [2]', 'In [3]', "
            "'In [4]', 'In [5]', 'SBN [1]', 'SBN [2]']");
  // The spatial batchnorm cells judge what the course checks.
  EXPECT_EQ(
      Py(r.out,
         "[(k['what'], k['threshold']) for k in d['cells'][8]['checks']]"),
      "[('max|mean - beta| (gamma=[1.0, 1.0, 1.0])', 1e-10), "
      "('max|std / gamma - 1| (gamma=[1.0, 1.0, 1.0])', 0.0001), "
      "('max|mean - beta| (gamma=[3.0, 4.0, 5.0])', 1e-10), "
      "('max|std / gamma - 1| (gamma=[3.0, 4.0, 5.0])', 0.0001)]");
  EXPECT_EQ(Py(r.out,
               "[(k['what'], k['value'] <= k['threshold']) for k in "
               "d['cells'][9]['checks']]"),
            "[('dx error', True), ('dgamma error', True), "
            "('dbeta error', True)]");
}

TEST_F(LayerctlTest, BenchSmall) {
  RunResult r =
      Layerctl("bench", {"--rpc", "forward", "--layer", "conv", "--pad", "1",
                         "--requests", "30", "--concurrency", "3",
                         "x=randn:2,3,8,8", "w=randn:4,3,3,3", "b=zeros:4"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, StartsWith("bench forward conv: 30 requests (30 ok, 0 "
                                "errors) in "));
  EXPECT_THAT(r.out, HasSubstr("\nthroughput: "));
  EXPECT_THAT(r.out, HasSubstr("\nlatency ms: p50 "));

  r = Layerctl("bench",
               {"--rpc", "backward", "--layer", "max_pool", "--requests", "10",
                "--concurrency", "2", "x=randn:2,3,8,8", "--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "(d['requests'], d['ok'], d['errors'])"), "(10, 10, 0)");
  EXPECT_EQ(Py(r.out,
               "0 < d['latency_ms']['p50'] <= d['latency_ms']['p99'] "
               "<= d['latency_ms']['max']"),
            "True");

  // Bounded by time as well as count.
  r = Layerctl("bench",
               {"--rpc", "gradcheck", "--layer", "relu", "--requests",
                "1000000", "--duration_s", "0.5", "x=randn:4", "--json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Py(r.out, "d['requests'] < 1000000 and d['elapsed_s'] < 30"),
            "True");
}

// --- Errors: one line on stderr, nothing on stdout, a trustworthy code. ---

void ExpectOneLineError(const RunResult& r, int code,
                        const std::string& fragment) {
  EXPECT_EQ(r.exit_code, code) << Describe(r);
  EXPECT_EQ(r.out, "") << Describe(r);
  EXPECT_EQ(Lines(r.err), 1) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr(fragment)) << Describe(r);
  EXPECT_THAT(r.err, StartsWith("layerctl ")) << Describe(r);
}

TEST_F(LayerctlTest, BadGeneratorSpec) {
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "conv", "x=randn:4,x", "w=randn:2,3,3,3",
                           "b=randn:2"}),
      2, "x: bad tensor spec 'randn:4,x': dim 'x' is not an integer");
  ExpectOneLineError(Layerctl("forward", {"--layer", "relu", "x=ranf:4"}), 2,
                     "unknown generator 'ranf'");
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "conv", "x=randn:1,3,4,4"}), 2,
      "layer conv needs inputs x, w, b; missing w, b");
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "relu", "x=randn:4", "y=randn:4"}), 2,
      "unexpected input 'y': layer relu takes x");
}

TEST_F(LayerctlTest, MissingAndMalformedNpy) {
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "relu", "x=" + dir_ + "/nope.npy"}), 2,
      "x=" + dir_ + "/nope.npy: cannot open (No such file or directory)");
  {
    const std::string bytes("\x93NUMPY\x01\x00\x10\x00{'descr': '<i4'}", 26);
    std::ofstream f(dir_ + "/bad.npy", std::ios::binary);
    f << bytes;
  }
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "relu", "x=" + dir_ + "/bad.npy"}), 2,
      dir_ + "/bad.npy: malformed header");
}

TEST_F(LayerctlTest, ServerDownOrWrongAddress) {
  // A port nothing listens on: a fresh server's, after it stopped.
  std::unique_ptr<ServerProcess> other =
      ServerProcess::Start(LAYERSERVE_BINARY);
  const std::string gone = other->address();
  ASSERT_EQ(other->Stop(), 0);
  for (const char* cmd : {"health", "list", "notebook"}) {
    ExpectOneLineError(LayerctlRaw({cmd, "--server", gone}), 3,
                       absl::StrCat("UNAVAILABLE: "));
  }
  ExpectOneLineError(
      LayerctlRaw(
          {"forward", "--server", gone, "--layer", "relu", "x=randn:3"}),
      3, absl::StrCat("(is layerserve running at ", gone, "? see --server)"));
  ExpectOneLineError(LayerctlRaw({"health", "--server", "no-port"}), 2,
                     "--server: expected HOST:PORT");
  // A name that cannot resolve: UNAVAILABLE, or DEADLINE_EXCEEDED where
  // the resolver is slow; either way exit 3 with one line.
  ExpectOneLineError(LayerctlRaw({"health", "--server", "host.invalid:50051"}),
                     3, "layerctl health: ");
}

TEST_F(LayerctlTest, TlsToAPlaintextServer) {
  // gRPC says UNAVAILABLE, with OpenSSL's "wrong version number"; layerctl
  // adds what to do.
  ExpectOneLineError(Layerctl("health", {"--tls"}), 3,
                     "(the server does not speak TLS: drop the --tls flags)");
}

TEST_F(LayerctlTest, ServerRejectionsAndDeadlines) {
  // Unknown to this client too: passed through, the server lists the known.
  ExpectOneLineError(Layerctl("forward", {"--layer", "softmax", "x=randn:3"}),
                     3, "INVALID_ARGUMENT: ");
  ExpectOneLineError(Layerctl("forward", {"--layer", "conv", "x=randn:1,3,4,4",
                                          "w=randn:2,4,3,3", "b=randn:2"}),
                     3, "INVALID_ARGUMENT: ");
  ExpectOneLineError(Layerctl("compare", {"--layer", "conv", "--timeout", "1ms",
                                          "x=randn:8,3,32,32",
                                          "w=randn:8,3,3,3", "b=randn:8"}),
                     3, "DEADLINE_EXCEEDED");
}

TEST_F(LayerctlTest, LabelAndParamErrors) {
  ExpectOneLineError(
      Layerctl("forward",
               With({"--layer", "spatial_batchnorm", "x=randn:2,3,4,5"},
                    BatchnormInputs(3))),
      2,
      "layerctl forward: --mode is required for layer spatial_batchnorm (its "
      "bn_param.mode): train or test, e.g. --mode train");
  ExpectOneLineError(Layerctl("forward", {"--layer", "dropout", "--mode",
                                          "train", "x=randn:3"}),
                     2, "--p is required for layer dropout");
  // The server judges values: its INVALID_ARGUMENT, one line, exit 3.
  ExpectOneLineError(
      Layerctl("forward", With({"--layer", "batchnorm", "--mode", "train",
                                "--eps", "-1", "x=randn:4,3"},
                               BatchnormInputs(3))),
      3,
      "layerctl forward: INVALID_ARGUMENT: batchnorm: bn_param.eps must be "
      "finite and > 0");
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "softmax_loss", "x=randn:4,3",
                           "y=labels:4:9", "--seed", "1"}),
      3, "is out of range [0, 3)");

  // A float .npy for the labels, an int64 .npy for a float input.
  Tensor f = std::move(Tensor::Zeros(DType::kFloat64, {4})).value();
  Tensor i = std::move(Tensor::Zeros(DType::kInt64, {4, 3})).value();
  ASSERT_TRUE(client::WriteNpy(dir_ + "/yf.npy", f).ok());
  ASSERT_TRUE(client::WriteNpy(dir_ + "/xi.npy", i).ok());
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "softmax_loss", "x=randn:4,3",
                           "y=" + dir_ + "/yf.npy"}),
      2,
      "y=" + dir_ +
          "/yf.npy: input y holds class labels and must be int64 ('<i8'), but "
          "the file is float64");
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "softmax_loss", "x=" + dir_ + "/xi.npy",
                           "y=labels:4:3"}),
      2, "the file is int64 ('<i8') but input x is float");
  ExpectOneLineError(
      Layerctl("forward",
               {"--layer", "softmax_loss", "x=randn:4,3", "y=randn:4"}),
      2, "y=randn:4: input y holds int64 class labels; give labels:N:C");
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "softmax_loss", "x=randn:4,3"}), 2,
      "missing y (give each as NAME=SPEC, e.g. y=labels:8:10)");
}

TEST_F(LayerctlTest, UsageErrorsAndHelp) {
  ExpectOneLineError(Layerctl("forward", {"--layer", "relu", "--bogus", "1"}),
                     2, "unknown flag --bogus (see 'layerctl forward --help')");
  ExpectOneLineError(Layerctl("forward", {"--layer", "max_pool", "--pad", "1",
                                          "x=randn:1,1,4,4"}),
                     2, "--pad: layer max_pool has no conv_param");
  ExpectOneLineError(
      Layerctl("forward", {"--layer", "relu", "--impl", "quick", "x=randn:3"}),
      2, "--impl: expected naive or fast, got 'quick'");
  ExpectOneLineError(Layerctl("forward", {"x=randn:3"}), 2,
                     "--layer is required");
  ExpectOneLineError(Layerctl("health", {"--timeout", "soon"}), 2,
                     "--timeout: 'soon' is not a duration");
  RunResult r = LayerctlRaw({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'frobnicate'"));

  for (const char* cmd : {"health", "list", "forward", "backward", "gradcheck",
                          "compare", "notebook", "bench"}) {
    r = LayerctlRaw({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_THAT(r.out, StartsWith(absl::StrCat("usage: layerctl ", cmd)));
    EXPECT_THAT(r.out, HasSubstr("\nexample:\n  layerctl "));
    EXPECT_THAT(r.out, HasSubstr("--server"));
    EXPECT_THAT(r.out, HasSubstr("--json"));
  }
  // The layer commands document the new params, with a batchnorm and a
  // loss example.
  for (const char* cmd :
       {"forward", "backward", "gradcheck", "compare", "bench"}) {
    r = LayerctlRaw({cmd, "--help"});
    for (const char* flag :
         {"\n  --mode=STRING ", "\n  --eps=X ", "\n  --momentum=X ",
          "\n  --p=X ", "\n  --dropout_seed=N "}) {
      EXPECT_THAT(r.out, HasSubstr(flag)) << cmd;
    }
    EXPECT_THAT(r.out, HasSubstr("--layer spatial_batchnorm --mode train"))
        << cmd;
    EXPECT_THAT(r.out, HasSubstr("--layer softmax_loss")) << cmd;
    EXPECT_THAT(r.out, HasSubstr("y=labels:")) << cmd;
  }
  r = LayerctlRaw({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("notebook"));
}

}  // namespace
}  // namespace layerserve::testing
