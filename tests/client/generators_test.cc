// `name=spec` parsing and tensor generation for layerctl inputs.
#include "client/generators.h"

#include <stdlib.h>

#include <fstream>
#include <string>
#include <vector>

#include "client/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerserve::client {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// `--seed 0 y=labels:8:10`, pinned so that a change to the generator (which
// would change every command line's labels) is noticed.
const std::vector<int64_t> kPinnedLabels = {1, 8, 0, 2, 5, 5, 4, 7};

TEST(ParseTensorSpecTest, Generators) {
  absl::StatusOr<TensorSpec> s = ParseTensorSpec("randn:4,3,5,5");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, TensorSpec::Kind::kRandn);
  EXPECT_EQ(s->shape, Shape({4, 3, 5, 5}));

  s = ParseTensorSpec("linspace:-0.1,0.5:2,3,4,4");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, TensorSpec::Kind::kLinspace);
  EXPECT_EQ(s->start, -0.1);
  EXPECT_EQ(s->stop, 0.5);
  EXPECT_EQ(s->shape, Shape({2, 3, 4, 4}));

  s = ParseTensorSpec("zeros:3");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, TensorSpec::Kind::kZeros);
  EXPECT_EQ(s->shape, Shape({3}));

  s = ParseTensorSpec("labels:8:10");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kind, TensorSpec::Kind::kLabels);
  EXPECT_EQ(s->shape, Shape({8}));
  EXPECT_EQ(s->classes, 10);
}

TEST(ParseTensorSpecTest, Paths) {
  for (const char* p :
       {"x.npy", "/tmp/a b/x.npy", "./dir:with:colons/x.npy", "data/x"}) {
    absl::StatusOr<TensorSpec> s = ParseTensorSpec(p);
    ASSERT_TRUE(s.ok()) << p << ": " << s.status();
    EXPECT_EQ(s->kind, TensorSpec::Kind::kFile);
    EXPECT_EQ(s->path, p);
  }
}

TEST(ParseTensorSpecTest, BadSpecsSayWhatIsWrong) {
  struct Case {
    const char* spec;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"randm:4,3", "unknown generator 'randm'"},
      {"randn", "randn needs dims, e.g. randn:2,3,4,4"},
      {"randn:", "missing dims"},
      {"randn:4,x", "dim 'x' is not an integer"},
      {"randn:4,,3", "dim '' is not an integer"},
      {"zeros:4,0", "dim 0 must be >= 1"},
      {"zeros:-2", "dim -2 must be >= 1"},
      {"zeros:1,2,3,4,5", "5 dims; at most 4 are allowed"},
      {"linspace:0,1", "expected linspace:START,STOP:D1,D2,..."},
      {"linspace:0:3", "expected START,STOP, got '0'"},
      {"linspace:a,1:3", "START 'a' is not a finite number"},
      {"linspace:0,inf:3", "STOP 'inf' is not a finite number"},
      {"", "expected randn:D1,D2,..."},
      {"labels", "labels needs N:C (N labels in [0, C)), e.g. labels:8:10"},
      {"labels:8", "expected labels:N:C"},
      {"labels:8:10:2", "expected labels:N:C"},
      {"labels:8,2:10", "N '8,2' is not an integer"},
      {"labels:x:10", "N 'x' is not an integer"},
      {"labels:0:10", "N must be >= 1, got 0"},
      {"labels:8:0", "C must be >= 1, got 0"},
      {"labels:8:", "C '' is not an integer"},
      {"lables:8:10", "unknown generator 'lables'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<TensorSpec> s = ParseTensorSpec(c.spec);
    ASSERT_FALSE(s.ok()) << c.spec;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.status().message()),
                StartsWith(std::string("bad tensor spec '") + c.spec + "': "));
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(c.message))
        << c.spec;
    EXPECT_EQ(std::string(s.status().message()).find('\n'), std::string::npos);
  }
}

