#include "client/npy.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/status_macros.h"

namespace layerserve::client {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              ".npy data is read and written in host byte order");

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// A .npy header is padded so that magic + version + length + dict is a
// multiple of this (numpy >= 1.9 uses 64; older files used 16).
constexpr size_t kHeaderAlignment = 64;
constexpr absl::string_view kSupported =
    "expected '<f4' (float32), '<f8' (float64) or '<i8' (int64 class labels)";

absl::Status Error(absl::string_view name, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", problem));
}

uint32_t ReadLe(absl::string_view bytes, size_t offset, size_t width) {
  uint32_t v = 0;
  for (size_t i = 0; i < width; ++i) {
    v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[offset + i]))
         << (8 * i);
  }
  return v;
}

// What the header dict says.
struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// A recursive-descent parser for the one Python literal numpy writes:
//   {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }
// Not a general Python parser: strings without escapes, True/False, and
// tuples of non-negative integers are all a .npy header can contain.
class HeaderParser {
 public:
  HeaderParser(absl::string_view text, absl::string_view name)
      : text_(text), name_(name) {}

  absl::StatusOr<Header> Parse() {
    Header header;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    SkipSpace();
    if (!Consume('{')) return Fail("expected '{' at the start of the header");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      LS_ASSIGN_OR_RETURN(std::string key, ParseString("a key"));
      SkipSpace();
      if (!Consume(':'))
        return Fail(absl::StrCat("expected ':' after '", key, "'"));
      SkipSpace();
      if (key == "descr") {
        if (Peek() == '[') {
          return Error(name_, absl::StrCat("structured dtypes are not "
                                           "supported; ",
                                           kSupported));
        }
        LS_ASSIGN_OR_RETURN(header.descr, ParseString("the 'descr' value"));
        seen_descr = true;
      } else if (key == "fortran_order") {
        LS_ASSIGN_OR_RETURN(header.fortran_order, ParseBool());
        seen_fortran = true;
      } else if (key == "shape") {
        LS_ASSIGN_OR_RETURN(header.shape, ParseTuple());
        seen_shape = true;
      } else {
        return Fail(absl::StrCat("unexpected key '", key,
                                 "' (a .npy header has exactly descr, "
                                 "fortran_order and shape)"));
      }
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume('}')) break;
      return Fail(
          absl::StrCat("expected ',' or '}' after the value of '", key, "'"));
    }
    SkipSpace();
    if (pos_ != text_.size()) {
      return Fail("unexpected characters after the closing '}'");
    }
    if (!seen_descr) return Fail("missing key 'descr'");
    if (!seen_fortran) return Fail("missing key 'fortran_order'");
    if (!seen_shape) return Fail("missing key 'shape'");
    return header;
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(text_[pos_])) ++pos_;
  }
  absl::Status Fail(absl::string_view what) const {
    return Error(name_, absl::StrCat("malformed header: ", what, " at offset ",
                                     pos_, " in \"", text_, "\""));
  }

  absl::StatusOr<std::string> ParseString(absl::string_view what) {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') {
      return Fail(absl::StrCat("expected a quoted string for ", what));
    }
    ++pos_;
    const size_t end = text_.find(quote, pos_);
    if (end == absl::string_view::npos) return Fail("unterminated string");
    std::string s(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }

  absl::StatusOr<bool> ParseBool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    return Fail("expected True or False for 'fortran_order'");
  }

  absl::StatusOr<std::vector<int64_t>> ParseTuple() {
    if (!Consume('(')) return Fail("expected '(' for 'shape'");
    std::vector<int64_t> dims;
    while (true) {
      SkipSpace();
      if (Consume(')')) break;
      const size_t start = pos_;
      while (pos_ < text_.size() && absl::ascii_isdigit(text_[pos_])) ++pos_;
      int64_t dim = 0;
      if (pos_ == start ||
          !absl::SimpleAtoi(text_.substr(start, pos_ - start), &dim)) {
        return Fail("expected a non-negative integer in 'shape'");
      }
      Consume('L');  // Python 2 era files spell longs "3L"
      dims.push_back(dim);
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume(')')) break;
      return Fail("expected ',' or ')' in 'shape'");
    }
    return dims;
  }

  absl::string_view text_;
  absl::string_view name_;
  size_t pos_ = 0;
};

absl::StatusOr<DType> DTypeFromDescr(absl::string_view descr,
                                     absl::string_view name) {
  if (descr == "<f4") return DType::kFloat32;
  if (descr == "<f8") return DType::kFloat64;
  if (descr == "<i8") return DType::kInt64;
  if (descr == ">f4" || descr == ">f8" || descr == ">i8") {
    return Error(name, absl::StrCat("big-endian data ('", descr,
                                    "') is not supported; expected "
                                    "little-endian '<f4', '<f8' or '<i8' "
                                    "(numpy: a.astype('<",
                                    descr.substr(1), "'))"));
  }
  // Other integer widths are most likely labels saved without a dtype.
  const bool integer =
      descr.size() >= 2 && (descr[1] == 'i' || descr[1] == 'u');
  return Error(
      name, absl::StrCat("dtype '", descr, "' is not supported; ", kSupported,
                         integer ? " (numpy: a.astype(np.int64))" : ""));
}

absl::string_view DescrOf(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "<f4";
    case DType::kFloat64:
      return "<f8";
    case DType::kInt64:
      break;
  }
  return "<i8";
}

