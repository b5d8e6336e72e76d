// AdmissionControl: how many computations the server runs at once.
//
// At most `max_concurrent` callers hold a slot; up to `max_queue` more wait
// for one in FIFO order; anyone beyond that is refused at once with
// RESOURCE_EXHAUSTED, so that a burst of calls costs a status each instead
// of memory and threads piling up. A waiting caller keeps checking its own
// cancellation (a cancelled call or one past its deadline leaves the queue
// with that status).
//
// The lock is std::mutex, not absl::Mutex, on purpose: Debian's Abseil is
// not built with ThreadSanitizer, so TSan cannot see absl::Mutex's
// synchronization and would report races in code it protects.
//
// Thread-safety: all methods may be called concurrently.
#ifndef LAYERSERVE_SERVER_ADMISSION_H_
#define LAYERSERVE_SERVER_ADMISSION_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace layerserve::server {

class AdmissionControl {
 public:
  // A held slot; releasing it (destruction) admits the next waiter.
  class Ticket {
   public:
    Ticket(Ticket&& other) noexcept;
    Ticket& operator=(Ticket&&) = delete;
    Ticket(const Ticket&) = delete;
    ~Ticket();
    // How long the caller waited in the queue.
    absl::Duration waited() const { return waited_; }

   private:
    friend class AdmissionControl;
    Ticket(AdmissionControl* owner, absl::Duration waited)
        : owner_(owner), waited_(waited) {}
    AdmissionControl* owner_;
    absl::Duration waited_;
  };

  // max_concurrent >= 1, max_queue >= 0. The names are the knobs that set
  // them, quoted in RESOURCE_EXHAUSTED messages.
  AdmissionControl(int max_concurrent, int max_queue,
                   std::string max_concurrent_name = "--max_concurrent",
                   std::string max_queue_name = "--max_queue");
  AdmissionControl(const AdmissionControl&) = delete;
  AdmissionControl& operator=(const AdmissionControl&) = delete;

  // A slot, at once or after waiting in the queue. RESOURCE_EXHAUSTED when
  // every slot is taken and the queue is full; while waiting, `check` is
  // called every few milliseconds (never under the lock) and its first
  // non-OK status is returned (the caller leaves the queue).
  absl::StatusOr<Ticket> Admit(const std::function<absl::Status()>& check);

  int max_concurrent() const { return max_concurrent_; }
  int max_queue() const { return max_queue_; }
  // Slots held and callers waiting right now (for tests and logs).
  int running() const;
  int queued() const;

 private:
  struct Waiter {
    bool admitted = false;
  };
  void Release();

  const int max_concurrent_;
  const int max_queue_;
  const std::string max_concurrent_name_;
  const std::string max_queue_name_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int running_ = 0;            // guarded by mu_
  std::deque<Waiter*> queue_;  // guarded by mu_; front is next
};

}  // namespace layerserve::server

#endif  // LAYERSERVE_SERVER_ADMISSION_H_
