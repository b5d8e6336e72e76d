// Cooperative cancellation for long computations.
//
// The naive loops and the gradient check can run for minutes; when the
// caller goes away (an RPC cancelled or past its deadline) they must stop
// promptly and free their memory. The caller installs a CancellationScope on
// its thread with a check function; long loops on that thread call
// CheckCancelled() now and then and return its error.
//
// The scope is thread-local on purpose: the naive code and the gradient
// check run on the calling thread, and library code needs no extra
// parameter threaded through every signature. Code that fans out to other
// threads (OpenMP) checks before and after, not inside.
//
// Thread-safety: each thread has its own scope stack; the check function is
// called only from the thread that installed it.
#ifndef LAYERSERVE_LIB_CANCEL_H_
#define LAYERSERVE_LIB_CANCEL_H_

#include <functional>

#include "absl/status/status.h"

namespace layerserve {

class CancellationScope {
 public:
  // `check` returns OK to go on, or the status to stop with (CANCELLED,
  // DEADLINE_EXCEEDED). Scopes nest; the innermost one is used.
  explicit CancellationScope(std::function<absl::Status()> check);
  ~CancellationScope();
  CancellationScope(const CancellationScope&) = delete;
  CancellationScope& operator=(const CancellationScope&) = delete;

 private:
  std::function<absl::Status()> check_;
  CancellationScope* outer_;
  friend absl::Status CheckCancelled();
};

// OK when no scope is installed on this thread or the work should go on.
// Cheap enough to call every few microseconds of work.
absl::Status CheckCancelled();

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_CANCEL_H_
