#include "server/admission.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace layerserve::server {
namespace {

// How often a waiter re-checks its cancellation. A cancelled call leaves
// the queue within this (plus the check's own cost).
constexpr auto kPollInterval = std::chrono::milliseconds(10);

}  // namespace

AdmissionControl::Ticket::Ticket(Ticket&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), waited_(other.waited_) {}

AdmissionControl::Ticket::~Ticket() {
  if (owner_ != nullptr) owner_->Release();
}

AdmissionControl::AdmissionControl(int max_concurrent, int max_queue,
                                   std::string max_concurrent_name,
                                   std::string max_queue_name)
    : max_concurrent_(std::max(1, max_concurrent)),
      max_queue_(std::max(0, max_queue)),
      max_concurrent_name_(std::move(max_concurrent_name)),
      max_queue_name_(std::move(max_queue_name)) {}

absl::StatusOr<AdmissionControl::Ticket> AdmissionControl::Admit(
    const std::function<absl::Status()>& check) {
  const absl::Time start = absl::Now();
  std::unique_lock<std::mutex> lock(mu_);
  if (running_ < max_concurrent_ && queue_.empty()) {
    ++running_;
    return Ticket(this, absl::ZeroDuration());
  }
  if (static_cast<int>(queue_.size()) >= max_queue_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("server busy: ", running_, " computations running (",
                     max_concurrent_name_, "=", max_concurrent_, ") and ",
                     queue_.size(), " waiting (", max_queue_name_, "=",
                     max_queue_, "); retry later, or raise the limits"));
  }
  Waiter self;
  queue_.push_back(&self);
  while (!self.admitted) {
    cv_.wait_for(lock, kPollInterval);
    if (self.admitted) break;
    lock.unlock();
    const absl::Status status = check ? check() : absl::OkStatus();
    lock.lock();
    if (status.ok()) continue;
    if (self.admitted) {
      // Handed a slot while checking: pass it on.
      lock.unlock();
      Release();
    } else {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &self));
    }
    return status;
  }
  return Ticket(this, absl::Now() - start);
}

void AdmissionControl::Release() {
  std::lock_guard<std::mutex> lock(mu_);
  --running_;
  if (!queue_.empty()) {
    // The slot goes straight to the first waiter, so a newcomer cannot
    // overtake the queue.
    Waiter* next = queue_.front();
    queue_.pop_front();
    next->admitted = true;
    ++running_;
    cv_.notify_all();
  }
}

int AdmissionControl::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

int AdmissionControl::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size());
}

}  // namespace layerserve::server
