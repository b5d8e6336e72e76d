// The one place that decides how many threads a computation uses.
//
// oneDNN (Debian's build runs on OpenMP), OpenBLAS (we link the OpenMP
// build) and our own loops all draw from libgomp's pool, so a single setting
// governs them all. When the server runs several requests at once, each
// computation runs under a ComputeSlot that divides the cores among the
// slots in use, so two concurrent convolutions do not each start a full set
// of threads and oversubscribe the machine.
//
// Thread-safety: all functions may be called concurrently.
#ifndef LAYERSERVE_LIB_THREADING_H_
#define LAYERSERVE_LIB_THREADING_H_

#include <cstdint>
#include <functional>

namespace layerserve {

// Elements below which an elementwise loop stays on one thread: spawning
// threads costs more than streaming this much memory.
inline constexpr int64_t kElementwiseGrain = 1 << 15;

// The intra-op thread budget: defaults to the number of cores.
int MaxThreads();
// Sets the budget (n >= 1; 0 means "number of cores").
void SetMaxThreads(int n);

// Threads the calling computation may use right now: the budget divided
// among the ComputeSlots currently held (at least 1).
int ThreadsForThisCall();

// Held for the duration of one top-level computation (one RPC's work). It
// sets the calling thread's OpenMP and OpenBLAS thread counts to its share.
class ComputeSlot {
 public:
  ComputeSlot();
  ~ComputeSlot();
  ComputeSlot(const ComputeSlot&) = delete;
  ComputeSlot& operator=(const ComputeSlot&) = delete;
};

// Runs fn(begin, end) over [0, n) in contiguous chunks, on up to
// ThreadsForThisCall() threads, never splitting below `grain` elements.
void ParallelFor(int64_t n, int64_t grain,
                 const std::function<void(int64_t, int64_t)>& fn);

}  // namespace layerserve

#endif  // LAYERSERVE_LIB_THREADING_H_
