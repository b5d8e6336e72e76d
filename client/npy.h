// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0):
// the file format `layerctl` uses for inputs and outputs, so that results go
// straight into numpy.load() and back.
//
// Only what a layerserve Tensor can hold is accepted: little-endian float32
// ('<f4'), float64 ('<f8') or int64 ('<i8': class labels such as a loss's
// y; numpy's default integer dtype on Linux), C order, rank 1..4, every dim
// >= 1. Anything else (big-endian, Fortran order, another dtype, a header
// that does not parse, data shorter or longer than the header promises) is
// an INVALID_ARGUMENT error whose message starts with the file name and
// says what is wrong. There is no Debian-packaged C++ library for this
// (xtensor's npy support needs all of xtensor), and the format is small enough
// to keep our own reader here, fully tested against files numpy itself writes.
//
// The writer produces version 1.0 files whose header, including magic and
// length field, is padded with spaces to a multiple of 64 bytes, as current
// numpy does, so the data that follows is aligned.
//
// This code assumes a little-endian host (as does the wire format).
//
// Thread-safety: all functions are pure or touch only the named file.
#ifndef LAYERSERVE_CLIENT_NPY_H_
#define LAYERSERVE_CLIENT_NPY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/tensor.h"

namespace layerserve::client {

// Parses the bytes of a whole .npy file. `name` (usually the path) prefixes
// every error message.
absl::StatusOr<Tensor> ParseNpy(absl::string_view bytes,
                                absl::string_view name);

// Reads and parses the file at `path`. NOT_FOUND if it cannot be opened.
absl::StatusOr<Tensor> ReadNpy(const std::string& path);

// The complete .npy (v1.0) encoding of `tensor`.
std::string EncodeNpy(const Tensor& tensor);

// Writes EncodeNpy(tensor) to `path`, replacing the file. Fails with a
// message naming the path if the file cannot be written completely.
absl::Status WriteNpy(const std::string& path, const Tensor& tensor);

}  // namespace layerserve::client

#endif  // LAYERSERVE_CLIENT_NPY_H_
