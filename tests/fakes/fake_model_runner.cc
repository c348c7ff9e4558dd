#include "tests/fakes/fake_model_runner.h"

#include <algorithm>
#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"

namespace iblip::testing {
namespace {

constexpr int64_t kStartToken = 1000003;  // the decoder's start (T5 mode)

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  return h * 0xBF58476D1CE4E5B9ull;
}

// A tensor handle with an identity and a row count.
class FakeTensor final : public model::TensorHandle {
 public:
  FakeTensor(int64_t id, int rows) : id_(id), rows_(rows) {}
  uint64_t bytes() const override { return 64ull * rows_; }
  int rows() const override { return rows_; }
  int64_t id() const { return id_; }

 private:
  int64_t id_;
  int rows_;
};

template <typename Shared>
int64_t IdOf(const Shared& shared) {
  return static_cast<const FakeTensor*>(shared.handle())->id();
}

class FakeVision final : public server::VisionActivations {
 public:
  std::vector<int64_t> images;
  int next_layer = 0;
};

}  // namespace

FakeModelRunner::FakeModelRunner(Options options, server::FakeClock* clock)
    : options_(options), clock_(clock) {}

namespace {

std::vector<float> OnlyCandidates(std::vector<float> logits, int n) {
  if (n <= 0 || static_cast<size_t>(n) >= logits.size()) return logits;
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  if (sorted[n - 1] == sorted[n]) return logits;
  for (float& logit : logits) {
    if (logit < sorted[n - 1]) logit = -std::numeric_limits<float>::infinity();
  }
  return logits;
}

}  // namespace

void FakeModelRunner::Spend(absl::Duration d, Call::Kind kind, int size) {
  if (clock_ != nullptr) clock_->Advance(d);
  MutexLock lock(&calls_mutex_);
  calls_.push_back({kind, clock_ ? clock_->Now() : absl::Now(), size});
}

std::vector<FakeModelRunner::Call> FakeModelRunner::calls() const {
  MutexLock lock(&calls_mutex_);
  return calls_;
}

int FakeModelRunner::blocks_written() const {
  int written = 0;
  for (size_t b = 0; block_size_ > 0 && b < cache_.size(); b += block_size_) {
    written += std::any_of(cache_.begin() + b, cache_.begin() + b + block_size_,
                           [](int64_t v) { return v >= 0; });
  }
  return written;
}

std::vector<float> FakeModelRunner::Logits(
    const std::vector<int64_t>& history) const {
  uint64_t h = 17;
  for (int64_t id : history) h = Mix(h, static_cast<uint64_t>(id));
  std::vector<float> logits(options_.vocab);
  for (int v = 0; v < options_.vocab; ++v)
    logits[v] = static_cast<float>(Mix(h, v) % 1000) / 1000.0f;
  logits[h % options_.vocab] = 5.0f;
  return logits;
}

int64_t FakeModelRunner::PixelsId(const model::PixelValues& pixels) {
  uint64_t h = 3;
  for (size_t i = 0; i < pixels.chw.size(); i += 97)
    h = Mix(h, static_cast<uint64_t>(pixels.chw[i] * 1e6f));
  return static_cast<int64_t>(h >> 2);
}

int64_t FakeModelRunner::EmbeddingId(int64_t image_id,
                                     const std::vector<int32_t>& qformer_ids) {
  uint64_t h = Mix(5, static_cast<uint64_t>(image_id));
  for (int32_t id : qformer_ids) h = Mix(h, static_cast<uint64_t>(id));
  return static_cast<int64_t>(h >> 2);
}

int64_t FakeModelRunner::SoftPromptRow(int64_t embedding_id, int row) const {
  // Identities of soft prompt rows are large; token ids are small.
  return static_cast<int64_t>(
             Mix(static_cast<uint64_t>(embedding_id), row) >> 3) +
         (int64_t{1} << 40);
}

