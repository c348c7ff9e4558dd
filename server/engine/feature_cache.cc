#include "server/engine/feature_cache.h"

#include "common/sha256.h"

namespace iblip::server {

FeatureCache::FeatureCache(uint64_t vision_budget_bytes,
                           uint64_t qformer_budget_bytes, Metrics& metrics)
    : vision_enabled_(vision_budget_bytes > 0),
      qformer_enabled_(qformer_budget_bytes > 0),
      vision_(vision_budget_bytes),
      embeddings_(qformer_budget_bytes),
      metrics_(metrics) {}

std::string FeatureCache::ImageHash(absl::string_view image_bytes) {
  return Sha256Hex(image_bytes);
}

std::string FeatureCache::EmbeddingKey(
    const std::string& image_hash, const std::vector<int32_t>& qformer_ids) {
  std::string key = image_hash;
  key.append(reinterpret_cast<const char*>(qformer_ids.data()),
             qformer_ids.size() * sizeof(int32_t));
  return key;
}

std::optional<model::VisionFeatures> FeatureCache::FindVision(
    const std::string& image_hash) {
  if (!vision_enabled_) return std::nullopt;
  auto found = vision_.Get(image_hash);
  metrics_.CacheLookup(CacheKind::kVision, found.has_value());
  return found;
}

std::optional<model::ImageEmbedding> FeatureCache::FindEmbedding(
    const std::string& image_hash, const std::vector<int32_t>& qformer_ids) {
  if (!qformer_enabled_) return std::nullopt;
  auto found = embeddings_.Get(EmbeddingKey(image_hash, qformer_ids));
  metrics_.CacheLookup(CacheKind::kQformer, found.has_value());
  return found;
}

void FeatureCache::PutVision(const std::string& image_hash,
                             model::VisionFeatures features) {
  if (!vision_enabled_ || image_hash.empty()) return;
  vision_.Put(image_hash, std::move(features));
  UpdateGauges();
}

void FeatureCache::PutEmbedding(const std::string& image_hash,
                                const std::vector<int32_t>& qformer_ids,
                                model::ImageEmbedding embedding) {
  if (!qformer_enabled_ || image_hash.empty()) return;
  embeddings_.Put(EmbeddingKey(image_hash, qformer_ids), std::move(embedding));
  UpdateGauges();
}

void FeatureCache::UpdateGauges() {
  metrics_.SetCacheBytes(CacheKind::kVision, vision_.bytes());
  metrics_.SetCacheBytes(CacheKind::kQformer, embeddings_.bytes());
}

}  // namespace iblip::server