std::string HeaderDict(const Tensor& tensor) {
  std::string shape;
  if (tensor.rank() == 1) {
    shape = absl::StrCat("(", tensor.dim(0), ",)");
  } else {
    shape = absl::StrCat("(", absl::StrJoin(tensor.shape(), ", "), ")");
  }
  return absl::StrCat("{'descr': '", DescrOf(tensor.dtype()),
                      "', 'fortran_order': False, 'shape': ", shape, ", }");
}

}  // namespace

absl::StatusOr<Tensor> ParseNpy(absl::string_view bytes,
                                absl::string_view name) {
  if (bytes.size() < kMagicLen ||
      bytes.substr(0, kMagicLen) != absl::string_view(kMagic, kMagicLen)) {
    return Error(name, "not a .npy file (bad magic: expected \\x93NUMPY)");
  }
  if (bytes.size() < kMagicLen + 2) {
    return Error(name, "truncated: file ends inside the version field");
  }
  const int major = static_cast<unsigned char>(bytes[kMagicLen]);
  const int minor = static_cast<unsigned char>(bytes[kMagicLen + 1]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    return Error(name, absl::StrCat("unsupported .npy format version ", major,
                                    ".", minor, " (expected 1.0, 2.0 or 3.0)"));
  }
  // Version 1.0 has a 2-byte header length; 2.0 and 3.0 (which only adds
  // utf-8 in the header) have 4 bytes.
  const size_t len_width = major == 1 ? 2 : 4;
  const size_t len_offset = kMagicLen + 2;
  if (bytes.size() < len_offset + len_width) {
    return Error(name, "truncated: file ends inside the header length field");
  }
  const size_t header_len = ReadLe(bytes, len_offset, len_width);
  const size_t data_offset = len_offset + len_width + header_len;
  if (bytes.size() < data_offset) {
    return Error(
        name, absl::StrCat("truncated: the header length field says ",
                           header_len, " bytes but only ",
                           bytes.size() - len_offset - len_width, " follow"));
  }
  HeaderParser parser(bytes.substr(len_offset + len_width, header_len), name);
  LS_ASSIGN_OR_RETURN(Header header, parser.Parse());
  LS_ASSIGN_OR_RETURN(DType dtype, DTypeFromDescr(header.descr, name));
  if (header.fortran_order) {
    return Error(name,
                 "Fortran-order data is not supported; expected C order "
                 "(numpy: np.ascontiguousarray(a))");
  }
  if (header.shape.empty()) {
    return Error(name,
                 "0-d (scalar) arrays are not supported; expected rank 1..4");
  }
  absl::Status shape_ok = ValidateShape(header.shape, "shape");
  if (!shape_ok.ok()) return Error(name, shape_ok.message());
  const int64_t count = NumElements(header.shape);
  const size_t itemsize = ItemSize(dtype);
  if (static_cast<uint64_t>(count) >
      std::numeric_limits<uint64_t>::max() / itemsize) {
    return Error(name, absl::StrCat("shape ", ShapeString(header.shape),
                                    " is too large"));
  }
  const uint64_t want = static_cast<uint64_t>(count) * itemsize;
  const uint64_t have = bytes.size() - data_offset;
  if (have < want) {
    return Error(
        name, absl::StrCat("truncated: shape ", ShapeString(header.shape), " ",
                           header.descr, " needs ", want,
                           " data bytes but the file has ", have));
  }
  if (have > want) {
    return Error(name, absl::StrCat(have - want,
                                    " unexpected bytes after the data (shape ",
                                    ShapeString(header.shape), " ",
                                    header.descr, " needs ", want, ")"));
  }
  absl::StatusOr<Tensor> tensor = Tensor::Zeros(dtype, header.shape);
  if (!tensor.ok()) return Error(name, tensor.status().message());
  if (want > 0)
    std::memcpy(tensor->raw_data(), bytes.data() + data_offset, want);
  return tensor;
}

absl::StatusOr<Tensor> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat(path, ": read error"));
  }
  return ParseNpy(buf.str(), path);
}

std::string EncodeNpy(const Tensor& tensor) {
  std::string dict = HeaderDict(tensor);
  // magic(6) + version(2) + length(2) + dict + padding + '\n'.
  const size_t unpadded = kMagicLen + 2 + 2 + dict.size() + 1;
  const size_t padded =
      (unpadded + kHeaderAlignment - 1) / kHeaderAlignment * kHeaderAlignment;
  dict.append(padded - unpadded, ' ');
  dict.push_back('\n');
  const size_t header_len = dict.size();

  std::string out;
  out.reserve(padded + tensor.nbytes());
  out.append(kMagic, kMagicLen);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header_len & 0xff));
  out.push_back(static_cast<char>((header_len >> 8) & 0xff));
  out.append(dict);
  out.append(static_cast<const char*>(tensor.raw_data()), tensor.nbytes());
  return out;
}

absl::Status WriteNpy(const std::string& path, const Tensor& tensor) {
  const std::string bytes = EncodeNpy(tensor);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(absl::StrCat(
        path, ": cannot open for writing (", std::strerror(errno), ")"));
  }
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    return absl::DataLossError(
        absl::StrCat(path, ": write failed (", std::strerror(errno), ")"));
  }
  return absl::OkStatus();
}

}  // namespace layerserve::client