std::vector<int64_t> FakeModelRunner::PromptHistory(
    const model::PixelValues& pixels, const std::vector<int32_t>& qformer_ids,
    const std::vector<int32_t>& prompt) const {
  const int64_t embedding = EmbeddingId(PixelsId(pixels), qformer_ids);
  std::vector<int64_t> history;
  for (int r = 0; r < options_.query_positions; ++r)
    history.push_back(SoftPromptRow(embedding, r));
  history.insert(history.end(), prompt.begin(), prompt.end());
  if (options_.encoder_decoder) history.push_back(kStartToken);
  return history;
}

absl::Status FakeModelRunner::AllocateKvCache(int num_blocks, int block_size) {
  block_size_ = block_size;
  cache_.assign(static_cast<size_t>(num_blocks) * block_size, -1);
  return absl::OkStatus();
}

absl::Status FakeModelRunner::Write(const server::BlockTable& table,
                                    int position, int64_t identity) {
  const size_t block = position / block_size_;
  if (block >= table.blocks.size()) {
    return absl::InternalError(
        absl::StrCat("write of position ", position, " beyond the table"));
  }
  cache_[static_cast<size_t>(table.blocks[block]) * block_size_ +
         position % block_size_] = identity;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> FakeModelRunner::Read(
    const server::BlockTable& table, int positions) const {
  std::vector<int64_t> history;
  for (int p = 0; p < positions; ++p) {
    const size_t block = p / block_size_;
    if (block >= table.blocks.size())
      return absl::InternalError("read beyond the block table");
    const int64_t v =
        cache_[static_cast<size_t>(table.blocks[block]) * block_size_ +
               p % block_size_];
    if (v < 0) {
      return absl::InternalError(
          absl::StrCat("read of unwritten KV position ", p));
    }
    history.push_back(v);
  }
  return history;
}

absl::StatusOr<std::unique_ptr<server::VisionActivations>>
FakeModelRunner::BeginVision(
    const std::vector<const model::PixelValues*>& images) {
  auto vision = std::make_unique<FakeVision>();
  for (const model::PixelValues* pixels : images) {
    const int64_t id = PixelsId(*pixels);
    if (poisoned_images_.count(id)) {
      return absl::InvalidArgumentError("poisoned image");
    }
    vision->images.push_back(id);
  }
  Spend(absl::Milliseconds(1), Call::kVisionBegin,
        static_cast<int>(images.size()));
  return std::unique_ptr<server::VisionActivations>(std::move(vision));
}

absl::Status FakeModelRunner::RunVisionLayers(
    server::VisionActivations& activations, int begin, int end) {
  auto& vision = static_cast<FakeVision&>(activations);
  if (begin != vision.next_layer || end <= begin ||
      end > options_.vision_layers) {
    return absl::InternalError(absl::StrCat("vision layers ", begin, "..",
                                            end, " out of order"));
  }
  vision.next_layer = end;
  Spend(options_.vision_layer_per_image *
            static_cast<int64_t>(vision.images.size()) * (end - begin),
        Call::kVisionLayers, end - begin);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<model::VisionFeatures>>
FakeModelRunner::FinishVision(server::VisionActivations& activations) {
  auto& vision = static_cast<FakeVision&>(activations);
  if (vision.next_layer != options_.vision_layers)
    return absl::InternalError("vision finished before its last layer");
  std::vector<model::VisionFeatures> features;
  for (int64_t id : vision.images) {
    features.emplace_back(std::make_shared<const FakeTensor>(id, 9));
  }
  return features;
}

absl::StatusOr<std::vector<model::ImageEmbedding>> FakeModelRunner::QueryImages(
    const std::vector<model::VisionFeatures>& features,
    const std::vector<std::vector<int32_t>>& qformer_ids) {
  std::vector<model::ImageEmbedding> out;
  for (size_t i = 0; i < features.size(); ++i) {
    if (features[i].empty()) return absl::InternalError("empty features");
    out.emplace_back(std::make_shared<const FakeTensor>(
        EmbeddingId(IdOf(features[i]), qformer_ids[i]),
        options_.query_positions));
  }
  Spend(options_.query_per_image * static_cast<int64_t>(features.size()),
        Call::kQuery, static_cast<int>(features.size()));
  return out;
}

absl::StatusOr<std::vector<float>> FakeModelRunner::Prefill(
    const server::PrefillChunk& chunk) {
  const int64_t embedding = IdOf(*chunk.image);
  const int q = chunk.image->num_positions();
  std::vector<int64_t> history;
  if (options_.encoder_decoder) {
    // The encoder's positions go to the cross blocks; the decoder's own
    // positions are the start token, then recomputed tokens.
    const int encoder = q + static_cast<int>(chunk.tokens->size());
    if (chunk.start == 0) {
      for (int p = 0; p < encoder; ++p) {
        const int64_t id = p < q ? SoftPromptRow(embedding, p)
                                 : (*chunk.tokens)[p - q];
        if (auto s = Write(*chunk.cross_table, p, id); !s.ok()) return s;
      }
    }
    for (int p = chunk.start; p < chunk.end; ++p) {
      const int64_t id = p == 0 ? kStartToken : (*chunk.decoder_tokens)[p - 1];
      if (auto s = Write(*chunk.table, p, id); !s.ok()) return s;
    }
    auto cross = Read(*chunk.cross_table, encoder);
    if (!cross.ok()) return cross.status();
    auto self = Read(*chunk.table, chunk.end);
    if (!self.ok()) return self.status();
    history = *cross;
    history.insert(history.end(), self->begin(), self->end());
    Spend(options_.prefill_per_position * (chunk.start == 0 ? encoder : 1),
          Call::kPrefill, chunk.end - chunk.start);
    return Logits(history);
  }
  for (int p = chunk.start; p < chunk.end; ++p) {
    const int64_t id =
        p < q ? SoftPromptRow(embedding, p) : (*chunk.tokens)[p - q];
    if (auto s = Write(*chunk.table, p, id); !s.ok()) return s;
  }
  auto read = Read(*chunk.table, chunk.end);
  if (!read.ok()) return read.status();
  Spend(options_.prefill_per_position * (chunk.end - chunk.start),
        Call::kPrefill, chunk.end - chunk.start);
  return Logits(*read);
}

absl::StatusOr<std::vector<std::vector<float>>> FakeModelRunner::Decode(
    const std::vector<server::DecodeRow>& rows) {
  std::vector<std::vector<float>> out;
  for (const server::DecodeRow& row : rows) {
    if (poisoned_tokens_.count(row.token))
      return absl::InternalError("poisoned token");
    if (auto s = Write(*row.table, row.position, row.token); !s.ok()) return s;
    std::vector<int64_t> history;
    if (row.cross_table != nullptr) {
      auto cross = Read(*row.cross_table, row.cross_length);
      if (!cross.ok()) return cross.status();
      history = *cross;
    }
    auto self = Read(*row.table, row.position + 1);
    if (!self.ok()) return self.status();
    history.insert(history.end(), self->begin(), self->end());
    out.push_back(Logits(history));
    if (options_.only_candidates)
      out.back() = OnlyCandidates(out.back(), row.candidates);
  }
  Spend(options_.decode_step +
            options_.decode_per_row * static_cast<int64_t>(rows.size()),
        Call::kDecode, static_cast<int>(rows.size()));
  std::vector<int> candidates;
  for (const server::DecodeRow& row : rows)
    candidates.push_back(row.candidates);
  MutexLock lock(&calls_mutex_);
  calls_.back().candidates = std::move(candidates);
  return out;
}

absl::Status FakeModelRunner::CopyBlocks(
    const std::vector<server::BlockCopy>& copies) {
  for (const server::BlockCopy& copy : copies) {
    std::copy_n(cache_.begin() + static_cast<size_t>(copy.from) * block_size_,
                block_size_,
                cache_.begin() + static_cast<size_t>(copy.to) * block_size_);
  }
  Spend(absl::ZeroDuration(), Call::kCopy, static_cast<int>(copies.size()));
  return absl::OkStatus();
}

}  // namespace iblip::testing
