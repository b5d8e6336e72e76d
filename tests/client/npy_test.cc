// .npy reader/writer: byte-exact agreement with numpy (Debian's
// python3-numpy writes and reads the files at test time), and a precise
// error for every kind of file we refuse.
#include "client/npy.h"

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace layerserve::client {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Writes, with numpy, one file per case into argv[1]; values are
// arange(n) * 0.25 - 3, exact in float32 and float64.
constexpr char kWriteScript[] = R"py(
import sys, numpy as np
d = sys.argv[1]
def vals(shape, dt):
    return (np.arange(int(np.prod(shape)), dtype=np.float64) * 0.25 - 3.0).reshape(shape).astype(dt)
shapes = {1: (5,), 2: (2, 3), 3: (2, 3, 4), 4: (2, 3, 4, 5)}
for r, s in shapes.items():
    for dt in ('f4', 'f8'):
        np.save(f'{d}/v1_{dt}_r{r}.npy', vals(s, '<' + dt))
for ver in (2, 3):
    for dt in ('f4', 'f8'):
        with open(f'{d}/v{ver}_{dt}.npy', 'wb') as f:
            np.lib.format.write_array(f, vals((2, 3, 4), '<' + dt), version=(ver, 0))
np.save(f'{d}/fortran.npy', np.asfortranarray(vals((2, 3), '<f8')))
np.save(f'{d}/bigendian.npy', vals((2, 3), '>f8'))
np.save(f'{d}/int32.npy', np.arange(6, dtype='<i4'))
np.save(f'{d}/float16.npy', np.arange(6, dtype='<f2'))
np.save(f'{d}/scalar.npy', np.float64(1.5))
np.save(f'{d}/zero_dim.npy', np.zeros((0, 3)))
np.save(f'{d}/rank5.npy', np.zeros((1, 1, 1, 1, 2)))
np.save(f'{d}/structured.npy', np.zeros(3, dtype=[('a', '<f8')]))
# Class labels as numpy makes them: its default integer is int64 ('<i8').
labels = np.array([3, 0, 9, 2**40 + 7, -1, 2**62], dtype=np.int64)
np.save(f'{d}/labels_r1.npy', labels)
np.save(f'{d}/labels_default_int.npy', np.array([1, 2, 3]))
np.save(f'{d}/labels_r2.npy', labels.reshape(2, 3))
np.save(f'{d}/labels_bigendian.npy', labels.astype('>i8'))
with open(f'{d}/labels_v2.npy', 'wb') as f:
    np.lib.format.write_array(f, labels, version=(2, 0))
)py";

// Exact int64 values (beyond 2^53, where a float64 would round).
const std::vector<int64_t> kLabels = {
    3, 0, 9, (int64_t{1} << 40) + 7, -1, int64_t{1} << 62};

// argv: path; checks numpy reads our int64 file as kLabels, shape (2, 3).
constexpr char kCheckLabelsScript[] = R"py(
import sys, numpy as np
a = np.load(sys.argv[1])
assert a.dtype == np.int64 and a.dtype.str == '<i8', a.dtype
assert a.shape == (2, 3), a.shape
assert a.tolist() == [[3, 0, 9], [2**40 + 7, -1, 2**62]], a.tolist()
)py";

// argv: path dtype shape... ; checks numpy reads what we wrote.
constexpr char kCheckScript[] = R"py(
import sys, numpy as np
path, dt, shape = sys.argv[1], sys.argv[2], tuple(int(s) for s in sys.argv[3:])
a = np.load(path)
want = (np.arange(int(np.prod(shape)), dtype=np.float64) * 0.25 - 3.0).reshape(shape).astype(dt)
assert a.dtype == np.dtype(dt), (a.dtype, dt)
assert a.shape == shape, (a.shape, shape)
assert a.flags['C_CONTIGUOUS']
assert np.array_equal(a, want), (a, want)
)py";

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir() + "npy_test_XXXXXX";
  char* dir = mkdtemp(tmpl.data());
  EXPECT_NE(dir, nullptr);
  return tmpl;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

int RunPython(const std::string& dir, const std::string& script,
              const std::string& args) {
  const std::string path = dir + "/script.py";
  WriteFile(path, script);
  return system(absl::StrCat(LAYERSERVE_PYTHON, " ", path, " ", args).c_str());
}

Tensor Expected(DType dtype, Shape shape) {
  Tensor t = std::move(Tensor::Zeros(dtype, std::move(shape))).value();
  for (int64_t i = 0; i < t.size(); ++i) t.SetFlat(i, i * 0.25 - 3.0);
  return t;
}

void ExpectSame(const Tensor& got, const Tensor& want) {
  ASSERT_EQ(got.dtype(), want.dtype());
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got.GetFlat(i), want.GetFlat(i)) << "at flat index " << i;
  }
}

class NumpyFilesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir());
    ASSERT_EQ(RunPython(*dir_, kWriteScript, *dir_), 0)
        << "numpy could not write the test files";
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string Path(absl::string_view name) {
    return absl::StrCat(*dir_, "/", name);
  }
  static std::string* dir_;
};
std::string* NumpyFilesTest::dir_ = nullptr;

TEST_F(NumpyFilesTest, ReadsVersion1EveryRankBothDtypes) {
  const std::vector<Shape> shapes = {{5}, {2, 3}, {2, 3, 4}, {2, 3, 4, 5}};
  for (int r = 1; r <= 4; ++r) {
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      const std::string name = absl::StrCat(
          "v1_", dt == DType::kFloat32 ? "f4" : "f8", "_r", r, ".npy");
      SCOPED_TRACE(name);
      absl::StatusOr<Tensor> t = ReadNpy(Path(name));
      ASSERT_TRUE(t.ok()) << t.status();
      ExpectSame(*t, Expected(dt, shapes[r - 1]));
    }
  }
}

TEST_F(NumpyFilesTest, ReadsVersions2And3) {
  for (const char* name :
       {"v2_f4.npy", "v2_f8.npy", "v3_f4.npy", "v3_f8.npy"}) {
    SCOPED_TRACE(name);
    const std::string bytes = ReadFile(Path(name));
    ASSERT_GT(bytes.size(), 8u);
    EXPECT_EQ(bytes[6], name[1] - '0') << "numpy wrote another version";
    absl::StatusOr<Tensor> t = ReadNpy(Path(name));
    ASSERT_TRUE(t.ok()) << t.status();
    ExpectSame(*t, Expected(name[4] == '4' ? DType::kFloat32 : DType::kFloat64,
                            {2, 3, 4}));
  }
}

TEST_F(NumpyFilesTest, WriterIsByteIdenticalToNumpySave) {
  const std::vector<Shape> shapes = {{5}, {2, 3}, {2, 3, 4}, {2, 3, 4, 5}};
  for (int r = 1; r <= 4; ++r) {
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      const std::string name = absl::StrCat(
          "v1_", dt == DType::kFloat32 ? "f4" : "f8", "_r", r, ".npy");
      SCOPED_TRACE(name);
      EXPECT_EQ(EncodeNpy(Expected(dt, shapes[r - 1])), ReadFile(Path(name)));
    }
  }
}

TEST_F(NumpyFilesTest, NumpyLoadsWhatWeWrite) {
  const std::vector<Shape> shapes = {{7}, {3, 2}, {1, 2, 3}, {2, 1, 3, 2}};
  for (const Shape& shape : shapes) {
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      const std::string path = Path("ours.npy");
      ASSERT_TRUE(WriteNpy(path, Expected(dt, shape)).ok());
      std::string args = absl::StrCat(path, " ", DTypeName(dt));
      for (int64_t d : shape) absl::StrAppend(&args, " ", d);
      EXPECT_EQ(RunPython(*dir_, kCheckScript, args), 0) << args;
    }
  }
}

Tensor Labels(Shape shape) {
  Tensor t = std::move(Tensor::Zeros(DType::kInt64, std::move(shape))).value();
  std::copy(kLabels.begin(), kLabels.end(), t.data<int64_t>());
  return t;
}

void ExpectLabels(const Tensor& t, const Shape& shape) {
  ASSERT_EQ(t.dtype(), DType::kInt64);
  ASSERT_EQ(t.shape(), shape);
  const std::vector<int64_t> got(t.data<int64_t>(),
                                 t.data<int64_t>() + t.size());
  EXPECT_EQ(got, kLabels);
}

TEST_F(NumpyFilesTest, ReadsInt64Labels) {
  for (const auto& [name, shape] :
       std::vector<std::pair<const char*, Shape>>{{"labels_r1.npy", {6}},
                                                  {"labels_r2.npy", {2, 3}},
                                                  {"labels_v2.npy", {6}}}) {
    SCOPED_TRACE(name);
    absl::StatusOr<Tensor> t = ReadNpy(Path(name));
    ASSERT_TRUE(t.ok()) << t.status();
    ExpectLabels(*t, shape);
  }
  // np.array([1, 2, 3]) without a dtype: int64 on Linux.
  absl::StatusOr<Tensor> t = ReadNpy(Path("labels_default_int.npy"));
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->dtype(), DType::kInt64);
  EXPECT_EQ(t->data<int64_t>()[2], 3);
}

