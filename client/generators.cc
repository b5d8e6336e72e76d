#include "client/generators.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/npy.h"
#include "lib/status_macros.h"

namespace layerserve::client {
namespace {

constexpr absl::string_view kSpecHelp =
    "expected randn:D1,D2,..., linspace:START,STOP:D1,D2,..., zeros:D1,..., "
    "labels:N:C, or a path to a .npy file";

absl::Status SpecError(absl::string_view spec, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad tensor spec '", spec, "': ", problem));
}

absl::StatusOr<Shape> ParseDims(absl::string_view spec,
                                absl::string_view dims) {
  if (dims.empty()) {
    return SpecError(spec, "missing dims (e.g. 4,3,5,5)");
  }
  Shape shape;
  for (absl::string_view d : absl::StrSplit(dims, ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(d, &v)) {
      return SpecError(spec, absl::StrCat("dim '", d, "' is not an integer"));
    }
    if (v < 1) {
      return SpecError(spec, absl::StrCat("dim ", v, " must be >= 1"));
    }
    shape.push_back(v);
  }
  if (shape.size() > static_cast<size_t>(kMaxRank)) {
    return SpecError(spec, absl::StrCat(shape.size(), " dims; at most ",
                                        kMaxRank, " are allowed"));
  }
  absl::Status st = ValidateShape(shape, "dims");
  if (!st.ok()) return SpecError(spec, st.message());
  return shape;
}

absl::StatusOr<double> ParseNumber(absl::string_view spec,
                                   absl::string_view what,
                                   absl::string_view text) {
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || !std::isfinite(v)) {
    return SpecError(
        spec, absl::StrCat(what, " '", text, "' is not a finite number"));
  }
  return v;
}

bool IsIdentifier(absl::string_view s) {
  if (s.empty() || absl::ascii_isdigit(s[0])) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(c) && c != '_') return false;
  }
  return true;
}

// splitmix64's finalizer: a cheap, well-mixed bijection on 64 bits.
uint64_t Mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// labels:N:C's two integers; `what` is "N" or "C".
absl::StatusOr<int64_t> ParseCount(absl::string_view spec,
                                   absl::string_view what,
                                   absl::string_view text) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v)) {
    return SpecError(spec,
                     absl::StrCat(what, " '", text, "' is not an integer"));
  }
  if (v < 1) {
    return SpecError(spec, absl::StrCat(what, " must be >= 1, got ", v));
  }
  return v;
}

// N labels uniform in [0, classes), the same on every machine: mt19937_64 is
// fully specified by the standard, std::uniform_int_distribution is not, so
// the range reduction is ours (rejection sampling, hence unbiased).
absl::StatusOr<Tensor> RandomLabels(int64_t n, int64_t classes, uint64_t seed) {
  LS_ASSIGN_OR_RETURN(Tensor t, Tensor::Zeros(DType::kInt64, {n}));
  std::mt19937_64 rng(seed);
  const uint64_t c = static_cast<uint64_t>(classes);
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t limit = max - max % c;  // a multiple of c
  int64_t* y = t.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    uint64_t v = rng();
    while (v >= limit) v = rng();
    y[i] = static_cast<int64_t>(v % c);
  }
  return t;
}

