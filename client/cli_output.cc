#include "client/cli_output.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace layerserve::client {

void JsonWriter::Separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!empty_.empty()) {
    if (!empty_.back()) out_ += ',';
    empty_.back() = false;
  }
}

JsonWriter& JsonWriter::BeginObject() {
  Separate();
  out_ += '{';
  empty_.push_back(true);
  return *this;
}
JsonWriter& JsonWriter::EndObject() {
  out_ += '}';
  empty_.pop_back();
  return *this;
}
JsonWriter& JsonWriter::BeginArray() {
  Separate();
  out_ += '[';
  empty_.push_back(true);
  return *this;
}
JsonWriter& JsonWriter::EndArray() {
  out_ += ']';
  empty_.pop_back();
  return *this;
}
JsonWriter& JsonWriter::Key(absl::string_view key) {
  Separate();
  out_ += JsonQuote(key);
  out_ += ':';
  after_key_ = true;
  return *this;
}
JsonWriter& JsonWriter::String(absl::string_view value) {
  Separate();
  out_ += JsonQuote(value);
  return *this;
}
JsonWriter& JsonWriter::Number(double value) {
  Separate();
  if (!std::isfinite(value)) {
    out_ += "null";
  } else {
    out_ += absl::StrFormat("%.17g", value);
  }
  return *this;
}
JsonWriter& JsonWriter::Int(int64_t value) {
  Separate();
  absl::StrAppend(&out_, value);
  return *this;
}
JsonWriter& JsonWriter::Bool(bool value) {
  Separate();
  out_ += value ? "true" : "false";
  return *this;
}
JsonWriter& JsonWriter::Null() {
  Separate();
  out_ += "null";
  return *this;
}
JsonWriter& JsonWriter::IntArray(const std::vector<int64_t>& values) {
  BeginArray();
  for (int64_t v : values) Int(v);
  return EndArray();
}

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string PyRepr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return std::signbit(v) ? "-0.0" : "0.0";
  // Shortest round-trip digits, in scientific form: "-d.ddde[+-]XX".
  char buf[64];
  const std::to_chars_result r =
      std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  const size_t e = sci.find('e');
  const int exp = std::atoi(sci.c_str() + e + 1);
  std::string sign, digits;
  for (size_t i = 0; i < e; ++i) {
    if (sci[i] == '-') {
      sign = "-";
    } else if (sci[i] != '.') {
      digits += sci[i];
    }
  }
  if (exp < -4 || exp >= 16) {
    std::string mantissa = digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&mantissa, ".", digits.substr(1));
    return absl::StrFormat("%s%se%c%02d", sign, mantissa, exp < 0 ? '-' : '+',
                           std::abs(exp));
  }
  // Fixed notation, always with a fractional part ("1.0").
  std::string intpart, frac;
  if (exp < 0) {
    intpart = "0";
    frac = std::string(static_cast<size_t>(-exp - 1), '0') + digits;
  } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
    intpart = digits + std::string(exp + 1 - digits.size(), '0');
    frac = "0";
  } else {
    intpart = digits.substr(0, exp + 1);
    frac = digits.substr(exp + 1);
  }
  return absl::StrCat(sign, intpart, ".", frac);
}

TensorStats ComputeStats(const Tensor& t) {
  TensorStats s;
  double lo = std::numeric_limits<double>::infinity();
  double hi = -lo;
  double sum = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < t.size(); ++i) {
    const double v = t.GetFlat(i);
    if (std::isnan(v)) {
      ++s.nan_count;
      continue;
    }
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
    ++n;
  }
  if (n > 0) {
    s.min = lo;
    s.max = hi;
    s.mean = sum / static_cast<double>(n);
  } else {
    s.min = s.max = s.mean = std::numeric_limits<double>::quiet_NaN();
  }
  return s;
}

std::string SummaryLine(absl::string_view name, const Tensor& t) {
  const bool integer = t.dtype() == DType::kInt64;
  if (t.size() == 1) {
    // A loss: the number itself, all its digits.
    return absl::StrFormat(
        "%s: %s %s = %s", name, ShapeString(t.shape()), DTypeName(t.dtype()),
        integer ? absl::StrCat(t.data<int64_t>()[0]) : PyRepr(t.GetFlat(0)));
  }
  const TensorStats s = ComputeStats(t);
  if (integer) {
    const int64_t* v = t.data<int64_t>();
    const auto [lo, hi] = std::minmax_element(v, v + t.size());
    return absl::StrFormat("%s: %s int64 min %d max %d mean %.6g", name,
                           ShapeString(t.shape()), *lo, *hi, s.mean);
  }
  std::string line = absl::StrFormat(
      "%s: %s %s min %.6g max %.6g mean %.6g", name, ShapeString(t.shape()),
      DTypeName(t.dtype()), s.min, s.max, s.mean);
  if (s.nan_count > 0) absl::StrAppend(&line, " nan ", s.nan_count);
  return line;
}

void SummaryJson(const Tensor& t, JsonWriter& json) {
  const TensorStats s = ComputeStats(t);
  json.Key("shape").IntArray(t.shape());
  json.Key("dtype").String(DTypeName(t.dtype()));
  json.Key("min").Number(s.min);
  json.Key("max").Number(s.max);
  json.Key("mean").Number(s.mean);
  json.Key("nan_count").Int(s.nan_count);
  if (t.size() == 1) {
    if (t.dtype() == DType::kInt64) {
      json.Key("value").Int(t.data<int64_t>()[0]);
    } else {
      json.Key("value").Number(t.GetFlat(0));
    }
  }
}

}  // namespace layerserve::client
