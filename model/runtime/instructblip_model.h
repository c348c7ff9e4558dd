#pragma once

// The TorchScript runtime behind a header without torch types: only
// instructblip_model.cc includes <torch/script.h> (each torch translation
// unit costs ~12 s and ~0.8 GB to compile).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/package.h"

namespace iblip::model {

// The vision encoder's output for one image, [1+patches, vision_hidden] on
// the model's device: what the server caches by image content, so asking
// another question about the same image skips the vision encoder. Opaque,
// immutable, cheap to copy (shared).
class VisionFeatures {
 public:
  VisionFeatures() = default;
  bool empty() const { return impl_ == nullptr; }
  uint64_t bytes() const;  // memory held

 private:
  friend class InstructBlipModel;
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// The soft prompt of one image: the projected Q-Former query outputs,
// [num_query_tokens, lm_hidden] on the model's device. Opaque, immutable,
// cheap to copy (shared).
class ImageEmbedding {
 public:
  ImageEmbedding() = default;
  int num_positions() const;
  bool empty() const { return impl_ == nullptr; }
  uint64_t bytes() const;  // memory held

 private:
  friend class InstructBlipModel;
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// The language model's state for one sequence: its KV cache (LLaMA), or its
// encoder output, cross-attention and decoder caches (T5). Owned by the
// engine. Copies share the cached prefix (tensors are never written in
// place), so several sequences can continue one prompt.
class SequenceState {
 public:
  SequenceState();
  ~SequenceState();
  SequenceState(const SequenceState& other);
  SequenceState& operator=(const SequenceState& other);
  SequenceState(SequenceState&&) noexcept;
  SequenceState& operator=(SequenceState&&) noexcept;

  // Positions the language model has consumed (LLaMA: image + prompt +
  // generated; T5: decoder inputs). 0 before Prefill.
  int length() const;

 private:
  friend class InstructBlipModel;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The engine's KV caches: `capacity` preallocated sequence slots of up to
// `max_length` positions each (T5: decoder positions, plus the encoder's
// cross-attention keys/values). Created by InstructBlipModel; used only on
// the engine thread. The scheduler admits work by free_slots().
class KvCachePool {
 public:
  ~KvCachePool();
  KvCachePool(const KvCachePool&) = delete;
  KvCachePool& operator=(const KvCachePool&) = delete;

  int capacity() const;
  int free_slots() const;
  int max_length() const;
  uint64_t bytes() const;  // memory held by the caches
  // A free slot (empty), or RESOURCE_EXHAUSTED.
  absl::StatusOr<int> Allocate();
  void Release(int slot);
  int length(int slot) const;  // cached positions

 private:
  friend class InstructBlipModel;
  struct Impl;
  explicit KvCachePool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct RuntimeOptions {
  std::string device = "cpu";  // "cpu" or "cuda:N"
  int num_threads = 0;         // torch intra-op threads; 0 = number of CPUs
};

// Vision encoder -> Q-Former + projection -> language model, as the
// TorchScript modules of a model package. NOT thread-safe: exactly one thread
// (the engine thread) calls into it. Errors from torch become absl::Status
// here and never escape as exceptions.
class InstructBlipModel {
 public:
  static absl::StatusOr<std::unique_ptr<InstructBlipModel>> Load(
      const PackageManifest& manifest, const RuntimeOptions& options);
  ~InstructBlipModel();
  InstructBlipModel(const InstructBlipModel&) = delete;
  // Applies the RuntimeOptions' thread count to the calling thread (torch's
  // setting is per thread); the thread that calls into the model runs it
  // once before its first call.
  void BindCallingThread() const;
  InstructBlipModel& operator=(const InstructBlipModel&) = delete;

  // Runs the vision encoder and the instruction-aware Q-Former on one image.
  // `qformer_mask` (1 keep, 0 padding) defaults to all ones; the server never
  // pads, since padding shifts the Q-Former's text positions.
  absl::StatusOr<ImageEmbedding> EncodeImage(
      const PixelValues& pixels, const std::vector<int32_t>& qformer_ids,
      const std::vector<int32_t>& qformer_mask = {});

  // The two halves of EncodeImage, batched for the server's vision stage.
  // One vision encoder pass over several images (all of the package's size).
  absl::StatusOr<std::vector<VisionFeatures>> EncodeVision(
      const std::vector<const PixelValues*>& images);
  // One Q-Former pass over several (image, instruction) pairs. Instructions
  // of different lengths are right-padded and masked: text positions start
  // at 0 in every row, so each row equals its unbatched result up to float
  // rounding.
  absl::StatusOr<std::vector<ImageEmbedding>> QueryImages(
      const std::vector<VisionFeatures>& features,
      const std::vector<std::vector<int32_t>>& qformer_ids);

  // Runs the prompt ([soft prompt; prompt embeddings]) and returns the logits
  // [vocab] of the first generated token; `state` receives the caches.
  absl::StatusOr<std::vector<float>> Prefill(
      const ImageEmbedding& image, const std::vector<int32_t>& prompt_ids,
      SequenceState* state);

  // Slot-based, batched decoding for the engine. ------------------------

  // Caches for up to `max_slots` sequences within `budget_bytes`, each up to
  // the model's context (T5: `max_decoder_length` decoder positions).
  // RESOURCE_EXHAUSTED if not even one slot fits the budget.
  absl::StatusOr<std::unique_ptr<KvCachePool>> CreateCachePool(
      int max_slots, uint64_t budget_bytes, int max_decoder_length);

  // Prefill into an empty slot; returns the first token's logits.
  absl::StatusOr<std::vector<float>> PrefillSlot(
      const ImageEmbedding& image, const std::vector<int32_t>& prompt_ids,
      KvCachePool& pool, int slot);

  // One decode step for many sequences of different lengths at once: feeds
  // tokens[i] to slots[i], returns logits per row. Each row's result does
  // not depend on the others (masking; only float rounding can differ).
  absl::StatusOr<std::vector<std::vector<float>>> DecodeBatch(
      KvCachePool& pool, const std::vector<int>& slots,
      const std::vector<int32_t>& tokens);

  // slots[i] takes the contents of sources[i] (sources may repeat and
  // overlap slots: beam search reorders its beams with this).
  absl::Status CopySlots(KvCachePool& pool, const std::vector<int>& slots,
                         const std::vector<int>& sources);

  const std::string& device() const;

 private:
  // DecodeBatch for packages with decode_in_cache (LLaMA): attends inside
  // the pool, no gathered copy of the caches.
  absl::StatusOr<std::vector<std::vector<float>>> DecodeInCache(
      KvCachePool& pool, const std::vector<int>& slots,
      const std::vector<int32_t>& tokens);
  struct Impl;
  explicit InstructBlipModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iblip::model
