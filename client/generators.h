// Input tensors named on the command line: `name=spec`, where spec is
//   randn:D1,D2,...              standard normal, seeded (see DerivedSeed)
//   linspace:START,STOP:D1,...   numpy.linspace(START, STOP, prod(D))
//                                .reshape(D)
//   zeros:D1,...                 all zeros
//   labels:N:C                   N int64 class labels, uniform in [0, C),
//                                seeded like randn (a loss's y)
//   PATH                         a .npy file (float32, float64 or int64)
// with 1..4 dims, each >= 1. This is how `layerctl` turns
// `x=randn:4,3,5,5 w=w.npy y=labels:4:10` into the tensors of a request.
//
// Dtype rule: int64 tensors (labels: and int64 files) are class labels and
// keep their dtype. For the float ones: with an explicit dtype every one has
// it (.npy files are converted, as numpy's astype would); without one the
// dtype of the float .npy inputs is used (all must agree), and float64 when
// there are none.
//
// Thread-safety: pure functions (reading named files is the only effect).
#ifndef LAYERSERVE_CLIENT_GENERATORS_H_
#define LAYERSERVE_CLIENT_GENERATORS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/layers/layer.h"
#include "lib/tensor.h"

namespace layerserve::client {

// The largest tensor we build: protobuf cannot serialize a message of 2 GiB
// or more, so a bigger tensor could never be sent.
inline constexpr uint64_t kMaxTensorBytes = (uint64_t{1} << 31) - 1;

struct TensorSpec {
  enum class Kind { kRandn, kLinspace, kZeros, kLabels, kFile };
  Kind kind = Kind::kZeros;
  Shape shape;          // generators only; (N) for labels
  double start = 0;     // linspace only
  double stop = 0;      // linspace only
  int64_t classes = 0;  // labels only: C
  std::string path;     // kFile only
};

// Parses the part after '='. INVALID_ARGUMENT with a one-line message that
// quotes the spec and says which part is wrong.
absl::StatusOr<TensorSpec> ParseTensorSpec(absl::string_view spec);

struct NamedTensorSpec {
  std::string name;
  std::string text;  // the spec as typed, for messages
  TensorSpec spec;
};

// Parses `name=spec`; the name is a non-empty identifier.
absl::StatusOr<NamedTensorSpec> ParseNamedTensorSpec(absl::string_view arg);

// The seed of input `name` under the user's --seed: a stable hash, so that
// x and w drawn with one --seed differ, and the same command line gives the
// same tensors on every machine and in every release.
uint64_t DerivedSeed(uint64_t seed, absl::string_view name);

// Builds every tensor of `args` (each `name=spec`; names must be unique)
// following the dtype rule above. File errors name the file; other errors
// quote the argument.
//
// `label_inputs`, when the layer is known, names the inputs that hold class
// labels: each of those must be a labels: generator or an int64 file, and
// no other input may be int64; a mismatch is INVALID_ARGUMENT naming the
// input and what to give instead. nullopt (a layer this client does not
// know) checks nothing: the server judges.
absl::StatusOr<TensorMap> MakeTensors(
    const std::vector<std::string>& args, std::optional<DType> dtype,
    uint64_t seed,
    const std::optional<std::vector<std::string>>& label_inputs = std::nullopt);

}  // namespace layerserve::client

#endif  // LAYERSERVE_CLIENT_GENERATORS_H_
