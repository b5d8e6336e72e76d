// layerctl's building blocks without a server: flag parsing, Python-style
// float printing (checked against Python itself), JSON output, layer flags.
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli_common.h"
#include "client/cli_flags.h"
#include "client/cli_output.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/subprocess.h"

namespace layerserve::client {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(FlagSetTest, ParsesEveryKindAndPositionals) {
  std::string s = "default";
  int64_t i = 1;
  uint64_t u = 2;
  double d = 0.5;
  bool b = false;
  absl::Duration t = absl::Seconds(1);
  FlagSet flags("layerctl test", "summary", "NAME=SPEC...", "example");
  flags.String("s", &s, "a string");
  flags.Int("i", &i, "an int");
  flags.Uint("u", &u, "a uint");
  flags.Double("d", &d, "a double");
  flags.Bool("b", &b, "a bool");
  flags.Duration("t", &t, "a duration");
  absl::StatusOr<FlagSet::Outcome> r =
      flags.Parse({"x=randn:2", "--s=hello", "--i", "-7", "--u=9", "-d", "1e-3",
                   "--b", "--t", "250ms", "w=zeros:3", "--", "--not-a-flag"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, FlagSet::Outcome::kRun);
  EXPECT_EQ(s, "hello");
  EXPECT_EQ(i, -7);
  EXPECT_EQ(u, 9u);
  EXPECT_EQ(d, 1e-3);
  EXPECT_TRUE(b);
  EXPECT_EQ(t, absl::Milliseconds(250));
  EXPECT_THAT(flags.positional(),
              ::testing::ElementsAre("x=randn:2", "w=zeros:3", "--not-a-flag"));
  EXPECT_TRUE(flags.IsSet("i"));
  EXPECT_FALSE(flags.IsSet("nope"));
}

TEST(FlagSetTest, ErrorsNameTheFlag) {
  int64_t i = 0;
  bool b = true;
  absl::Duration t;
  FlagSet flags("layerctl test", "summary", "", "");
  flags.Int("i", &i, "an int");
  flags.Bool("b", &b, "a bool");
  flags.Duration("t", &t, "a duration");
  auto message = [&](std::vector<std::string> args) {
    absl::StatusOr<FlagSet::Outcome> r = flags.Parse(args);
    EXPECT_FALSE(r.ok());
    return std::string(r.status().message());
  };
  EXPECT_EQ(message({"--x=1"}),
            "unknown flag --x (see 'layerctl test --help')");
  EXPECT_EQ(message({"--i=one"}), "--i: expected an integer, got 'one'");
  EXPECT_EQ(message({"--i"}), "--i needs a value (see 'layerctl test --help')");
  EXPECT_EQ(message({"--b=maybe"}), "--b: expected true or false, got 'maybe'");
  EXPECT_THAT(message({"--t=-1s"}), HasSubstr("must be a positive"));
  EXPECT_EQ(message({"stray"}),
            "unexpected argument 'stray' (see 'layerctl test --help')");

  ASSERT_TRUE(flags.Parse({"--b=false"}).ok());
  EXPECT_FALSE(b);
  // --help wins over everything else.
  absl::StatusOr<FlagSet::Outcome> r = flags.Parse({"--x", "--help"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, FlagSet::Outcome::kHelp);
}

TEST(FlagSetTest, HelpShowsDefaultsAndExample) {
  std::string server = "127.0.0.1:50051";
  int64_t n = 100;
  FlagSet flags("layerctl bench", "Load generator.", "NAME=SPEC...",
                "  layerctl bench --requests 10");
  flags.String("server", &server, "address");
  flags.Int("requests", &n, "stop after this many requests");
  const std::string help = flags.Help();
  EXPECT_THAT(help, StartsWith("usage: layerctl bench [flags] NAME=SPEC...\n"
                               "\nLoad generator.\n"));
  EXPECT_THAT(help, HasSubstr("--server=STRING         address (default "
                              "\"127.0.0.1:50051\")\n"));
  EXPECT_THAT(help, HasSubstr("--requests=N"));
  EXPECT_THAT(help, HasSubstr("(default 100)"));
  EXPECT_THAT(help, HasSubstr("\nexample:\n  layerctl bench --requests 10\n"));
  for (absl::string_view line : absl::StrSplit(help, '\n')) {
    EXPECT_LE(line.size(), 80u) << line;
  }
}

TEST(FlagSetTest, GroupsFollowTheCommandsFlagsAndSectionsTheExample) {
  std::string server, layer;
  bool tls = false;
  FlagSet flags("layerctl forward", "summary", "", "  layerctl forward x");
  flags.StartGroup("connection flags (every command)");
  flags.String("server", &server, "address");
  flags.Bool("tls", &tls, "use TLS");
  flags.StartGroup("");
  flags.String("layer", &layer, "layer name");
  flags.SetValueName("layer", "NAME");
  flags.AddSection("secure connections", "  layerctl health --tls");
  const std::string help = flags.Help();
  const size_t layer_at = help.find("  --layer=NAME ");
  const size_t own_help = help.find("  --help ");
  const size_t group = help.find("\nconnection flags (every command):\n");
  const size_t server_at = help.find("  --server=STRING ");
  const size_t example = help.find("\nexample:\n  layerctl forward x\n");
  const size_t section =
      help.find("\nsecure connections:\n  layerctl health --tls\n");
  for (size_t at : {layer_at, own_help, group, server_at, example, section}) {
    ASSERT_NE(at, std::string::npos) << help;
  }
  EXPECT_LT(layer_at, own_help);
  EXPECT_LT(own_help, group);
  EXPECT_LT(group, server_at);
  EXPECT_LT(server_at, example);
  EXPECT_LT(example, section);
}

// A file in the test's temp dir holding `text`; its path.
std::string TempFile(const std::string& name, const std::string& text) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "cli_unit_", getpid(), "_", name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

constexpr char kPem[] =
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

TEST(ConnectionFlagsTest, MapOneToOneOntoClientOptions) {
  ConnectionFlags flags;
  flags.server = "localhost:7000";
  flags.timeout = absl::Seconds(3);
  flags.tls = true;
  flags.tls_ca = TempFile("ca.pem", kPem);
  flags.tls_cert = TempFile("cert.pem", absl::StrCat(kPem, "chain"));
  flags.tls_key = TempFile("key.pem", "-----BEGIN PRIVATE KEY-----\nk\n");
  flags.tls_server_name = "server.example";
  flags.auth_token_file = TempFile("token", " \n\tT0ken-_.~+/=\r\n");
  absl::StatusOr<ClientOptions> o = ClientOptionsFromFlags(flags);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->target, "localhost:7000");
  EXPECT_EQ(o->timeout, absl::Seconds(3));
  EXPECT_TRUE(o->tls);
  // The files' contents, as PEM text.
  EXPECT_EQ(o->tls_ca, kPem);
  EXPECT_EQ(o->tls_cert, absl::StrCat(kPem, "chain"));
  EXPECT_EQ(o->tls_key, "-----BEGIN PRIVATE KEY-----\nk\n");
  EXPECT_EQ(o->tls_server_name, "server.example");
  EXPECT_EQ(o->auth_token, "T0ken-_.~+/=");  // whitespace trimmed

  // Nothing given: plaintext, no token.
  o = ClientOptionsFromFlags(ConnectionFlags());
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->tls);
  EXPECT_EQ(o->tls_ca, "");
  EXPECT_EQ(o->tls_cert, "");
  EXPECT_EQ(o->auth_token, "");
}

TEST(ConnectionFlagsTest, ErrorsNameTheFlagAndNeverShowTheToken) {
  auto error = [](const ConnectionFlags& f) {
    absl::StatusOr<ClientOptions> o = ClientOptionsFromFlags(f);
    EXPECT_FALSE(o.ok());
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(o.status().message());
  };
  ConnectionFlags f;
  f.tls_cert = TempFile("c.pem", kPem);
  EXPECT_THAT(error(f), HasSubstr("--tls_cert and --tls_key: give both"));
  EXPECT_THAT(error(f), HasSubstr("got only --tls_cert"));
  f = ConnectionFlags();
  f.tls_key = TempFile("k.pem", kPem);
  EXPECT_THAT(error(f), HasSubstr("got only --tls_key"));

  f = ConnectionFlags();
  f.tls_ca = "/nonexistent/ca.pem";
  EXPECT_THAT(error(f),
              HasSubstr("--tls_ca: cannot read '/nonexistent/ca.pem': No such "
                        "file or directory"));
  f.tls_ca = TempFile("not_pem", "hello");
  EXPECT_THAT(error(f), HasSubstr("is not a PEM file"));

  f = ConnectionFlags();
  f.auth_token_file = "/nonexistent/token";
  EXPECT_THAT(error(f), HasSubstr("--auth_token_file: cannot read"));
  f.auth_token_file = TempFile("blank", " \n\n");
  EXPECT_THAT(error(f), HasSubstr("--auth_token_file: '" + f.auth_token_file +
                                  "' is empty"));
  f.auth_token_file = TempFile("spaced", "zq9sec zq9ret\n");
  const std::string message = error(f);
  EXPECT_THAT(message, HasSubstr("must be one word of printable ASCII"));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("zq9")));
}

