#include "lib/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace layerserve {
namespace {

constexpr size_t kAlignment = 64;

template <typename Fn>
auto Dispatch(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      return fn(float{});
    case DType::kInt64:
      return fn(int64_t{});
    case DType::kFloat64:
      break;
  }
  return fn(double{});
}

}  // namespace

size_t ItemSize(DType dtype) { return dtype == DType::kFloat32 ? 4 : 8; }

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kInt64:
      return "int64";
    case DType::kFloat64:
      break;
  }
  return "float64";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  if (name == "float32" || name == "f32") return DType::kFloat32;
  if (name == "float64" || name == "f64") return DType::kFloat64;
  if (name == "int64" || name == "i64") return DType::kInt64;
  return absl::InvalidArgumentError(absl::StrCat(
      "dtype: expected float32, float64 or int64, got '", name, "'"));
}

std::string ShapeString(const Shape& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

absl::Status ValidateShape(const Shape& shape, absl::string_view what) {
  if (shape.empty() || shape.size() > static_cast<size_t>(kMaxRank)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rank must be 1..", kMaxRank, ", got ",
                     shape.size(), " (shape ", ShapeString(shape), ")"));
  }
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": dim ", i, " must be >= 1, got ", shape[i],
                       " (shape ", ShapeString(shape), ")"));
    }
    if (n > std::numeric_limits<int64_t>::max() / shape[i]) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": element count of shape ", ShapeString(shape),
                       " overflows int64"));
    }
    n *= shape[i];
  }
  return absl::OkStatus();
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void Tensor::AlignedFree::operator()(void* p) const { std::free(p); }

absl::StatusOr<Tensor> Tensor::Zeros(DType dtype, Shape shape) {
  absl::Status st = ValidateShape(shape, "tensor");
  if (!st.ok()) return st;
  Tensor t;
  t.dtype_ = dtype;
  t.size_ = NumElements(shape);
  t.shape_ = std::move(shape);
  if (static_cast<uint64_t>(t.size_) >
      std::numeric_limits<size_t>::max() / 8 - kAlignment) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tensor of shape ", ShapeString(t.shape_),
                     " is too large to allocate"));
  }
  size_t bytes = t.nbytes();
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes for a tensor of shape ",
                     ShapeString(t.shape_)));
  }
  std::memset(p, 0, rounded);
  t.data_.reset(p);
  return t;
}

absl::StatusOr<Tensor> Tensor::Linspace(DType dtype, Shape shape, double start,
                                        double stop) {
  absl::StatusOr<Tensor> t = Zeros(dtype, std::move(shape));
  if (!t.ok()) return t;
  const int64_t n = t->size();
  // numpy: y = arange(n) * step + start, then y[-1] = stop.
  const double step = n > 1 ? (stop - start) / static_cast<double>(n - 1) : 0;
  for (int64_t i = 0; i < n; ++i) {
    t->SetFlat(i, static_cast<double>(i) * step + start);
  }
  if (n > 1) t->SetFlat(n - 1, stop);
  return t;
}

absl::StatusOr<Tensor> Tensor::RandomNormal(DType dtype, Shape shape,
                                            uint64_t seed) {
  if (!IsFloat(dtype)) {
    return absl::InvalidArgumentError(
        "randn: standard-normal values need a float dtype, got int64");
  }
  absl::StatusOr<Tensor> t = Zeros(dtype, std::move(shape));
  if (!t.ok()) return t;
  std::mt19937_64 gen(seed);
  // 53 random bits -> uniform in (0, 1]; never 0, so log() is finite.
  auto uniform = [&gen] {
    return (static_cast<double>(gen() >> 11) + 1.0) * 0x1.0p-53;
  };
  const int64_t n = t->size();
  for (int64_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double theta = 2.0 * M_PI * uniform();
    t->SetFlat(i, r * std::cos(theta));
    if (i + 1 < n) t->SetFlat(i + 1, r * std::sin(theta));
  }
  return t;
}

Tensor Tensor::Clone() const { return CastTo(dtype_); }

Tensor Tensor::CastTo(DType dtype) const {
  if (empty()) return Tensor();
  Tensor t = std::move(Zeros(dtype, shape_)).value();
  if (dtype == dtype_) {
    std::memcpy(t.raw_data(), raw_data(), nbytes());
  } else {
    for (int64_t i = 0; i < size_; ++i) t.SetFlat(i, GetFlat(i));
  }
  return t;
}

double Tensor::GetFlat(int64_t i) const {
  return Dispatch(dtype_, [&](auto zero) -> double {
    using T = decltype(zero);
    return static_cast<double>(data<T>()[i]);
  });
}

void Tensor::SetFlat(int64_t i, double v) {
  Dispatch(dtype_, [&](auto zero) {
    using T = decltype(zero);
    data<T>()[i] = static_cast<T>(v);
  });
}

int64_t Tensor::Offset(const std::vector<int64_t>& index) const {
  assert(index.size() == shape_.size());
  int64_t off = 0;
  for (size_t i = 0; i < shape_.size(); ++i) off = off * shape_[i] + index[i];
  return off;
}

std::vector<int64_t> Tensor::Unravel(int64_t flat) const {
  std::vector<int64_t> index(shape_.size());
  for (size_t i = shape_.size(); i-- > 0;) {
    index[i] = flat % shape_[i];
    flat /= shape_[i];
  }
  return index;
}

void Tensor::Fill(double v) {
  for (int64_t i = 0; i < size_; ++i) SetFlat(i, v);
}

namespace {

absl::Status CheckSameShape(const Tensor& a, const Tensor& b,
                            absl::string_view what) {
  if (a.shape() != b.shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": shapes differ: ", ShapeString(a.shape()), " vs ",
                     ShapeString(b.shape())));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<double> RelError(const Tensor& a, const Tensor& b) {
  absl::Status st = CheckSameShape(a, b, "rel_error");
  if (!st.ok()) return st;
  double worst = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    const double x = a.GetFlat(i), y = b.GetFlat(i);
    const double e =
        std::abs(x - y) / std::max(1e-8, std::abs(x) + std::abs(y));
    // NaN must not hide behind max(): a NaN anywhere makes the error NaN.
    if (std::isnan(e)) return e;
    worst = std::max(worst, e);
  }
  return worst;
}

absl::StatusOr<double> MaxAbsError(const Tensor& a, const Tensor& b) {
  absl::Status st = CheckSameShape(a, b, "max_abs_error");
  if (!st.ok()) return st;
  double worst = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(a.GetFlat(i) - b.GetFlat(i));
    if (std::isnan(e)) return e;
    worst = std::max(worst, e);
  }
  return worst;
}

absl::StatusOr<double> ScaledError(const Tensor& ref, const Tensor& b) {
  absl::StatusOr<double> diff = MaxAbsError(ref, b);
  if (!diff.ok() || std::isnan(*diff)) return diff;
  double scale = 0;
  for (int64_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::abs(ref.GetFlat(i)));
  }
  return scale > 0 ? *diff / scale : *diff;
}

}  // namespace layerserve
