#include "server/engine/scheduler.h"

#include <algorithm>

namespace iblip::server {
namespace {

// A piece's cost estimate, or zero when nothing was measured yet.
absl::Duration Times(absl::Duration unit, int64_t count) {
  return unit * count;
}

// The lower of two groups by eviction order: lower priority first, then the
// one that arrived later (it has waited least).
bool EvictBefore(const SequenceGroup* a, const SequenceGroup* b) {
  if (a->priority() != b->priority()) return a->priority() < b->priority();
  return a->arrival() > b->arrival();
}

}  // namespace

Scheduler::Scheduler(Options options, KvBlockManager& blocks,
                     int vision_num_layers, bool encoder_decoder)
    : options_(options),
      blocks_(blocks),
      vision_layers_(vision_num_layers),
      encoder_decoder_(encoder_decoder) {}

void Scheduler::AddToVision(SequenceGroup* group, absl::Time now) {
  vision_queue_[static_cast<int>(group->priority())].push_back({group, now});
}

void Scheduler::AddToPrefill(SequenceGroup* group) {
  group->BeginPrefill();
  auto& queue = prefill_queue_[static_cast<int>(group->priority())];
  // A preempted request goes back before those that arrived after it.
  auto at = std::find_if(queue.begin(), queue.end(), [&](SequenceGroup* g) {
    return g->arrival() > group->arrival();
  });
  queue.insert(at, group);
}

int Scheduler::RowsOf(const SequenceGroup& group) const {
  return group.live_sequences();
}

int Scheduler::running_sequences() const {
  int rows = 0;
  for (const SequenceGroup* g : running_) rows += RowsOf(*g);
  for (const SequenceGroup* g : prefilling_) rows += RowsOf(*g);
  return rows;
}

int Scheduler::waiting() const {
  size_t n = vision_batch_.size();
  for (const auto& q : vision_queue_) n += q.size();
  for (const auto& q : prefill_queue_) n += q.size();
  return static_cast<int>(n);
}

absl::Time Scheduler::VisionDue() const {
  if (!vision_batch_.empty()) return absl::InfinitePast();
  size_t waiting = 0;
  absl::Time oldest = absl::InfiniteFuture();
  for (const auto& queue : vision_queue_) {
    waiting += queue.size();
    if (!queue.empty()) oldest = std::min(oldest, queue.front().since);
  }
  if (waiting == 0) return absl::InfiniteFuture();
  if (static_cast<int>(waiting) >= options_.vision_max_batch_size)
    return absl::InfinitePast();
  return oldest + options_.vision_max_queue_delay;
}

bool Scheduler::HasRunnableWork(absl::Time now) const {
  if (!running_.empty() || VisionDue() <= now) return true;
  for (const auto& queue : prefill_queue_) {
    if (!queue.empty()) return true;
  }
  return false;
}

bool Scheduler::PreemptOne(Priority at_most, const SequenceGroup* keep,
                           StepPlan& plan) {
  SequenceGroup* victim = nullptr;
  auto consider = [&](SequenceGroup* g) {
    if (g == keep || g->priority() > at_most) return;
    if (victim == nullptr || EvictBefore(g, victim)) victim = g;
  };
  for (SequenceGroup* g : running_) consider(g);
  for (SequenceGroup* g : prefilling_) consider(g);
  if (victim == nullptr) return false;
  running_.remove(victim);
  prefilling_.erase(
      std::remove(prefilling_.begin(), prefilling_.end(), victim),
      prefilling_.end());
  for (auto& queue : prefill_queue_) {
    queue.erase(std::remove(queue.begin(), queue.end(), victim), queue.end());
  }
  plan.decode.erase(
      std::remove(plan.decode.begin(), plan.decode.end(), victim),
      plan.decode.end());
  victim->Preempt(blocks_);
  AddToPrefill(victim);
  plan.preempted.push_back(victim);
  return true;
}

void Scheduler::PlanDecode(StepPlan& plan) {
  // Highest priority, oldest first: they keep their blocks when some lack.
  std::vector<SequenceGroup*> order(running_.begin(), running_.end());
  std::stable_sort(order.begin(), order.end(),
                   [](const SequenceGroup* a, const SequenceGroup* b) {
                     return EvictBefore(b, a);
                   });
  for (SequenceGroup* group : order) {
    if (std::find(plan.preempted.begin(), plan.preempted.end(), group) !=
        plan.preempted.end()) {
      continue;
    }
    bool reserved = true;
    for (int s : group->LiveSequences()) {
      const int position = group->kv_length(s);
      while (!blocks_.Reserve(group->table(s), position, position + 1,
                              plan.copies)) {
        if (!PreemptOne(group->priority(), group, plan)) {
          reserved = false;
          break;
        }
      }
      if (!reserved) break;
    }
    if (reserved) {
      plan.decode.push_back(group);
    } else {
      // Nothing lower to evict: this group gives way itself.
      PreemptOne(group->priority(), nullptr, plan);
    }
  }
}

bool Scheduler::Reserve(SequenceGroup& group,
                        const SequenceGroup::PrefillItem& item, int end,
                        std::vector<BlockCopy>& copies) {
  const bool encoder = encoder_decoder_ && item.start == 0;
  const int cross = encoder ? blocks_.BlocksFor(group.encoder_positions()) : 0;
  BlockTable& table = group.table(item.sequence);
  const int cost = blocks_.ReserveCost(table, item.start, end) + cross -
                   static_cast<int>(group.cross_table().blocks.size());
  if (cost > blocks_.free_blocks()) return false;
  if (encoder && group.cross_table().blocks.empty()) {
    blocks_.Reserve(group.cross_table(), 0, group.encoder_positions(), copies);
  }
  return blocks_.Reserve(table, item.start, end, copies);
}

void Scheduler::PlanPrefill(StepPlan& plan, absl::Duration& budget,
                            bool bounded, const StepCosts& costs) {
  int rows = 0;
  for (SequenceGroup* g : plan.decode) rows += RowsOf(*g);
  for (SequenceGroup* g : prefilling_) rows += RowsOf(*g);
  for (int p = kNumPriorities - 1; p >= 0; --p) {
    auto& queue = prefill_queue_[p];
    for (auto it = queue.begin(); it != queue.end();) {
      SequenceGroup* group = *it;
      const bool started =
          std::find(prefilling_.begin(), prefilling_.end(), group) !=
          prefilling_.end();
      if (!started && rows + RowsOf(*group) > options_.max_running_sequences &&
          rows > 0) {
        return;  // strict priority: lower ones wait too
      }
      auto item = group->NextPrefillItem();
      bool progressed = false;
      while (item && (!bounded || budget > absl::ZeroDuration() ||
                      !progressed)) {
        // T5's encoder is not causal: its first item runs whole.
        const bool atomic = encoder_decoder_ && item->start == 0;
        int end = item->end;
        if (!atomic) {
          int chunk = options_.max_prefill_chunk;
          if (bounded && costs.prefill_per_position > absl::ZeroDuration()) {
            chunk = std::min<int64_t>(
                chunk, std::max<int64_t>(options_.min_prefill_chunk,
                                         budget / costs.prefill_per_position));
          } else if (bounded) {
            chunk = std::min(chunk, options_.min_prefill_chunk);
          }
          end = std::min(item->end, item->start + chunk);
        }
        while (!Reserve(*group, *item, end, plan.copies)) {
          // Take blocks from lower priorities only.
          if (p == 0 ||
              !PreemptOne(static_cast<Priority>(p - 1), group, plan)) {
            return;  // wait for blocks; lower priorities wait too
          }
        }
        if (!started && !progressed) {
          prefilling_.push_back(group);
          rows += RowsOf(*group);
        }
        plan.prefills.push_back({group, *item, end});
        progressed = true;
        const int positions =
            atomic ? group->encoder_positions() : end - item->start;
        // Unmeasured costs: one chunk per step until measured.
        budget = costs.prefill_per_position > absl::ZeroDuration()
                     ? budget - Times(costs.prefill_per_position, positions)
                     : absl::ZeroDuration();
        // The next chunk of the same group, if the budget allows.
        SequenceGroup::PrefillItem next = *item;
        if (end < item->end) {
          next.start = end;
          item = next;
        } else {
          item.reset();  // later items start once this one ran
        }
      }
      if (bounded && budget <= absl::ZeroDuration()) return;
      ++it;
    }
  }
}

void Scheduler::PlanVision(StepPlan& plan, absl::Time now,
                           absl::Duration budget, bool bounded,
                           const StepCosts& costs) {
  // A prefill chunk already took this step's budget: vision waits a step
  // rather than stretch the gap between two decode steps further (the
  // prefill ends soon, so vision does not starve).
  if (bounded && budget <= absl::ZeroDuration() && !plan.prefills.empty()) {
    return;
  }
  if (vision_batch_.empty()) {
    if (VisionDue() > now) return;
    // While streams decode, a batch is as big as one encoder layer over it,
    // and its Q-Former pass (which runs whole), fit the step's budget (one
    // image at least, one until measured): a layer is the smallest piece of
    // vision work.
    int limit = options_.vision_max_batch_size;
    if (bounded) {
      const absl::Duration per_image =
          std::max(costs.vision_layer_per_image, costs.query_per_image);
      limit = per_image > absl::ZeroDuration()
                  ? static_cast<int>(std::clamp<int64_t>(
                        budget / per_image, 1, limit))
                  : 1;
    }
    for (int p = kNumPriorities - 1; p >= 0; --p) {
      auto& queue = vision_queue_[p];
      while (!queue.empty() &&
             static_cast<int>(vision_batch_.size()) < limit) {
        vision_batch_.push_back(queue.front().group);
        queue.pop_front();
      }
    }
    vision_next_layer_ = 0;
    vision_begun_ = false;
  }
  int images = 0;
  for (const SequenceGroup* g : vision_batch_) {
    if (g->request().vision.empty()) ++images;
  }
  VisionPiece& piece = plan.vision;
  if (images > 0 && !vision_begun_) {
    piece.begin = true;
    vision_begun_ = true;
  }
  piece.layers_begin = piece.layers_end = vision_next_layer_;
  if (images > 0 && vision_next_layer_ < vision_layers_) {
    int layers = vision_layers_ - vision_next_layer_;
    if (bounded) {
      const absl::Duration per_layer = costs.vision_layer_per_image * images;
      layers = per_layer > absl::ZeroDuration()
                   ? static_cast<int>(std::clamp<int64_t>(
                         budget / per_layer, 1, layers))
                   : 1;
    }
    piece.layers_end = vision_next_layer_ + layers;
    vision_next_layer_ = piece.layers_end;
    budget -= Times(costs.vision_layer_per_image, int64_t{images} * layers);
  }
  if (images == 0 || vision_next_layer_ >= vision_layers_) {
    // The Q-Former runs when the encoder is done, in a step of its own
    // unless the budget has room.
    if (!bounded || piece.layers_end == piece.layers_begin ||
        budget >= Times(costs.query_per_image,
                        static_cast<int64_t>(vision_batch_.size()))) {
      piece.query = true;
    }
  }
}

StepPlan Scheduler::Plan(absl::Time now, const StepCosts& costs) {
  StepPlan plan;
  PlanDecode(plan);
  const bool bounded = !plan.decode.empty();
  absl::Duration budget = absl::InfiniteDuration();
  if (bounded) {
    const absl::Duration step_limit =
        std::max(options_.decode_interval,
                 costs.decode_step * options_.max_step_stretch_percent / 100);
    budget = std::max(step_limit - costs.decode_step, absl::ZeroDuration());
  }
  PlanPrefill(plan, budget, bounded, costs);
  PlanVision(plan, now, budget, bounded, costs);
  return plan;
}

std::vector<SequenceGroup*> Scheduler::TakeVisionBatch() {
  std::vector<SequenceGroup*> batch;
  batch.swap(vision_batch_);
  vision_next_layer_ = 0;
  vision_begun_ = false;
  return batch;
}

void Scheduler::StartRunning(SequenceGroup* group) {
  prefilling_.erase(
      std::remove(prefilling_.begin(), prefilling_.end(), group),
      prefilling_.end());
  auto& queue = prefill_queue_[static_cast<int>(group->priority())];
  queue.erase(std::remove(queue.begin(), queue.end(), group), queue.end());
  running_.push_back(group);
}

void Scheduler::Remove(SequenceGroup* group) {
  running_.remove(group);
  prefilling_.erase(
      std::remove(prefilling_.begin(), prefilling_.end(), group),
      prefilling_.end());
  for (auto& queue : prefill_queue_) {
    queue.erase(std::remove(queue.begin(), queue.end(), group), queue.end());
  }
  for (auto& queue : vision_queue_) {
    queue.erase(std::remove_if(queue.begin(), queue.end(),
                               [&](const VisionWaiter& w) {
                                 return w.group == group;
                               }),
                queue.end());
  }
  vision_batch_.erase(
      std::remove(vision_batch_.begin(), vision_batch_.end(), group),
      vision_batch_.end());
  group->ReleaseAll(blocks_);
}

}  // namespace iblip::server