absl::Status CheckSize(absl::string_view arg, const Shape& shape, DType dtype) {
  const uint64_t bytes =
      static_cast<uint64_t>(NumElements(shape)) * ItemSize(dtype);
  if (static_cast<uint64_t>(NumElements(shape)) > kMaxTensorBytes ||
      bytes > kMaxTensorBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(arg, ": shape ", ShapeString(shape), " ", DTypeName(dtype),
                     " is ", bytes, " bytes; a request cannot carry more than ",
                     kMaxTensorBytes, " (protobuf's 2 GiB message limit)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TensorSpec> ParseTensorSpec(absl::string_view spec) {
  TensorSpec out;
  if (spec.empty()) return SpecError(spec, kSpecHelp);
  const size_t colon = spec.find(':');
  const absl::string_view kind = spec.substr(0, colon);
  const absl::string_view rest =
      colon == absl::string_view::npos ? "" : spec.substr(colon + 1);
  const bool is_generator_word = kind == "randn" || kind == "linspace" ||
                                 kind == "zeros" || kind == "labels";
  if (kind == "labels" && colon == absl::string_view::npos) {
    return SpecError(spec,
                     "labels needs N:C (N labels in [0, C)), e.g. labels:8:10");
  }
  if (is_generator_word && colon == absl::string_view::npos) {
    return SpecError(
        spec, absl::StrCat(kind, " needs dims, e.g. ", kind,
                           kind == "linspace" ? ":-0.1,0.5" : "", ":2,3,4,4"));
  }
  if (kind == "randn" || kind == "zeros") {
    out.kind =
        kind == "randn" ? TensorSpec::Kind::kRandn : TensorSpec::Kind::kZeros;
    LS_ASSIGN_OR_RETURN(out.shape, ParseDims(spec, rest));
    return out;
  }
  if (kind == "linspace") {
    std::vector<absl::string_view> parts = absl::StrSplit(rest, ':');
    if (parts.size() != 2) {
      return SpecError(spec, "expected linspace:START,STOP:D1,D2,...");
    }
    std::vector<absl::string_view> range = absl::StrSplit(parts[0], ',');
    if (range.size() != 2) {
      return SpecError(
          spec, absl::StrCat("expected START,STOP, got '", parts[0], "'"));
    }
    out.kind = TensorSpec::Kind::kLinspace;
    LS_ASSIGN_OR_RETURN(out.start, ParseNumber(spec, "START", range[0]));
    LS_ASSIGN_OR_RETURN(out.stop, ParseNumber(spec, "STOP", range[1]));
    LS_ASSIGN_OR_RETURN(out.shape, ParseDims(spec, parts[1]));
    return out;
  }
  if (kind == "labels") {
    std::vector<absl::string_view> parts = absl::StrSplit(rest, ':');
    if (parts.size() != 2) {
      return SpecError(
          spec, "expected labels:N:C (N labels in [0, C)), e.g. labels:8:10");
    }
    out.kind = TensorSpec::Kind::kLabels;
    LS_ASSIGN_OR_RETURN(const int64_t n, ParseCount(spec, "N", parts[0]));
    LS_ASSIGN_OR_RETURN(out.classes, ParseCount(spec, "C", parts[1]));
    out.shape = {n};
    return out;
  }
  // "randm:4,3" is a typo, not a file named like that: a word before ':'
  // that is no generator is an error; real paths are rarely spelled so.
  if (colon != absl::string_view::npos && IsIdentifier(kind)) {
    return SpecError(
        spec, absl::StrCat("unknown generator '", kind, "'; ", kSpecHelp));
  }
  out.kind = TensorSpec::Kind::kFile;
  out.path = std::string(spec);
  return out;
}

absl::StatusOr<NamedTensorSpec> ParseNamedTensorSpec(absl::string_view arg) {
  const size_t eq = arg.find('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad input '", arg, "': expected NAME=SPEC, e.g. x=randn:4,3,5,5"));
  }
  NamedTensorSpec out;
  out.name = std::string(arg.substr(0, eq));
  out.text = std::string(arg.substr(eq + 1));
  if (!IsIdentifier(out.name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad input '", arg, "': name '", out.name,
                     "' must be a name such as x, w, b or dout"));
  }
  absl::StatusOr<TensorSpec> spec = ParseTensorSpec(out.text);
  if (!spec.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(out.name, ": ", spec.status().message()));
  }
  out.spec = *std::move(spec);
  return out;
}

uint64_t DerivedSeed(uint64_t seed, absl::string_view name) {
  // FNV-1a of the name, then mixed with the seed.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return Mix(Mix(seed) ^ h);
}