TEST(ParseNamedTensorSpecTest, NameAndSpec) {
  absl::StatusOr<NamedTensorSpec> s = ParseNamedTensorSpec("dout=zeros:2,2");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "dout");
  EXPECT_EQ(s->text, "zeros:2,2");
  EXPECT_EQ(s->spec.shape, Shape({2, 2}));

  EXPECT_THAT(std::string(ParseNamedTensorSpec("randn:2").status().message()),
              HasSubstr("expected NAME=SPEC"));
  EXPECT_THAT(std::string(ParseNamedTensorSpec("=randn:2").status().message()),
              HasSubstr("name '' must be a name"));
  EXPECT_THAT(
      std::string(ParseNamedTensorSpec("x-y=randn:2").status().message()),
      HasSubstr("name 'x-y' must be a name"));
  EXPECT_THAT(std::string(ParseNamedTensorSpec("x=randn:0").status().message()),
              StartsWith("x: bad tensor spec 'randn:0'"));
}

TEST(DerivedSeedTest, DependsOnSeedAndName) {
  EXPECT_EQ(DerivedSeed(1, "x"), DerivedSeed(1, "x"));
  EXPECT_NE(DerivedSeed(1, "x"), DerivedSeed(1, "w"));
  EXPECT_NE(DerivedSeed(1, "x"), DerivedSeed(2, "x"));
  // Pinned: changing the derivation would silently change every command
  // line's tensors.
  EXPECT_EQ(DerivedSeed(0, "x"), 0x846a330c8ce81a06ULL);
  EXPECT_EQ(DerivedSeed(1, "w"), 0x1eb4c777a4bb95b6ULL);
}

TEST(MakeTensorsTest, GeneratorsFollowNumpyAndSeeds) {
  absl::StatusOr<TensorMap> m =
      MakeTensors({"x=linspace:-0.1,0.5:2,3,4,4", "w=randn:2,3,3,3",
                   "b=randn:2", "z=zeros:3,1"},
                  std::nullopt, 5);
  ASSERT_TRUE(m.ok()) << m.status();
  const Tensor& x = m->at("x");
  EXPECT_EQ(x.dtype(), DType::kFloat64);
  EXPECT_EQ(x.shape(), Shape({2, 3, 4, 4}));
  EXPECT_EQ(x.GetFlat(0), -0.1);
  EXPECT_EQ(x.GetFlat(95), 0.5);
  EXPECT_DOUBLE_EQ(x.GetFlat(1), -0.1 + 0.6 / 95);

  Tensor w = std::move(Tensor::RandomNormal(DType::kFloat64, {2, 3, 3, 3},
                                            DerivedSeed(5, "w")))
                 .value();
  EXPECT_EQ(m->at("w").GetFlat(7), w.GetFlat(7));
  // b uses its own seed, not a prefix of w's stream.
  EXPECT_NE(m->at("b").GetFlat(0), w.GetFlat(0));
  EXPECT_EQ(m->at("z").GetFlat(2), 0.0);

  absl::StatusOr<TensorMap> again =
      MakeTensors({"w=randn:2,3,3,3"}, std::nullopt, 5);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->at("w").GetFlat(53), w.GetFlat(53));
  absl::StatusOr<TensorMap> other =
      MakeTensors({"w=randn:2,3,3,3"}, std::nullopt, 6);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->at("w").GetFlat(0), w.GetFlat(0));
}

