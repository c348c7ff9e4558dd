#include "server/engine/scheduler.h"

#include <algorithm>

namespace iblip::server {

void Scheduler::AddToVisionQueue(RequestPtr request, absl::Time now) {
  vision_[static_cast<int>(request->priority)].push_back(
      {std::move(request), now});
  ++vision_count_;
}

absl::Time Scheduler::VisionBatchDue() const {
  if (vision_count_ == 0) return absl::InfiniteFuture();
  if (vision_count_ >= options_.vision_max_batch_size)
    return absl::InfinitePast();
  absl::Time oldest = absl::InfiniteFuture();
  for (const auto& queue : vision_) {
    if (!queue.empty()) oldest = std::min(oldest, queue.front().since);
  }
  return oldest + options_.vision_max_queue_delay;
}

std::vector<Scheduler::RequestPtr> Scheduler::TakeVisionBatch(absl::Time now) {
  std::vector<RequestPtr> batch;
  if (VisionBatchDue() > now) return batch;
  for (int p = kNumPriorities - 1; p >= 0; --p) {
    auto& queue = vision_[p];
    while (!queue.empty() &&
           static_cast<int>(batch.size()) < options_.vision_max_batch_size) {
      batch.push_back(std::move(queue.front().request));
      queue.pop_front();
      --vision_count_;
    }
  }
  return batch;
}

void Scheduler::AddToPrefillQueue(RequestPtr request) {
  prefill_[static_cast<int>(request->priority)].push_back(std::move(request));
  ++prefill_count_;
}

std::vector<Scheduler::RequestPtr> Scheduler::TakePrefills(int free_slots,
                                                           int total_slots) {
  std::vector<RequestPtr> started;
  int budget = options_.prefill_token_budget;
  for (int p = kNumPriorities - 1; p >= 0; --p) {
    auto& queue = prefill_[p];
    while (!queue.empty()) {
      if (!started.empty() && budget <= 0) return started;
      const int needed = SlotsNeeded(queue.front()->settings);
      const bool can_never_fit = needed > total_slots;
      if (!can_never_fit && needed > free_slots) return started;
      if (!can_never_fit) {
        free_slots -= needed;
        budget -= static_cast<int>(queue.front()->prompt_ids.size());
      }
      started.push_back(std::move(queue.front()));
      queue.pop_front();
      --prefill_count_;
    }
  }
  return started;
}

std::vector<Scheduler::RequestPtr> Scheduler::TakeAll() {
  std::vector<RequestPtr> all;
  for (auto& queue : vision_) {
    for (auto& waiting : queue) all.push_back(std::move(waiting.request));
    queue.clear();
  }
  for (auto& queue : prefill_) {
    for (auto& request : queue) all.push_back(std::move(request));
    queue.clear();
  }
  vision_count_ = prefill_count_ = 0;
  return all;
}

}  // namespace iblip::server