absl::StatusOr<TensorMap> MakeTensors(
    const std::vector<std::string>& args, std::optional<DType> dtype,
    uint64_t seed,
    const std::optional<std::vector<std::string>>& label_inputs) {
  std::vector<NamedTensorSpec> specs;
  for (const std::string& arg : args) {
    LS_ASSIGN_OR_RETURN(NamedTensorSpec s, ParseNamedTensorSpec(arg));
    for (const NamedTensorSpec& prev : specs) {
      if (prev.name == s.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", s.name, "' is given twice"));
      }
    }
    specs.push_back(std::move(s));
  }
  auto is_label = [&](const std::string& name) {
    return label_inputs.has_value() &&
           std::find(label_inputs->begin(), label_inputs->end(), name) !=
               label_inputs->end();
  };
  // Which inputs are labels is known before any file is read: a generator
  // of the wrong kind fails first.
  for (const NamedTensorSpec& s : specs) {
    if (!label_inputs.has_value()) break;
    const std::string arg = absl::StrCat(s.name, "=", s.text);
    const TensorSpec::Kind kind = s.spec.kind;
    if (is_label(s.name) && kind != TensorSpec::Kind::kLabels &&
        kind != TensorSpec::Kind::kFile) {
      return absl::InvalidArgumentError(absl::StrCat(
          arg, ": input ", s.name,
          " holds int64 class labels; give labels:N:C (N labels in [0, C), "
          "e.g. ",
          s.name, "=labels:8:10) or an int64 .npy file"));
    }
    if (!is_label(s.name) && kind == TensorSpec::Kind::kLabels) {
      return absl::InvalidArgumentError(absl::StrCat(
          arg, ": labels: makes int64 class labels but input ", s.name,
          " is float",
          label_inputs->empty()
              ? " (this layer takes no labels)"
              : absl::StrCat(" (only ", absl::StrJoin(*label_inputs, ", "),
                             " hold labels)")));
    }
  }

  // Files first: without --dtype they decide the dtype of the generators.
  TensorMap files;
  std::string first_file;
  std::optional<DType> file_dtype;
  for (const NamedTensorSpec& s : specs) {
    if (s.spec.kind != TensorSpec::Kind::kFile) continue;
    absl::StatusOr<Tensor> t = ReadNpy(s.spec.path);
    if (!t.ok()) {
      return absl::Status(t.status().code(),
                          absl::StrCat(s.name, "=", t.status().message()));
    }
    const std::string arg = absl::StrCat(s.name, "=", s.spec.path);
    if (is_label(s.name) && t->dtype() != DType::kInt64) {
      return absl::InvalidArgumentError(absl::StrCat(
          arg, ": input ", s.name,
          " holds class labels and must be int64 ('<i8'), but the file is ",
          DTypeName(t->dtype()), " (numpy: np.save(path, ", s.name,
          ".astype(np.int64)))"));
    }
    if (label_inputs.has_value() && !is_label(s.name) &&
        t->dtype() == DType::kInt64) {
      return absl::InvalidArgumentError(absl::StrCat(
          arg, ": the file is int64 ('<i8') but input ", s.name,
          " is float; int64 is for class labels only (numpy: np.save(path, ",
          s.name, ".astype(np.float64)))"));
    }
    if (t->dtype() == DType::kInt64) {
      // Labels: no part in the float dtype, never converted.
      files.emplace(s.name, *std::move(t));
      continue;
    }
    if (!file_dtype.has_value()) {
      first_file = s.spec.path;
      file_dtype = t->dtype();
    } else if (!dtype.has_value() && t->dtype() != *file_dtype) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs have mixed dtypes: ", first_file, " is ",
                       DTypeName(*file_dtype), " but ", s.spec.path, " is ",
                       DTypeName(t->dtype()), "; pass --dtype to convert"));
    }
    files.emplace(s.name, *std::move(t));
  }
  const DType resolved = dtype.value_or(file_dtype.value_or(DType::kFloat64));

  TensorMap out;
  for (const NamedTensorSpec& s : specs) {
    const std::string arg = absl::StrCat(s.name, "=", s.text);
    Tensor t;
    switch (s.spec.kind) {
      case TensorSpec::Kind::kFile: {
        Tensor& f = files.find(s.name)->second;
        const bool keep = f.dtype() == resolved || f.dtype() == DType::kInt64;
        t = keep ? std::move(f) : f.CastTo(resolved);
        break;
      }
      case TensorSpec::Kind::kRandn: {
        LS_RETURN_IF_ERROR(CheckSize(arg, s.spec.shape, resolved));
        LS_ASSIGN_OR_RETURN(t, Tensor::RandomNormal(resolved, s.spec.shape,
                                                    DerivedSeed(seed, s.name)));
        break;
      }
      case TensorSpec::Kind::kLinspace: {
        LS_RETURN_IF_ERROR(CheckSize(arg, s.spec.shape, resolved));
        LS_ASSIGN_OR_RETURN(t, Tensor::Linspace(resolved, s.spec.shape,
                                                s.spec.start, s.spec.stop));
        break;
      }
      case TensorSpec::Kind::kZeros: {
        LS_RETURN_IF_ERROR(CheckSize(arg, s.spec.shape, resolved));
        LS_ASSIGN_OR_RETURN(t, Tensor::Zeros(resolved, s.spec.shape));
        break;
      }
      case TensorSpec::Kind::kLabels: {
        LS_RETURN_IF_ERROR(CheckSize(arg, s.spec.shape, DType::kInt64));
        LS_ASSIGN_OR_RETURN(t, RandomLabels(s.spec.shape[0], s.spec.classes,
                                            DerivedSeed(seed, s.name)));
        break;
      }
    }
    out.emplace(s.name, std::move(t));
  }
  return out;
}

}  // namespace layerserve::client
