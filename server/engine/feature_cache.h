#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "model/runtime/model_tensors.h"
#include "server/engine/lru_cache.h"
#include "server/metrics.h"

namespace iblip::server {

// What the vision stage computed, kept by content so follow-up questions on
// an image skip work: the vision encoder's features keyed by the image's
// hash (any question), and the Q-Former's soft prompt keyed by (image hash,
// Q-Former input ids) (the same question again, e.g. a retried or repeated
// request). Each has its own byte budget; a budget of 0 disables that cache.
// Thread-safe: the preprocessing pool looks up, the engine thread stores.
class FeatureCache {
 public:
  FeatureCache(uint64_t vision_budget_bytes, uint64_t qformer_budget_bytes,
               Metrics& metrics);

  // SHA-256 of the image bytes, hex: collisions cannot be crafted, so one
  // client's image can never answer another's.
  static std::string ImageHash(absl::string_view image_bytes);

  std::optional<model::VisionFeatures> FindVision(
      const std::string& image_hash);
  std::optional<model::ImageEmbedding> FindEmbedding(
      const std::string& image_hash, const std::vector<int32_t>& qformer_ids);
  // An empty hash (an internal request without image bytes) is not stored.
  void PutVision(const std::string& image_hash, model::VisionFeatures features);
  void PutEmbedding(const std::string& image_hash,
                    const std::vector<int32_t>& qformer_ids,
                    model::ImageEmbedding embedding);

 private:
  static std::string EmbeddingKey(const std::string& image_hash,
                                  const std::vector<int32_t>& qformer_ids);
  void UpdateGauges();

  const bool vision_enabled_;
  const bool qformer_enabled_;
  LruCache<model::VisionFeatures> vision_;
  LruCache<model::ImageEmbedding> embeddings_;
  Metrics& metrics_;
};

}  // namespace iblip::server