TEST_F(NumpyFilesTest, Int64WriterIsByteIdenticalAndNumpyLoadsIt) {
  EXPECT_EQ(EncodeNpy(Labels({6})), ReadFile(Path("labels_r1.npy")));
  EXPECT_EQ(EncodeNpy(Labels({2, 3})), ReadFile(Path("labels_r2.npy")));
  const std::string path = Path("our_labels.npy");
  ASSERT_TRUE(WriteNpy(path, Labels({2, 3})).ok());
  EXPECT_EQ(RunPython(*dir_, kCheckLabelsScript, path), 0);
  absl::StatusOr<Tensor> back = ReadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectLabels(*back, {2, 3});
}

TEST_F(NumpyFilesTest, RejectsBigEndianInt64) {
  absl::StatusOr<Tensor> t = ReadNpy(Path("labels_bigendian.npy"));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()),
              AllOf(StartsWith(Path("labels_bigendian.npy") + ": "),
                    HasSubstr("big-endian data ('>i8') is not supported"),
                    HasSubstr("a.astype('<i8')")));
}

TEST_F(NumpyFilesTest, RejectsFortranOrder) {
  absl::StatusOr<Tensor> t = ReadNpy(Path("fortran.npy"));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()),
              AllOf(StartsWith(Path("fortran.npy") + ": "),
                    HasSubstr("Fortran-order data is not supported")));
}

TEST_F(NumpyFilesTest, RejectsBigEndian) {
  absl::StatusOr<Tensor> t = ReadNpy(Path("bigendian.npy"));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              AllOf(StartsWith(Path("bigendian.npy") + ": "),
                    HasSubstr("big-endian data ('>f8') is not supported")));
}

TEST_F(NumpyFilesTest, RejectsOtherDtypes) {
  for (auto [name, descr] : std::vector<std::pair<const char*, const char*>>{
           {"int32.npy", "'<i4'"}, {"float16.npy", "'<f2'"}}) {
    absl::StatusOr<Tensor> t = ReadNpy(Path(name));
    ASSERT_FALSE(t.ok()) << name;
    EXPECT_THAT(
        std::string(t.status().message()),
        AllOf(StartsWith(Path(name) + ": "),
              HasSubstr(absl::StrCat("dtype ", descr, " is not supported")),
              HasSubstr("'<i8' (int64 class labels)")));
  }
  // Labels of another integer width: told how to convert them.
  EXPECT_THAT(std::string(ReadNpy(Path("int32.npy")).status().message()),
              HasSubstr("(numpy: a.astype(np.int64))"));
  EXPECT_THAT(std::string(ReadNpy(Path("float16.npy")).status().message()),
              Not(HasSubstr("np.int64")));
  absl::StatusOr<Tensor> t = ReadNpy(Path("structured.npy"));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("structured dtypes are not supported"));
}

TEST_F(NumpyFilesTest, RejectsScalarsEmptyAndRank5) {
  absl::StatusOr<Tensor> t = ReadNpy(Path("scalar.npy"));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("0-d (scalar) arrays"));
  t = ReadNpy(Path("zero_dim.npy"));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("dim 0 must be >= 1, got 0"));
  t = ReadNpy(Path("rank5.npy"));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("rank must be 1..4, got 5"));
}

TEST_F(NumpyFilesTest, RejectsTruncatedData) {
  const std::string bytes = ReadFile(Path("v1_f8_r2.npy"));
  absl::StatusOr<Tensor> t =
      ParseNpy(absl::string_view(bytes).substr(0, bytes.size() - 3), "cut.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              AllOf(StartsWith("cut.npy: truncated"),
                    HasSubstr("needs 48 data bytes but the file has 45")));
}

TEST(NpyTest, RoundTripsEveryRankAndDtype) {
  const std::vector<Shape> shapes = {{1}, {3}, {4, 1}, {2, 3, 5}, {2, 3, 4, 5}};
  for (const Shape& shape : shapes) {
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      Tensor t = std::move(Tensor::RandomNormal(dt, shape, 7)).value();
      absl::StatusOr<Tensor> back = ParseNpy(EncodeNpy(t), "mem");
      ASSERT_TRUE(back.ok()) << back.status();
      ExpectSame(*back, t);
    }
    Tensor labels = std::move(Tensor::Zeros(DType::kInt64, shape)).value();
    for (int64_t i = 0; i < labels.size(); ++i) {
      labels.data<int64_t>()[i] = (i * 7919) % 1000 - 500;
    }
    absl::StatusOr<Tensor> back = ParseNpy(EncodeNpy(labels), "mem");
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSame(*back, labels);
  }
}

TEST(NpyTest, HeaderIsVersion1AlignedTo64) {
  Tensor t = std::move(Tensor::Zeros(DType::kFloat32, {2, 3, 4, 5})).value();
  const std::string bytes = EncodeNpy(t);
  ASSERT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(bytes[8]) |
                            static_cast<unsigned char>(bytes[9]) << 8;
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(bytes[10 + header_len - 1], '\n');
  EXPECT_EQ(bytes.size(), 10 + header_len + t.nbytes());
  EXPECT_THAT(bytes.substr(10, header_len),
              StartsWith("{'descr': '<f4', 'fortran_order': False, "
                         "'shape': (2, 3, 4, 5), }"));
}