TEST(DurationFlagTest, Forms) {
  EXPECT_EQ(ParseDurationFlag("60").value(), absl::Seconds(60));
  EXPECT_EQ(ParseDurationFlag("0.5").value(), absl::Milliseconds(500));
  EXPECT_EQ(ParseDurationFlag("2m").value(), absl::Minutes(2));
  EXPECT_FALSE(ParseDurationFlag("0").ok());
  EXPECT_FALSE(ParseDurationFlag("inf").ok());
  EXPECT_FALSE(ParseDurationFlag("soon").ok());
}

TEST(PyReprTest, MatchesPython) {
  const std::vector<double> values = {2.2121476417505994e-08,
                                      0.0,
                                      -0.0,
                                      1.0,
                                      -2.5,
                                      0.1,
                                      1e-4,
                                      9.999e-5,
                                      123456789.0,
                                      1e15,
                                      1e16,
                                      1.5e16,
                                      3.27562860627328e-12,
                                      0.0001234,
                                      -1.24695841,
                                      751.495397,
                                      1e300,
                                      5e-324,
                                      1.0 / 3.0};
  std::string literal;
  for (double v : values) {
    absl::StrAppend(&literal, absl::StrFormat("'%.17g'", v), ",");
  }
  testing::RunResult r = testing::RunProcess(
      {LAYERSERVE_PYTHON, "-c",
       absl::StrCat("for v in (", literal, "): print(repr(float(v)))")});
  ASSERT_EQ(r.exit_code, 0) << testing::Describe(r);
  std::vector<std::string> want =
      absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(want.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(PyRepr(values[i]), want[i])
        << absl::StrFormat("%.17g", values[i]);
  }
  EXPECT_EQ(PyRepr(std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(PyRepr(-std::numeric_limits<double>::infinity()), "-inf");
}

TEST(JsonWriterTest, NestingCommasEscapesAndNonFinite) {
  JsonWriter j;
  j.BeginObject().Key("a").Int(1).Key("s").String("q\"\\\n\x01");
  j.Key("arr").BeginArray().Number(0.5).Null().Bool(true);
  j.BeginObject().EndObject().EndArray();
  j.Key("nan").Number(std::nan("")).Key("e").IntArray({}).EndObject();
  EXPECT_EQ(j.str(),
            "{\"a\":1,\"s\":\"q\\\"\\\\\\n\\u0001\",\"arr\":[0.5,null,true,{}],"
            "\"nan\":null,\"e\":[]}");
}

TEST(SummaryTest, OneLine) {
  Tensor t =
      std::move(Tensor::Linspace(DType::kFloat32, {2, 3}, -1, 1)).value();
  EXPECT_EQ(SummaryLine("out", t), "out: (2, 3) float32 min -1 max 1 mean 0");
  t.SetFlat(0, std::nan(""));
  EXPECT_EQ(SummaryLine("out", t),
            "out: (2, 3) float32 min -0.6 max 1 mean 0.2 nan 1");
}

TEST(SummaryTest, ALossIsAScalarAndLabelsAreIntegers) {
  Tensor loss = std::move(Tensor::Zeros(DType::kFloat64, {1})).value();
  loss.SetFlat(0, 2.3025850929940455);
  EXPECT_EQ(SummaryLine("loss", loss),
            "loss: (1,) float64 = 2.3025850929940455");
  JsonWriter json;
  json.BeginObject();
  SummaryJson(loss, json);
  json.EndObject();
  EXPECT_THAT(json.str(), HasSubstr("\"value\":2.3025850929940455}"));

  Tensor y = std::move(Tensor::Zeros(DType::kInt64, {4})).value();
  y.data<int64_t>()[0] = 9007199254740993;  // 2^53 + 1: %g would round it
  y.data<int64_t>()[1] = -3;
  EXPECT_EQ(SummaryLine("y", y),
            "y: (4,) int64 min -3 max 9007199254740993 mean 2.2518e+15");
  Tensor one = std::move(Tensor::Zeros(DType::kInt64, {1, 1})).value();
  one.data<int64_t>()[0] = 7;
  EXPECT_EQ(SummaryLine("y", one), "y: (1, 1) int64 = 7");
}

// The spec layerctl forward would send for `args`.
absl::StatusOr<LayerSpec> spec(const std::vector<std::string>& args) {
  LayerFlags lf;
  FlagSet flags("layerctl forward", "", "NAME=SPEC...", "");
  AddLayerFlags(flags, lf, /*with_impl=*/true);
  absl::StatusOr<FlagSet::Outcome> parsed = flags.Parse(args);
  if (!parsed.ok()) return parsed.status();
  return LayerSpecFromFlags(flags, lf);
}

// The wire spec layerctl forward would send for `args`.
absl::StatusOr<v1::LayerSpec> wire(const std::vector<std::string>& args) {
  LayerFlags lf;
  FlagSet flags("layerctl forward", "", "NAME=SPEC...", "");
  AddLayerFlags(flags, lf, /*with_impl=*/true);
  absl::StatusOr<FlagSet::Outcome> parsed = flags.Parse(args);
  if (!parsed.ok()) return parsed.status();
  absl::StatusOr<LayerSpec> s = LayerSpecFromFlags(flags, lf);
  if (!s.ok()) return s.status();
  v1::LayerSpec proto;
  LayerSpecToWire(flags, *s, &proto);
  return proto;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(LayerFlagsTest, BatchnormParamSendsOnlyWhatWasGiven) {
  absl::StatusOr<v1::LayerSpec> w =
      wire({"--layer=spatial_batchnorm", "--mode=train"});
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(w->has_bn_param());
  EXPECT_EQ(w->bn_param().mode(), v1::TRAIN);
  // The server's defaults (1e-5, 0.9) apply.
  EXPECT_FALSE(w->bn_param().has_eps());
  EXPECT_FALSE(w->bn_param().has_momentum());
  EXPECT_FALSE(w->has_dropout_param());

  w = wire({"--layer=batchnorm", "--mode", "test", "--eps", "1e-3",
            "--momentum", "0.5"});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->bn_param().mode(), v1::TEST);
  ASSERT_TRUE(w->bn_param().has_eps());
  EXPECT_EQ(w->bn_param().eps(), 1e-3);
  ASSERT_TRUE(w->bn_param().has_momentum());
  EXPECT_EQ(w->bn_param().momentum(), 0.5);

  // Composites take a bn_param too (and conv_batchnorm_relu a conv_param).
  w = wire({"--layer=conv_batchnorm_relu", "--mode=train", "--pad=1"});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->conv_param().pad(), 1);
  EXPECT_EQ(w->bn_param().mode(), v1::TRAIN);
}

TEST(LayerFlagsTest, DropoutParam) {
  absl::StatusOr<v1::LayerSpec> w =
      wire({"--layer=dropout", "--mode=train", "--p=0.8", "--dropout_seed=42"});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->dropout_param().p(), 0.8);
  EXPECT_EQ(w->dropout_param().mode(), v1::TRAIN);
  EXPECT_EQ(w->dropout_param().seed(), 42u);
  EXPECT_FALSE(w->has_bn_param());
  absl::StatusOr<LayerSpec> s =
      spec({"--layer=dropout", "--mode=test", "--p=1"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_FALSE(s->dropout.train);
}

TEST(LayerFlagsTest, MissingOrMisplacedParamFlagsAreErrors) {
  EXPECT_EQ(Message(spec({"--layer=spatial_batchnorm"}).status()),
            "--mode is required for layer spatial_batchnorm (its "
            "bn_param.mode): train or test, e.g. --mode train");
  EXPECT_EQ(Message(spec({"--layer=dropout", "--p=0.5"}).status()),
            "--mode is required for layer dropout (its dropout_param.mode): "
            "train or test, e.g. --mode train");
  EXPECT_THAT(Message(spec({"--layer=dropout", "--mode=train"}).status()),
              StartsWith("--p is required for layer dropout: dropout_param.p, "
                         "the probability of KEEPING a unit"));
  EXPECT_EQ(Message(spec({"--layer=batchnorm", "--mode=training"}).status()),
            "--mode: expected train or test, got 'training'");
  EXPECT_EQ(Message(spec({"--layer=conv", "--mode=train"}).status()),
            "--mode: layer conv has no bn_param or dropout_param");
  EXPECT_EQ(
      Message(spec({"--layer=dropout", "--mode=train", "--p=0.5", "--eps=1e-3"})
                  .status()),
      "--eps: layer dropout has no bn_param");
  EXPECT_EQ(
      Message(spec({"--layer=batchnorm", "--mode=train", "--p=0.5"}).status()),
      "--p: layer batchnorm has no dropout_param");
  EXPECT_EQ(
      Message(spec({"--layer=softmax_loss", "--dropout_seed=1"}).status()),
      "--dropout_seed: layer softmax_loss has no dropout_param");
  // Values are the server's to judge (one rule, one place).
  EXPECT_TRUE(spec({"--layer=batchnorm", "--mode=train", "--eps=-1"}).ok());
}

TEST(LayerFlagsTest, UnknownLayersLeaveModeAndPUnset) {
  // A layer this client does not know: passed through, and without --mode
  // the server sees MODE_UNSPECIFIED (and says so) rather than a silent
  // TRAIN.
  absl::StatusOr<v1::LayerSpec> w = wire({"--layer=group_norm"});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->bn_param().mode(), v1::MODE_UNSPECIFIED);
  EXPECT_FALSE(w->bn_param().has_eps());
  EXPECT_EQ(w->dropout_param().mode(), v1::MODE_UNSPECIFIED);
  EXPECT_EQ(w->dropout_param().p(), 0);
  w = wire({"--layer=group_norm", "--mode=test", "--eps=0.1"});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->bn_param().mode(), v1::TEST);
  EXPECT_EQ(w->bn_param().eps(), 0.1);
}

