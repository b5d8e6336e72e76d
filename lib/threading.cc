#include "lib/threading.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <thread>

namespace layerserve {
namespace {

int Cores() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

std::atomic<int>& Budget() {
  static std::atomic<int> budget{Cores()};
  return budget;
}

std::atomic<int>& ActiveSlots() {
  static std::atomic<int> active{0};
  return active;
}

}  // namespace

int MaxThreads() { return Budget().load(); }

void SetMaxThreads(int n) { Budget().store(n <= 0 ? Cores() : n); }

int ThreadsForThisCall() {
  const int active = std::max(1, ActiveSlots().load());
  return std::max(1, MaxThreads() / active);
}

ComputeSlot::ComputeSlot() {
  ActiveSlots().fetch_add(1);
  const int n = ThreadsForThisCall();
  // omp_set_num_threads is per calling thread (an ICV of the thread's
  // task), which is exactly the scope of one RPC handler. OpenBLAS's OpenMP
  // build reads the same setting, but it caches its own, so set it too.
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

ComputeSlot::~ComputeSlot() { ActiveSlots().fetch_sub(1); }

void ParallelFor(int64_t n, int64_t grain,
                 const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t max_chunks =
      std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  const int threads =
      static_cast<int>(std::min<int64_t>(ThreadsForThisCall(), max_chunks));
  if (threads <= 1) {
    fn(0, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num();
    const int64_t nt = omp_get_num_threads();
    const int64_t begin = n * t / nt;
    const int64_t end = n * (t + 1) / nt;
    if (begin < end) fn(begin, end);
  }
}

}  // namespace layerserve