TEST(MakeTensorsTest, LabelsAreSeededInt64InRange) {
  absl::StatusOr<TensorMap> m =
      MakeTensors({"x=randn:500,7", "y=labels:500:7"}, std::nullopt, 5);
  ASSERT_TRUE(m.ok()) << m.status();
  const Tensor& y = m->at("y");
  ASSERT_EQ(y.dtype(), DType::kInt64);
  ASSERT_EQ(y.shape(), Shape({500}));
  std::vector<int> count(7, 0);
  for (int64_t i = 0; i < 500; ++i) {
    const int64_t v = y.data<int64_t>()[i];
    ASSERT_GE(v, 0) << i;
    ASSERT_LT(v, 7) << i;
    ++count[v];
  }
  // Uniform: each class ~71 times; 40..110 is > 4 sigma either way.
  for (int c = 0; c < 7; ++c) {
    EXPECT_GT(count[c], 40) << c;
    EXPECT_LT(count[c], 110) << c;
  }
  // The same command line gives the same labels; another --seed others.
  absl::StatusOr<TensorMap> again = MakeTensors({"y=labels:500:7"}, {}, 5);
  absl::StatusOr<TensorMap> other = MakeTensors({"y=labels:500:7"}, {}, 6);
  ASSERT_TRUE(again.ok() && other.ok());
  int same = 0, differ = 0;
  for (int64_t i = 0; i < 500; ++i) {
    same += again->at("y").data<int64_t>()[i] == y.data<int64_t>()[i];
    differ += other->at("y").data<int64_t>()[i] != y.data<int64_t>()[i];
  }
  EXPECT_EQ(same, 500);
  EXPECT_GT(differ, 300);
  // Pinned, like DerivedSeed: the labels of `--seed 0 y=labels:8:10`.
  absl::StatusOr<TensorMap> pinned = MakeTensors({"y=labels:8:10"}, {}, 0);
  ASSERT_TRUE(pinned.ok());
  const int64_t* p = pinned->at("y").data<int64_t>();
  EXPECT_EQ(std::vector<int64_t>(p, p + 8), kPinnedLabels);

  // One class: every label is 0.
  m = MakeTensors({"y=labels:4:1"}, std::nullopt, 1);
  ASSERT_TRUE(m.ok());
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(m->at("y").data<int64_t>()[i], 0);
}

TEST(MakeTensorsTest, DtypeConvertsFloatInputsOnly) {
  absl::StatusOr<TensorMap> m =
      MakeTensors({"x=randn:4,3", "y=labels:4:3"}, DType::kFloat32, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->at("x").dtype(), DType::kFloat32);
  EXPECT_EQ(m->at("y").dtype(), DType::kInt64);
}

TEST(MakeTensorsTest, ExplicitDtype) {
  absl::StatusOr<TensorMap> m =
      MakeTensors({"x=randn:3", "y=linspace:0,1:3"}, DType::kFloat32, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->at("x").dtype(), DType::kFloat32);
  EXPECT_EQ(m->at("y").dtype(), DType::kFloat32);
  EXPECT_EQ(m->at("y").GetFlat(1), 0.5);
}

class MakeTensorsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Tensor labels = std::move(Tensor::Zeros(DType::kInt64, {3})).value();
    labels.data<int64_t>()[0] = 2;
    labels.data<int64_t>()[2] = (int64_t{1} << 53) + 1;  // not a double
    std::string tmpl = ::testing::TempDir() + "gen_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    Tensor f32 =
        std::move(Tensor::Linspace(DType::kFloat32, {2, 2}, 0, 3)).value();
    Tensor f64 =
        std::move(Tensor::Linspace(DType::kFloat64, {3}, 0.1, 0.3)).value();
    ASSERT_TRUE(WriteNpy(dir_ + "/a32.npy", f32).ok());
    ASSERT_TRUE(WriteNpy(dir_ + "/b64.npy", f64).ok());
    ASSERT_TRUE(WriteNpy(dir_ + "/y.npy", labels).ok());
  }
  std::string dir_;
};

TEST_F(MakeTensorsFileTest, FileDtypeDecidesWithoutDtypeFlag) {
  absl::StatusOr<TensorMap> m =
      MakeTensors({"g=randn:2", "a=" + dir_ + "/a32.npy"}, std::nullopt, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->at("a").dtype(), DType::kFloat32);
  EXPECT_EQ(m->at("a").GetFlat(3), 3.0);
  EXPECT_EQ(m->at("g").dtype(), DType::kFloat32);
}

TEST_F(MakeTensorsFileTest, DtypeFlagConvertsFiles) {
  absl::StatusOr<TensorMap> m = MakeTensors(
      {"a=" + dir_ + "/a32.npy", "b=" + dir_ + "/b64.npy"}, DType::kFloat64, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->at("a").dtype(), DType::kFloat64);
  EXPECT_EQ(m->at("a").GetFlat(2), 2.0);
  EXPECT_EQ(m->at("b").GetFlat(2), 0.3);
}

TEST_F(MakeTensorsFileTest, MixedFileDtypesNeedTheFlag) {
  absl::StatusOr<TensorMap> m = MakeTensors(
      {"a=" + dir_ + "/a32.npy", "b=" + dir_ + "/b64.npy"}, std::nullopt, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("inputs have mixed dtypes: " + dir_ +
                        "/a32.npy is float32 but " + dir_ +
                        "/b64.npy is float64; pass --dtype"));
}