TEST(LayerFlagsTest, HelpDocumentsTheParamsWithExamples) {
  LayerFlags lf;
  FlagSet flags("layerctl forward", "", "NAME=SPEC...",
                BatchnormAndLossExamples("forward"));
  AddLayerFlags(flags, lf, /*with_impl=*/true);
  const std::string help = flags.Help();
  for (const char* f : {"--mode=STRING", "--eps=X", "--momentum=X", "--p=X",
                        "--dropout_seed=N"}) {
    EXPECT_THAT(help, HasSubstr(f));
  }
  EXPECT_THAT(help, HasSubstr("(default the server's, 1e-5)"));
  EXPECT_THAT(help, HasSubstr("probability of KEEPING a unit"));
  EXPECT_THAT(help, HasSubstr("layerctl forward --layer spatial_batchnorm "
                              "--mode train"));
  EXPECT_THAT(help, HasSubstr("layerctl forward --layer softmax_loss "
                              "x=randn:8,10 y=labels:8:10"));
  // --dtype never makes labels float, nor floats int64.
  lf.dtype = "int64";
  EXPECT_THAT(Message(DTypeFromFlags(lf).status()),
              HasSubstr("--dtype: expected float32 or float64, got 'int64'"));
}

TEST(LayerFlagsTest, StrideMeaningDependsOnTheLayer) {
  absl::StatusOr<LayerSpec> s = spec({"--layer=conv", "--stride=3", "--pad=2"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->conv.stride, 3);
  EXPECT_EQ(s->conv.pad, 2);

  s = spec({"--layer=max_pool", "--stride=1", "--pool_height=3"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->pool.stride, 1);
  EXPECT_EQ(s->pool.pool_height, 3);

  s = spec({"--layer=conv_relu_pool", "--stride=1", "--pool_stride=4"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->conv.stride, 1);
  EXPECT_EQ(s->pool.stride, 4);

  EXPECT_THAT(
      std::string(spec({"--layer=max_pool", "--stride=1", "--pool_stride=2"})
                      .status()
                      .message()),
      HasSubstr("disagree"));
  EXPECT_THAT(
      std::string(spec({"--layer=relu", "--stride=2"}).status().message()),
      HasSubstr("--stride: layer relu has no conv_param or pool_param"));
  EXPECT_THAT(
      std::string(spec({"--layer=conv", "--pool_width=2"}).status().message()),
      HasSubstr("--pool_width: layer conv has no pool_param"));
  EXPECT_THAT(
      std::string(
          spec({"--layer=conv", "--pad=9999999999"}).status().message()),
      HasSubstr("--pad: 9999999999 does not fit in int32"));
  // Unknown here: passed through for the server to judge.
  s = spec({"--layer=softmax"});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->name, "softmax");
}

}  // namespace
}  // namespace layerserve::client