TEST(NpyTest, RejectsBadMagic) {
  absl::StatusOr<Tensor> t =
      ParseNpy("PK\x03\x04 a zip file, not npy", "z.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(),
            "z.npy: not a .npy file (bad magic: expected \\x93NUMPY)");
  EXPECT_FALSE(ParseNpy("", "empty.npy").ok());
}

TEST(NpyTest, RejectsUnknownVersion) {
  std::string bytes =
      EncodeNpy(std::move(Tensor::Zeros(DType::kFloat64, {2})).value());
  bytes[6] = 4;
  absl::StatusOr<Tensor> t = ParseNpy(bytes, "v4.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("unsupported .npy format version 4.0"));
}

TEST(NpyTest, RejectsHeaderLengthPastEndOfFile) {
  std::string bytes =
      EncodeNpy(std::move(Tensor::Zeros(DType::kFloat64, {2})).value());
  bytes[8] = '\xff';
  bytes[9] = '\x7f';
  absl::StatusOr<Tensor> t = ParseNpy(bytes, "lie.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              StartsWith("lie.npy: truncated: the header length field says "
                         "32767 bytes"));
  EXPECT_FALSE(ParseNpy(bytes.substr(0, 7), "short.npy").ok());
  EXPECT_FALSE(ParseNpy(bytes.substr(0, 9), "short.npy").ok());
}

TEST(NpyTest, RejectsShapeThatDisagreesWithData) {
  // The header claims (3,) but 2 elements follow: a header that lies.
  Tensor t = std::move(Tensor::Zeros(DType::kFloat64, {2})).value();
  std::string bytes = EncodeNpy(t);
  const size_t at = bytes.find("(2,)");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 1] = '3';
  absl::StatusOr<Tensor> r = ParseNpy(bytes, "lie.npy");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("needs 24 data bytes but the file has 16"));
}

TEST(NpyTest, RejectsTrailingBytes) {
  std::string bytes =
      EncodeNpy(std::move(Tensor::Zeros(DType::kFloat32, {2, 2})).value());
  bytes += "xyz";
  absl::StatusOr<Tensor> t = ParseNpy(bytes, "long.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("3 unexpected bytes after the data"));
}

// Builds a v1 file around an arbitrary header dict.
std::string WithHeader(const std::string& dict, size_t data_bytes) {
  std::string header = dict + "\n";
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  return out + header + std::string(data_bytes, '\0');
}

TEST(NpyTest, RejectsMalformedHeaders) {
  struct Case {
    std::string dict;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{'descr': '<f8', 'shape': (2,), }", "missing key 'fortran_order'"},
      {"{'descr': '<f8', 'fortran_order': False}", "missing key 'shape'"},
      {"{'fortran_order': False, 'shape': (2,)}", "missing key 'descr'"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'x': 1}",
       "unexpected key 'x'"},
      {"{'descr': '<f8', 'fortran_order': Nope, 'shape': (2,)}",
       "expected True or False"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (2, -1)}",
       "expected a non-negative integer in 'shape'"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': [2]}",
       "expected '(' for 'shape'"},
      {"{'descr': <f8, 'fortran_order': False, 'shape': (2,)}",
       "expected a quoted string"},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,)} junk",
       "unexpected characters after the closing '}'"},
      {"['descr']", "expected '{'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Tensor> t = ParseNpy(WithHeader(c.dict, 16), "h.npy");
    ASSERT_FALSE(t.ok()) << c.dict;
    EXPECT_THAT(
        std::string(t.status().message()),
        AllOf(StartsWith("h.npy: malformed header: "), HasSubstr(c.message)))
        << c.dict;
  }
}

TEST(NpyTest, AcceptsDoubleQuotesAndNoTrailingComma) {
  absl::StatusOr<Tensor> t =
      ParseNpy(WithHeader("{\"descr\": \"<f8\", \"fortran_order\": False, "
                          "\"shape\": (2,)}",
                          16),
               "h.npy");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->shape(), Shape({2}));
}

TEST(NpyTest, MissingFileIsNotFoundNamingThePath) {
  absl::StatusOr<Tensor> t = ReadNpy("/nonexistent/dir/x.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(t.status().message()),
              StartsWith("/nonexistent/dir/x.npy: cannot open"));
}

TEST(NpyTest, UnwritablePathIsAnError) {
  Tensor t = std::move(Tensor::Zeros(DType::kFloat64, {2})).value();
  absl::Status st = WriteNpy("/nonexistent/dir/out.npy", t);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()),
              StartsWith("/nonexistent/dir/out.npy: cannot open"));
}

}  // namespace
}  // namespace layerserve::client