TEST_F(MakeTensorsFileTest, MissingAndMalformedFilesNameTheFile) {
  absl::StatusOr<TensorMap> m =
      MakeTensors({"x=" + dir_ + "/nope.npy"}, std::nullopt, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(m.status().message()),
              StartsWith("x=" + dir_ + "/nope.npy: cannot open"));

  {
    std::ofstream bad(dir_ + "/bad.npy");
    bad << "not numpy";
  }
  m = MakeTensors({"x=" + dir_ + "/bad.npy"}, std::nullopt, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              StartsWith("x=" + dir_ + "/bad.npy: not a .npy file"));
}

TEST_F(MakeTensorsFileTest, Int64FilesStayInt64AndDoNotDecideTheDtype) {
  // Without --dtype: the float file decides, the labels file is left out.
  absl::StatusOr<TensorMap> m = MakeTensors(
      {"x=" + dir_ + "/a32.npy", "y=" + dir_ + "/y.npy", "g=randn:2"},
      std::nullopt, 1, std::vector<std::string>{"y"});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->at("x").dtype(), DType::kFloat32);
  EXPECT_EQ(m->at("g").dtype(), DType::kFloat32);
  ASSERT_EQ(m->at("y").dtype(), DType::kInt64);
  EXPECT_EQ(m->at("y").data<int64_t>()[2], (int64_t{1} << 53) + 1);
  // With --dtype: converted floats, untouched labels.
  m = MakeTensors({"x=" + dir_ + "/a32.npy", "y=" + dir_ + "/y.npy"},
                  DType::kFloat64, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->at("x").dtype(), DType::kFloat64);
  EXPECT_EQ(m->at("y").dtype(), DType::kInt64);
  // Only labels: generators default to float64.
  m = MakeTensors({"y=" + dir_ + "/y.npy", "g=randn:2"}, std::nullopt, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->at("g").dtype(), DType::kFloat64);
}

TEST_F(MakeTensorsFileTest, LabelRolesAreChecked) {
  const std::vector<std::string> y = {"y"};
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"x=randn:3,4", "y=" + dir_ + "/b64.npy"},
       "y=" + dir_ +
           "/b64.npy: input y holds class labels and must be int64 ('<i8'), "
           "but the file is float64 (numpy: np.save(path, "
           "y.astype(np.int64)))"},
      {{"x=" + dir_ + "/y.npy", "y=labels:3:4"},
       "x=" + dir_ +
           "/y.npy: the file is int64 ('<i8') but input x is float; int64 is "
           "for class labels only (numpy: np.save(path, "
           "x.astype(np.float64)))"},
      {{"x=randn:3,4", "y=randn:3"},
       "y=randn:3: input y holds int64 class labels; give labels:N:C (N "
       "labels in [0, C), e.g. y=labels:8:10) or an int64 .npy file"},
      {{"x=labels:3:4", "y=labels:3:4"},
       "x=labels:3:4: labels: makes int64 class labels but input x is float "
       "(only y hold labels)"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<TensorMap> m = MakeTensors(c.args, std::nullopt, 1, y);
    ASSERT_FALSE(m.ok()) << c.args[0];
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(m.status().message(), c.message);
  }
  absl::StatusOr<TensorMap> m = MakeTensors({"x=labels:3:4"}, std::nullopt, 1,
                                            std::vector<std::string>{});
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("(this layer takes no labels)"));
  // An unknown layer (no roles): nothing is checked here.
  m = MakeTensors({"x=" + dir_ + "/y.npy", "y=randn:3"}, std::nullopt, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->at("x").dtype(), DType::kInt64);
}

TEST(MakeTensorsTest, DuplicateNamesAndHugeTensorsAreRejected) {
  absl::StatusOr<TensorMap> m =
      MakeTensors({"x=randn:2", "x=zeros:2"}, std::nullopt, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("input 'x' is given twice"));

  // Checked before allocating: 2^33 float64 elements would be 64 GiB.
  m = MakeTensors({"x=zeros:65536,65536,2"}, std::nullopt, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("protobuf's 2 GiB message limit"));
}

}  // namespace
}  // namespace layerserve::client
