#pragma once

#include <deque>
#include <list>
#include <vector>

#include "absl/time/time.h"
#include "server/engine/kv_block_manager.h"
#include "server/engine/sequence_group.h"

namespace iblip::server {

// What the engine measured, as moving averages; the planner sizes the work it
// puts between two decode steps with them. Zero means "not measured yet".
struct StepCosts {
  absl::Duration decode_step;             // one batched decode step
  absl::Duration vision_layer_per_image;  // one encoder layer, one image
  absl::Duration query_per_image;         // Q-Former + projection, one image
  absl::Duration prefill_per_position;    // one prompt position
};

// The vision work of one step, on the batch in progress (Scheduler keeps it).
struct VisionPiece {
  bool begin = false;  // embed the batch's images first (a new batch)
  int layers_begin = 0;
  int layers_end = 0;  // encoder layers [layers_begin, layers_end) this step
  bool query = false;  // then the Q-Former: the batch leaves the vision stage
  bool empty() const { return !begin && layers_end == layers_begin && !query; }
};

// One prefill chunk: positions [item.start, end) of item.sequence.
struct PrefillPiece {
  SequenceGroup* group = nullptr;
  SequenceGroup::PrefillItem item;
  int end = 0;
};

// What one engine step runs, in this order: block copies, one batched decode
// of `decode`'s live sequences, the vision piece, the prefill pieces.
struct StepPlan {
  std::vector<SequenceGroup*> decode;
  std::vector<BlockCopy> copies;          // copy on write, before the decode
  std::vector<SequenceGroup*> preempted;  // evicted (their blocks are free)
  VisionPiece vision;
  std::vector<PrefillPiece> prefills;
  bool empty() const {
    return decode.empty() && vision.empty() && prefills.empty();
  }
};

// The step planner: which sequences decode, which prefill chunks run (and
// how long), and how much vision work runs, given the waiting and running
// requests, the free KV blocks and the measured costs. Pure policy plus the
// block bookkeeping: it never touches tensors, so it is tested without a
// model (tests/unit/scheduler_test.cc).
//
// Policy:
//  - Every running sequence decodes every step (continuous batching). Its
//    next position's block is reserved first; when blocks run out the lowest
//    priority, most recent request is preempted (its blocks freed, recomputed
//    later) rather than anything refused.
//  - While streams decode, the other work of a step is bounded so that a
//    stream gets a token about every `decode_interval` whatever arrives:
//    prefill runs in chunks and the vision encoder a few layers at a time,
//    sized by the measured costs (at least one chunk or layer per step, so
//    nothing starves). With no stream decoding, nothing is bounded: a lone
//    request goes through vision and prefill at full speed.
//  - Where the decode step alone takes most of `decode_interval` or more
//    (a 7B model on a small CPU: 0.5-1.5 s), the interval would leave other
//    work only its least piece, and requests would reach their first token
//    one image every ~40 steps. So a step may also last up to
//    `max_step_stretch_percent` of the decode step: the bound is the larger
//    of the two.
//  - Prefill before vision (those requests are nearer their first token);
//    strict priority: a request that cannot start blocks lower priorities,
//    and takes blocks from lower-priority requests when it needs them.
//  - Vision batches as Triton's dynamic batcher: a batch starts when
//    vision_max_batch_size images wait or the oldest waited
//    vision_max_queue_delay.
//
// Not thread-safe: the engine thread owns it.
class Scheduler {
 public:
  struct Options {
    int max_running_sequences = 32;  // decoded together (rows per step)
    int vision_max_batch_size = 8;
    absl::Duration vision_max_queue_delay = absl::ZeroDuration();
    int max_prefill_chunk = 2048;  // positions per prefill chunk
    int min_prefill_chunk = 32;    // the least a chunk does while streams run
    absl::Duration decode_interval = absl::Milliseconds(50);
    int max_step_stretch_percent = 200;  // 100: the interval alone bounds
  };
  // `blocks` must outlive the scheduler.
  Scheduler(Options options, KvBlockManager& blocks, int vision_num_layers,
            bool encoder_decoder);

  // A request that needs its image encoded (or only its Q-Former output).
  void AddToVision(SequenceGroup* group, absl::Time now);
  // A request ready for prefill (encoded, or preempted).
  void AddToPrefill(SequenceGroup* group);

  StepPlan Plan(absl::Time now, const StepCosts& costs);

  // The engine finished (or failed) the vision batch; these groups left it.
  std::vector<SequenceGroup*> TakeVisionBatch();
  const std::vector<SequenceGroup*>& vision_batch() const {
    return vision_batch_;
  }
  // A prefill finished: the group decodes from the next step on.
  void StartRunning(SequenceGroup* group);
  // Forgets `group` wherever it is (finished, cancelled, failed); frees its
  // blocks.
  void Remove(SequenceGroup* group);

  // When queued vision work becomes due (InfiniteFuture: never; <= now: now).
  absl::Time VisionDue() const;
  bool HasRunnableWork(absl::Time now) const;
  int waiting() const;  // in the vision or prefill queues
  int running_sequences() const;

 private:
  struct VisionWaiter {
    SequenceGroup* group;
    absl::Time since;
  };
  // Reserves the next position of every running sequence, preempting while
  // blocks lack.
  void PlanDecode(StepPlan& plan);
  void PlanPrefill(StepPlan& plan, absl::Duration& budget, bool bounded,
                   const StepCosts& costs);
  void PlanVision(StepPlan& plan, absl::Time now, absl::Duration budget,
                  bool bounded, const StepCosts& costs);
  // Evicts the lowest-priority, most recent holder of blocks whose priority
  // is at most `at_most` (never `keep`). False if there is none.
  bool PreemptOne(Priority at_most, const SequenceGroup* keep,
                  StepPlan& plan);
  bool Reserve(SequenceGroup& group, const SequenceGroup::PrefillItem& item,
               int end, std::vector<BlockCopy>& copies);
  int RowsOf(const SequenceGroup& group) const;

  const Options options_;
  KvBlockManager& blocks_;
  const int vision_layers_;
  const bool encoder_decoder_;

  std::array<std::deque<VisionWaiter>, kNumPriorities> vision_queue_;
  std::vector<SequenceGroup*> vision_batch_;  // in the vision stage
  int vision_next_layer_ = 0;
  bool vision_begun_ = false;
  std::array<std::deque<SequenceGroup*>, kNumPriorities> prefill_queue_;
  std::vector<SequenceGroup*> prefilling_;  // started prefill, hold blocks
  std::list<SequenceGroup*> running_;       // in start order
};

}  // namespace iblip::server
