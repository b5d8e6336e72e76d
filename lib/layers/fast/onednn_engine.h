// The process-wide oneDNN CPU engine, and the one conversion of oneDNN's
// exceptions into absl::Status.
//
// GLOBAL STATE (one of the two singletons the house style allows): a oneDNN
// engine is immutable once created and documented thread-safe, so every
// primitive in the process shares this one. Streams are not: callers create
// a dnnl::stream per call.
//
// Thread-safety: all functions may be called concurrently.
#ifndef LAYERSERVE_LIB_LAYERS_FAST_ONEDNN_ENGINE_H_
#define LAYERSERVE_LIB_LAYERS_FAST_ONEDNN_ENGINE_H_

#include <oneapi/dnnl/dnnl.hpp>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace layerserve::fast::onednn {

// The CPU engine, created on first use. Throws dnnl::error if oneDNN cannot
// create a CPU engine at all (callers are inside a try block anyway).
const dnnl::engine& CpuEngine();

// INTERNAL "<what>: oneDNN error <status>: <message>". oneDNN only throws
// for conditions our validation should have ruled out (unsupported shapes,
// out of memory), so they are internal errors, not the caller's.
absl::Status ErrorToStatus(absl::string_view what, const dnnl::error& e);

}  // namespace layerserve::fast::onednn

#endif  // LAYERSERVE_LIB_LAYERS_FAST_ONEDNN_ENGINE_H_
