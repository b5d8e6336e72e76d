#include "lib/cancel.h"

#include <utility>

namespace layerserve {
namespace {
thread_local CancellationScope* current_scope = nullptr;
}  // namespace

CancellationScope::CancellationScope(std::function<absl::Status()> check)
    : check_(std::move(check)), outer_(current_scope) {
  current_scope = this;
}

CancellationScope::~CancellationScope() { current_scope = outer_; }

absl::Status CheckCancelled() {
  if (current_scope == nullptr || !current_scope->check_) {
    return absl::OkStatus();
  }
  return current_scope->check_();
}

}  // namespace layerserve
