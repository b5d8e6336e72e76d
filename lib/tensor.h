// Tensor: a dense, contiguous, C-order (row-major; NCHW for images) array of
// float32 or float64 values (or int64, for class labels) with a rank 1..4
// shape of int64 dimensions.
//
// Storage is 64-byte aligned (a cache line, and the widest vector load the
// fast kernels issue). A Tensor owns its storage; it is movable but not
// copyable: copying a 100 MB activation by accident is the kind of bug that
// only shows up in a profile, so deep copies are spelled Clone().
//
// Thread-safety: a Tensor is a value. Concurrent const access is safe;
// mutation needs external synchronization.
#ifndef LAYERSERVE_LIB_TENSOR_H_
#define LAYERSERVE_LIB_TENSOR_H_

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace layerserve {

// kInt64 holds class labels (the losses' y); layers compute in the two float
// dtypes only.
enum class DType { kFloat32, kFloat64, kInt64 };

// Bytes per element: 4 or 8.
size_t ItemSize(DType dtype);
// "float32", "float64" or "int64", the names users type and read.
absl::string_view DTypeName(DType dtype);
// Parses "float32"/"f32", "float64"/"f64" or "int64"/"i64".
absl::StatusOr<DType> ParseDType(absl::string_view name);
inline bool IsFloat(DType dtype) { return dtype != DType::kInt64; }

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::kFloat64;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kInt64;
};

using Shape = std::vector<int64_t>;

inline constexpr int kMaxRank = 4;

// "(2, 3, 4, 4)": numpy's spelling, so messages read like the seed's.
std::string ShapeString(const Shape& shape);

// Checks rank 1..kMaxRank, every dim >= 1, and that the element count fits
// in int64 without overflow. `what` names the tensor in the error message.
absl::Status ValidateShape(const Shape& shape, absl::string_view what);

// Product of dims; the caller has validated the shape.
int64_t NumElements(const Shape& shape);

// The dtype and shape of a tensor without its data: what validation and
// size limits look at before anything is allocated.
struct TensorDesc {
  DType dtype = DType::kFloat64;
  Shape shape;
};

class Tensor {
 public:
  // An empty tensor: rank 0, no storage. Only useful as a placeholder.
  Tensor() = default;
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  // A zero-filled tensor. Fails (INVALID_ARGUMENT) on a bad shape and
  // (RESOURCE_EXHAUSTED) when the allocation fails.
  static absl::StatusOr<Tensor> Zeros(DType dtype, Shape shape);
  // numpy.linspace(start, stop, prod(shape)).reshape(shape): value i is
  // start + i * (stop - start) / (n - 1), and the last is exactly `stop`.
  static absl::StatusOr<Tensor> Linspace(DType dtype, Shape shape, double start,
                                         double stop);
  // Standard-normal values (float dtypes only) from a seeded generator: the
  // same seed gives the same values on every machine (our own Box-Muller over
  // mt19937_64, not std::normal_distribution, whose algorithm is
  // implementation-defined).
  static absl::StatusOr<Tensor> RandomNormal(DType dtype, Shape shape,
                                             uint64_t seed);

  Tensor Clone() const;
  // A copy converted to `dtype` (a plain copy if it already has it).
  Tensor CastTo(DType dtype) const;

  bool empty() const { return data_ == nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  int64_t size() const { return size_; }
  size_t nbytes() const {
    return static_cast<size_t>(size_) * ItemSize(dtype_);
  }
  TensorDesc desc() const { return TensorDesc{dtype_, shape_}; }

  void* raw_data() { return data_.get(); }
  const void* raw_data() const { return data_.get(); }

  template <typename T>
  T* data() {
    assert(DTypeOf<T>::value == dtype_);
    return static_cast<T*>(data_.get());
  }
  template <typename T>
  const T* data() const {
    assert(DTypeOf<T>::value == dtype_);
    return static_cast<const T*>(data_.get());
  }

  // Dtype-agnostic flat access, for code that is not on a hot path
  // (gradient checks, comparisons, printing). int64 values round-trip
  // exactly up to 2^53.
  double GetFlat(int64_t i) const;
  void SetFlat(int64_t i, double v);

  // Row-major flat offset of a multi-index of this tensor's rank.
  int64_t Offset(const std::vector<int64_t>& index) const;
  // The multi-index of a flat offset.
  std::vector<int64_t> Unravel(int64_t flat) const;

  void Fill(double v);

 private:
  struct AlignedFree {
    void operator()(void* p) const;
  };

  DType dtype_ = DType::kFloat64;
  Shape shape_;
  int64_t size_ = 0;
  std::unique_ptr<void, AlignedFree> data_;
};

// The seed's rel_error: max over elements of
//   |a - b| / max(1e-8, |a| + |b|),
// computed in float64. Fails if the shapes differ. Mixed dtypes are allowed
// (a float32 result against a float64 reference).
absl::StatusOr<double> RelError(const Tensor& a, const Tensor& b);

// Largest |a - b|; same rules as RelError.
absl::StatusOr<double> MaxAbsError(const Tensor& a, const Tensor& b);

// max|ref - b| / max|ref| (max|ref - b| when ref is all zeros): the error
// relative to the tensor's scale. RelError judges each element on its own
// scale, so one output that cancels to ~0 makes it ~1 for results that agree
// to rounding; this is the figure that says whether they do.
absl::StatusOr<double> ScaledError(const Tensor& ref, const Tensor& b);

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_TENSOR_H_
