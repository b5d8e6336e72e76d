// Output helpers for layerctl: a minimal JSON writer for --json, Python's
// float repr (so the notebook prints numbers the way the seed did), and the
// one-line tensor summaries.
//
// Thread-safety: JsonWriter is a value type for one thread; the functions
// are pure.
#ifndef LAYERSERVE_CLIENT_CLI_OUTPUT_H_
#define LAYERSERVE_CLIENT_CLI_OUTPUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "lib/tensor.h"

namespace layerserve::client {

// Streams one JSON value. Commas and nesting are handled; the caller opens
// and closes objects/arrays in order and calls Key() before each member.
// Non-finite numbers become null (JSON has no NaN).
class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(absl::string_view key);
  JsonWriter& String(absl::string_view value);
  JsonWriter& Number(double value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  JsonWriter& IntArray(const std::vector<int64_t>& values);

  const std::string& str() const { return out_; }

 private:
  void Separate();

  std::string out_;
  // Per open container: whether it has no element yet.
  std::vector<bool> empty_;
  bool after_key_ = false;
};

// "\"...\"" with JSON escapes.
std::string JsonQuote(absl::string_view s);

// Python 3's repr(float): the shortest digits that round-trip, fixed
// notation for 1e-4 <= |v| < 1e16 and "d.ddde-XX" otherwise; "nan", "inf".
std::string PyRepr(double v);

// Summary statistics of a tensor, NaNs excluded from min/max/mean.
struct TensorStats {
  double min = 0;
  double max = 0;
  double mean = 0;
  int64_t nan_count = 0;
};
TensorStats ComputeStats(const Tensor& t);

// "out: (2, 3, 2, 2) float64 min -1.24696 max 2.38248 mean 0.472917";
// int64 tensors show exact integer min/max. A one-element tensor (a loss)
// is shown as its value, with every digit:
// "loss: (1,) float64 = 2.3044531461849513".
std::string SummaryLine(absl::string_view name, const Tensor& t);

// Adds {"shape": [...], "dtype": ..., "min": ..., "max": ..., "mean": ...},
// and "value" for a one-element tensor.
void SummaryJson(const Tensor& t, JsonWriter& json);

}  // namespace layerserve::client

#endif  // LAYERSERVE_CLIENT_CLI_OUTPUT_H_
