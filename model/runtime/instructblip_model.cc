#include "model/runtime/instructblip_model.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <algorithm>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace iblip::model {

namespace {
uint64_t TensorBytes(const torch::Tensor& t) {
  return t.defined() ? static_cast<uint64_t>(t.numel()) * t.element_size() : 0;
}
}  // namespace

struct VisionFeatures::Impl {
  torch::Tensor image_embeds;  // [1+P, Hv] float32
};

uint64_t VisionFeatures::bytes() const {
  return impl_ ? TensorBytes(impl_->image_embeds) : 0;
}

struct ImageEmbedding::Impl {
  torch::Tensor soft_prompt;  // [Q, H] float32
};

int ImageEmbedding::num_positions() const {
  return impl_ ? static_cast<int>(impl_->soft_prompt.size(0)) : 0;
}

uint64_t ImageEmbedding::bytes() const {
  return impl_ ? TensorBytes(impl_->soft_prompt) : 0;
}

struct SequenceState::Impl {
  int length = 0;
  torch::Tensor keys, values;  // [L,1,heads,S,D]: LLaMA self-attention; T5
                               // decoder self-attention
  // T5 only.
  torch::Tensor cross_keys, cross_values;  // [L,1,heads,T,D]
  torch::Tensor encoder_mask;              // [1,T]
};

SequenceState::SequenceState() : impl_(std::make_unique<Impl>()) {}
SequenceState::~SequenceState() = default;
SequenceState::SequenceState(const SequenceState& other)
    : impl_(std::make_unique<Impl>(*other.impl_)) {}
SequenceState& SequenceState::operator=(const SequenceState& other) {
  *impl_ = *other.impl_;
  return *this;
}
SequenceState::SequenceState(SequenceState&&) noexcept = default;
SequenceState& SequenceState::operator=(SequenceState&&) noexcept = default;
int SequenceState::length() const { return impl_->length; }

struct KvCachePool::Impl {
  int capacity = 0;
  int max_length = 0;   // self-attention positions per slot
  int max_encoder = 0;  // T5: encoder positions per slot
  std::vector<int> lengths;
  std::vector<bool> used;
  torch::Tensor keys, values;  // [capacity, L, heads, max_length, D]
  torch::Tensor cross_keys,
      cross_values;                  // T5: [capacity, L, heads, max_encoder, D]
  torch::Tensor encoder_mask;        // T5: [capacity, max_encoder] int64
  std::vector<int> encoder_lengths;  // T5
};

KvCachePool::KvCachePool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KvCachePool::~KvCachePool() = default;
int KvCachePool::capacity() const { return impl_->capacity; }
int KvCachePool::max_length() const { return impl_->max_length; }
int KvCachePool::length(int slot) const { return impl_->lengths[slot]; }
int KvCachePool::free_slots() const {
  return static_cast<int>(
      std::count(impl_->used.begin(), impl_->used.end(), false));
}
uint64_t KvCachePool::bytes() const {
  uint64_t total = 0;
  for (const torch::Tensor* t :
       {&impl_->keys, &impl_->values, &impl_->cross_keys, &impl_->cross_values,
        &impl_->encoder_mask}) {
    total += TensorBytes(*t);
  }
  return total;
}
absl::StatusOr<int> KvCachePool::Allocate() {
  for (int slot = 0; slot < impl_->capacity; ++slot) {
    if (!impl_->used[slot]) {
      impl_->used[slot] = true;
      impl_->lengths[slot] = 0;
      return slot;
    }
  }
  return absl::ResourceExhaustedError("no free KV cache slot");
}
void KvCachePool::Release(int slot) {
  impl_->used[slot] = false;
  impl_->lengths[slot] = 0;
}

struct InstructBlipModel::Impl {
  std::string device_name;
  torch::Device device{torch::kCPU};
  LmFamily family = LmFamily::kLlama;
  int64_t decoder_start_token_id = 0;
  int num_layers = 0, kv_heads = 0, head_dim = 0, max_context = 0;
  torch::ScalarType dtype = torch::kFloat;
  int threads = 1;  // torch intra-op threads, set on every calling thread
  torch::jit::Module vision;  // forward(pixels) -> image_embeds
  torch::jit::Module
      qformer;  // forward(image_embeds, ids, mask) -> soft prompt
  torch::jit::Module language;  // see model/PACKAGE.md
  // LLaMA packages exported since decode_in_cache exists: decode steps
  // attend inside the slot pool instead of over a gathered copy.
  bool decode_in_cache = false;

  // Logits [B,V] on any device -> one float vector per row.
  static std::vector<std::vector<float>> ToRows(const torch::Tensor& logits) {
    torch::Tensor cpu = logits.to(torch::kCPU, torch::kFloat).contiguous();
    std::vector<std::vector<float>> rows(cpu.size(0));
    const int64_t vocab = cpu.size(1);
    for (size_t b = 0; b < rows.size(); ++b) {
      const float* data = cpu.data_ptr<float>() + b * vocab;
      rows[b].assign(data, data + vocab);
    }
    return rows;
  }

  torch::Tensor Ids(const std::vector<int32_t>& ids) const {
    return torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()),
                         torch::kLong)
        .unsqueeze(0)
        .to(device);
  }
  torch::Tensor Ones(int64_t n) const {
    return torch::ones(
        {1, n}, torch::TensorOptions().dtype(torch::kLong).device(device));
  }
  torch::Tensor Range(int64_t from, int64_t to) const {
    return torch::arange(
               from, to,
               torch::TensorOptions().dtype(torch::kLong).device(device))
        .unsqueeze(0);
  }
  static std::vector<float> ToVector(const torch::Tensor& logits) {
    torch::Tensor flat =
        logits.squeeze(0).to(torch::kCPU, torch::kFloat).contiguous();
    const float* data = flat.data_ptr<float>();
    return std::vector<float>(data, data + flat.numel());
  }
};

namespace {

// The informative line of a torch exception. Plain c10::Errors put it first
// (a C++ backtrace follows); errors raised inside the TorchScript interpreter
// end with it ("RuntimeError: ...") after the script's traceback.
std::string TorchMessage(const std::exception& e) {
  const std::string message = e.what();
  const size_t marker = message.rfind("Error: ");
  if (message.find("TorchScript interpreter") != std::string::npos &&
      marker != std::string::npos) {
    const size_t start = message.rfind('\n', marker) + 1;  // npos + 1 == 0
    return message.substr(start, message.find('\n', marker) - start);
  }
  return message.substr(0, message.find('\n'));
}

absl::Status TorchError(absl::string_view what, const std::exception& e) {
  return absl::InternalError(absl::StrCat(what, ": ", TorchMessage(e)));
}

// The elements of a (logits, keys, values) tuple.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> Unpack3(
    const c10::IValue& value) {
  const auto& elements = value.toTuple()->elements();
  return {elements[0].toTensor(), elements[1].toTensor(),
          elements[2].toTensor()};
}

}  // namespace

InstructBlipModel::InstructBlipModel(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
void InstructBlipModel::BindCallingThread() const {
  // OpenMP's thread count is per thread: one set on the loading thread did
  // not reach the engine thread, whose decode steps then ran at about one
  // core's speed (medium model, bf16: 27 ms a step instead of 18).
  at::set_num_threads(impl_->threads);
}

InstructBlipModel::~InstructBlipModel() = default;

const std::string& InstructBlipModel::device() const {
  return impl_->device_name;
}

absl::StatusOr<std::unique_ptr<InstructBlipModel>> InstructBlipModel::Load(
    const PackageManifest& manifest, const RuntimeOptions& options) {
  auto impl = std::make_unique<Impl>();
  try {
    impl->device = torch::Device(options.device);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "runtime.device: '", options.device, "' is not a torch device"));
  }
  impl->device_name = options.device;
  impl->family = manifest.lm_family;
  impl->decoder_start_token_id = manifest.decoder_start_token_id;
  impl->num_layers = manifest.lm_num_layers;
  impl->kv_heads = manifest.lm_kv_heads;
  impl->head_dim = manifest.lm_head_dim;
  impl->max_context = manifest.max_context_tokens;
  impl->dtype = manifest.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  // Torch picks 1 thread on some VMs (libcpuinfo counts cores wrongly), so the
  // thread count is always set explicitly, once, here.
  const int threads =
      options.num_threads > 0
          ? options.num_threads
          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  impl->threads = threads;
  at::set_num_threads(threads);
  std::string current;
  try {
    current = manifest.vision_module_path;
    impl->vision = torch::jit::load(current, impl->device);
    current = manifest.qformer_module_path;
    impl->qformer = torch::jit::load(current, impl->device);
    current = manifest.language_module_path;
    impl->language = torch::jit::load(current, impl->device);
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load the TorchScript module ", current, ": ", TorchMessage(e)));
  }
  const std::vector<std::string> methods =
      manifest.lm_family == LmFamily::kLlama
          ? std::vector<std::string>{"embed", "prefill", "decode"}
          : std::vector<std::string>{"embed", "encode", "cross_kv", "decode"};
  for (const std::string& method : methods) {
    if (!impl->language.find_method(method)) {
      return absl::FailedPreconditionError(
          absl::StrCat(manifest.language_module_path, " has no '", method,
                       "' method (wrong LM family?)"));
    }
  }
  impl->decode_in_cache =
      impl->family == LmFamily::kLlama &&
      impl->language.find_method("decode_in_cache").has_value();
  return std::unique_ptr<InstructBlipModel>(
      new InstructBlipModel(std::move(impl)));
}

absl::StatusOr<ImageEmbedding> InstructBlipModel::EncodeImage(
    const PixelValues& pixels, const std::vector<int32_t>& qformer_ids,
    const std::vector<int32_t>& qformer_mask) {
  if (!qformer_mask.empty() && qformer_mask.size() != qformer_ids.size()) {
    return absl::InvalidArgumentError(
        "EncodeImage: qformer_mask and qformer_ids differ in length");
  }
  auto features = EncodeVision({&pixels});
  if (!features.ok()) return features.status();
  if (qformer_mask.empty()) {
    auto embeddings = QueryImages(*features, {qformer_ids});
    if (!embeddings.ok()) return embeddings.status();
    return std::move(embeddings->front());
  }
  c10::InferenceMode inference;
  try {
    torch::Tensor soft_prompt =
        impl_->qformer
            .forward({features->front().impl_->image_embeds.unsqueeze(0),
                      impl_->Ids(qformer_ids), impl_->Ids(qformer_mask)})
            .toTensor();
    auto impl = std::make_shared<ImageEmbedding::Impl>();
    impl->soft_prompt = soft_prompt.squeeze(0).contiguous();
    ImageEmbedding embedding;
    embedding.impl_ = std::move(impl);
    return embedding;
  } catch (const std::exception& e) {
    return TorchError("Q-Former failed", e);
  }
}

absl::StatusOr<std::vector<VisionFeatures>> InstructBlipModel::EncodeVision(
    const std::vector<const PixelValues*>& images) {
  if (images.empty()) return std::vector<VisionFeatures>();
  c10::InferenceMode inference;
  try {
    std::vector<torch::Tensor> rows;
    for (const PixelValues* pixels : images) {
      rows.push_back(torch::from_blob(const_cast<float*>(pixels->chw.data()),
                                      {3, pixels->size, pixels->size},
                                      torch::kFloat));
    }
    torch::Tensor embeds =
        impl_->vision.forward({torch::stack(rows).to(impl_->device)})
            .toTensor();
    std::vector<VisionFeatures> result(images.size());
    for (size_t i = 0; i < images.size(); ++i) {
      auto impl = std::make_shared<VisionFeatures::Impl>();
      impl->image_embeds =
          embeds[i].clone();  // own its memory, not the batch's
      result[i].impl_ = std::move(impl);
    }
    return result;
  } catch (const std::exception& e) {
    return TorchError("vision encoder failed", e);
  }
}

absl::StatusOr<std::vector<ImageEmbedding>> InstructBlipModel::QueryImages(
    const std::vector<VisionFeatures>& features,
    const std::vector<std::vector<int32_t>>& qformer_ids) {
  if (features.size() != qformer_ids.size()) {
    return absl::InvalidArgumentError(
        "QueryImages: features and qformer_ids differ in count");
  }
  if (features.empty()) return std::vector<ImageEmbedding>();
  size_t width = 0;
  for (size_t i = 0; i < features.size(); ++i) {
    if (features[i].empty())
      return absl::InvalidArgumentError("QueryImages: empty vision features");
    width = std::max(width, qformer_ids[i].size());
  }
  c10::InferenceMode inference;
  try {
    const int64_t batch = static_cast<int64_t>(features.size());
    torch::Tensor ids =
        torch::zeros({batch, static_cast<int64_t>(width)}, torch::kLong);
    torch::Tensor mask = torch::zeros_like(ids);
    std::vector<torch::Tensor> embeds;
    for (int64_t i = 0; i < batch; ++i) {
      const auto& row = qformer_ids[i];
      for (size_t j = 0; j < row.size(); ++j) {
        ids[i][j] = static_cast<int64_t>(row[j]);
        mask[i][j] = 1;
      }
      embeds.push_back(features[i].impl_->image_embeds);
    }
    torch::Tensor soft_prompts =
        impl_->qformer
            .forward({torch::stack(embeds), ids.to(impl_->device),
                      mask.to(impl_->device)})
            .toTensor();
    std::vector<ImageEmbedding> result(features.size());
    for (int64_t i = 0; i < batch; ++i) {
      auto impl = std::make_shared<ImageEmbedding::Impl>();
      impl->soft_prompt = soft_prompts[i].contiguous().clone();
      result[i].impl_ = std::move(impl);
    }
    return result;
  } catch (const std::exception& e) {
    return TorchError("Q-Former failed", e);
  }
}

absl::StatusOr<std::vector<float>> InstructBlipModel::Prefill(
    const ImageEmbedding& image, const std::vector<int32_t>& prompt_ids,
    SequenceState* state) {
  if (image.empty())
    return absl::InvalidArgumentError("Prefill: empty image embedding");
  c10::InferenceMode inference;
  try {
    torch::jit::Module& lm = impl_->language;
    torch::Tensor prompt =
        lm.get_method("embed")({impl_->Ids(prompt_ids)}).toTensor();
    torch::Tensor embeds =
        torch::cat({image.impl_->soft_prompt.unsqueeze(0), prompt}, 1);
    const int64_t length = embeds.size(1);
    SequenceState::Impl& s = *state->impl_;
    torch::Tensor logits;
    if (impl_->family == LmFamily::kLlama) {
      std::tie(logits, s.keys, s.values) = Unpack3(lm.get_method("prefill")(
          {embeds, impl_->Ones(length), impl_->Range(0, length)}));
      s.length = static_cast<int>(length);
    } else {
      s.encoder_mask = impl_->Ones(length);
      torch::Tensor encoded =
          lm.get_method("encode")({embeds, s.encoder_mask}).toTensor();
      // Keep the tuple alive while reading its elements.
      const c10::IValue cross = lm.get_method("cross_kv")({encoded});
      s.cross_keys = cross.toTuple()->elements()[0].toTensor();
      s.cross_values = cross.toTuple()->elements()[1].toTensor();
      torch::Tensor start =
          impl_->Ids({static_cast<int32_t>(impl_->decoder_start_token_id)});
      std::tie(logits, s.keys, s.values) = Unpack3(lm.get_method("decode")(
          {start, impl_->Range(0, 1), impl_->Ones(1), c10::IValue(),
           c10::IValue(), s.cross_keys, s.cross_values, s.encoder_mask}));
      s.length = 1;
    }
    return Impl::ToVector(logits);
  } catch (const std::exception& e) {
    return TorchError("language model prefill failed", e);
  }
}

// ---------------------------------------------------------------------------
// Slot-based batched decoding

absl::StatusOr<std::unique_ptr<KvCachePool>> InstructBlipModel::CreateCachePool(
    int max_slots, uint64_t budget_bytes, int max_decoder_length) {
  auto pool = std::make_unique<KvCachePool::Impl>();
  const bool t5 = impl_->family == LmFamily::kT5;
  pool->max_length = t5 ? max_decoder_length + 1 : impl_->max_context;
  pool->max_encoder = t5 ? impl_->max_context : 0;
  const uint64_t element = impl_->dtype == torch::kBFloat16 ? 2 : 4;
  const uint64_t per_position =
      2ull * impl_->num_layers * impl_->kv_heads * impl_->head_dim * element;
  const uint64_t per_slot =
      per_position * (pool->max_length + pool->max_encoder) +
      sizeof(int64_t) * pool->max_encoder;
  const uint64_t fit = per_slot > 0 ? budget_bytes / per_slot : 0;
  pool->capacity = static_cast<int>(
      std::min<uint64_t>(fit, static_cast<uint64_t>(max_slots)));
  if (pool->capacity < 1) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "scheduler.kv_cache_bytes: ", budget_bytes,
        " bytes do not hold one sequence (", per_slot, " bytes each)"));
  }
  pool->lengths.assign(pool->capacity, 0);
  pool->used.assign(pool->capacity, false);
  pool->encoder_lengths.assign(pool->capacity, 0);
  try {
    const auto options =
        torch::TensorOptions().dtype(impl_->dtype).device(impl_->device);
    // Slot-major: one slot's cache is one contiguous block.
    const std::vector<int64_t> shape = {pool->capacity, impl_->num_layers,
                                        impl_->kv_heads, pool->max_length,
                                        impl_->head_dim};
    pool->keys = torch::zeros(shape, options);
    pool->values = torch::zeros(shape, options);
    if (t5) {
      const std::vector<int64_t> cross = {pool->capacity, impl_->num_layers,
                                          impl_->kv_heads, pool->max_encoder,
                                          impl_->head_dim};
      pool->cross_keys = torch::zeros(cross, options);
      pool->cross_values = torch::zeros(cross, options);
      pool->encoder_mask = torch::zeros(
          {pool->capacity, pool->max_encoder},
          torch::TensorOptions().dtype(torch::kLong).device(impl_->device));
    }
  } catch (const std::exception& e) {
    return TorchError("cannot allocate the KV cache", e);
  }
  return std::unique_ptr<KvCachePool>(new KvCachePool(std::move(pool)));
}

absl::StatusOr<std::vector<float>> InstructBlipModel::PrefillSlot(
    const ImageEmbedding& image, const std::vector<int32_t>& prompt_ids,
    KvCachePool& pool, int slot) {
  KvCachePool::Impl& p = *pool.impl_;
  SequenceState state;
  auto logits = Prefill(image, prompt_ids, &state);
  if (!logits.ok()) return logits.status();
  c10::InferenceMode inference;
  try {
    const SequenceState::Impl& s = *state.impl_;
    const int64_t self_length = s.keys.size(3);
    if (self_length > p.max_length) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt: ", self_length,
                       " positions exceed the cache's ", p.max_length));
    }
    p.keys[slot].narrow(2, 0, self_length).copy_(s.keys.select(1, 0));
    p.values[slot].narrow(2, 0, self_length).copy_(s.values.select(1, 0));
    if (impl_->family == LmFamily::kT5) {
      const int64_t encoder_length = s.cross_keys.size(3);
      if (encoder_length > p.max_encoder) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt: ", encoder_length,
                         " encoder positions exceed ", p.max_encoder));
      }
      p.cross_keys[slot]
          .narrow(2, 0, encoder_length)
          .copy_(s.cross_keys.select(1, 0));
      p.cross_values[slot]
          .narrow(2, 0, encoder_length)
          .copy_(s.cross_values.select(1, 0));
      p.encoder_mask[slot].zero_();
      p.encoder_mask[slot].narrow(0, 0, encoder_length).fill_(1);
      p.encoder_lengths[slot] = static_cast<int>(encoder_length);
    }
    p.lengths[slot] = static_cast<int>(self_length);
  } catch (const std::exception& e) {
    return TorchError("KV cache write failed", e);
  }
  return logits;
}

namespace {

// [L, B, heads, length, D] from the first `length` positions of each slot of
// a slot-major cache: one copy of exactly the data in use.
torch::Tensor Gather(const torch::Tensor& cache, const std::vector<int>& slots,
                     int64_t length) {
  std::vector<torch::Tensor> views;
  views.reserve(slots.size());
  for (int slot : slots) views.push_back(cache[slot].narrow(2, 0, length));
  return torch::stack(views, 1);
}

}  // namespace

absl::StatusOr<std::vector<std::vector<float>>> InstructBlipModel::DecodeBatch(
    KvCachePool& pool, const std::vector<int>& slots,
    const std::vector<int32_t>& tokens) {
  KvCachePool::Impl& p = *pool.impl_;
  const int64_t batch = static_cast<int64_t>(slots.size());
  if (batch == 0 || tokens.size() != slots.size()) {
    return absl::InvalidArgumentError(
        "DecodeBatch: one token per slot is required");
  }
  int64_t past = 0;
  for (int slot : slots) {
    if (p.lengths[slot] == 0)
      return absl::FailedPreconditionError("DecodeBatch: slot not prefilled");
    if (p.lengths[slot] >= p.max_length) {
      return absl::OutOfRangeError(
          "DecodeBatch: a sequence reached the cache's length");
    }
    past = std::max<int64_t>(past, p.lengths[slot]);
  }
  if (impl_->decode_in_cache) return DecodeInCache(pool, slots, tokens);
  c10::InferenceMode inference;
  try {
    const auto long_options = torch::TensorOptions().dtype(torch::kLong);
    torch::Tensor ids = impl_->Ids(tokens).view({batch, 1});
    // Row b holds its own length; positions beyond it up to `past` are padding.
    torch::Tensor mask = torch::zeros({batch, past + 1}, long_options);
    torch::Tensor positions = torch::zeros({batch, past + 1}, long_options);
    auto mask_a = mask.accessor<int64_t, 2>();
    auto positions_a = positions.accessor<int64_t, 2>();
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t length = p.lengths[slots[b]];
      for (int64_t j = 0; j < length; ++j) {
        mask_a[b][j] = 1;
        positions_a[b][j] = j;
      }
      mask_a[b][past] = 1;
      positions_a[b][past] = length;
    }
    mask = mask.to(impl_->device);
    positions = positions.to(impl_->device);
    torch::Tensor past_keys = Gather(p.keys, slots, past);
    torch::Tensor past_values = Gather(p.values, slots, past);
    torch::jit::Module& lm = impl_->language;
    torch::Tensor logits, keys, values;
    if (impl_->family == LmFamily::kLlama) {
      std::tie(logits, keys, values) = Unpack3(lm.get_method("decode")(
          {ids, mask, positions.narrow(1, past, 1).contiguous(), past_keys,
           past_values}));
    } else {
      int64_t encoder = 0;
      std::vector<torch::Tensor> masks;
      for (int slot : slots)
        encoder = std::max<int64_t>(encoder, p.encoder_lengths[slot]);
      for (int slot : slots)
        masks.push_back(p.encoder_mask[slot].narrow(0, 0, encoder));
      std::tie(logits, keys, values) = Unpack3(lm.get_method("decode")(
          {ids, positions, mask, past_keys, past_values,
           Gather(p.cross_keys, slots, encoder),
           Gather(p.cross_values, slots, encoder), torch::stack(masks, 0)}));
    }
    for (int64_t b = 0; b < batch; ++b) {
      const int slot = slots[b];
      const int64_t at = p.lengths[slot];
      p.keys[slot].select(2, at).copy_(keys.select(1, b).select(2, 0));
      p.values[slot].select(2, at).copy_(values.select(1, b).select(2, 0));
      ++p.lengths[slot];
    }
    return Impl::ToRows(logits);
  } catch (const std::exception& e) {
    return TorchError("batched decode failed", e);
  }
}

absl::StatusOr<std::vector<std::vector<float>>>
InstructBlipModel::DecodeInCache(KvCachePool& pool,
                                 const std::vector<int>& slots,
                                 const std::vector<int32_t>& tokens) {
  KvCachePool::Impl& p = *pool.impl_;
  c10::InferenceMode inference;
  try {
    const int64_t batch = static_cast<int64_t>(slots.size());
    c10::List<int64_t> slot_list, length_list;
    for (int slot : slots) {
      slot_list.push_back(slot);
      length_list.push_back(p.lengths[slot]);
    }
    torch::Tensor logits = impl_->language
                               .get_method("decode_in_cache")(
                                   {impl_->Ids(tokens).view({batch, 1}),
                                    slot_list, length_list, p.keys, p.values})
                               .toTensor();
    for (int slot : slots) ++p.lengths[slot];
    return Impl::ToRows(logits);
  } catch (const std::exception& e) {
    return TorchError("batched decode failed", e);
  }
}

absl::Status InstructBlipModel::CopySlots(KvCachePool& pool,
                                          const std::vector<int>& slots,
                                          const std::vector<int>& sources) {
  KvCachePool::Impl& p = *pool.impl_;
  if (slots.size() != sources.size())
    return absl::InvalidArgumentError("CopySlots: size mismatch");
  c10::InferenceMode inference;
  try {
    // Snapshot the sources first: they may also be destinations.
    std::vector<std::vector<torch::Tensor>> snapshot;
    for (int source : sources) {
      std::vector<torch::Tensor> parts = {
          p.keys[source].narrow(2, 0, std::max(1, p.lengths[source])).clone(),
          p.values[source]
              .narrow(2, 0, std::max(1, p.lengths[source]))
              .clone()};
      if (impl_->family == LmFamily::kT5) {
        const int64_t encoder = std::max(1, p.encoder_lengths[source]);
        parts.push_back(p.cross_keys[source].narrow(2, 0, encoder).clone());
        parts.push_back(p.cross_values[source].narrow(2, 0, encoder).clone());
        parts.push_back(p.encoder_mask[source].clone());
      }
      snapshot.push_back(std::move(parts));
    }
    std::vector<int> lengths, encoder_lengths;
    for (int source : sources) {
      lengths.push_back(p.lengths[source]);
      encoder_lengths.push_back(p.encoder_lengths[source]);
    }
    for (size_t i = 0; i < slots.size(); ++i) {
      const int slot = slots[i];
      const auto& parts = snapshot[i];
      p.keys[slot].narrow(2, 0, parts[0].size(2)).copy_(parts[0]);
      p.values[slot].narrow(2, 0, parts[1].size(2)).copy_(parts[1]);
      if (impl_->family == LmFamily::kT5) {
        p.cross_keys[slot].narrow(2, 0, parts[2].size(2)).copy_(parts[2]);
        p.cross_values[slot].narrow(2, 0, parts[3].size(2)).copy_(parts[3]);
        p.encoder_mask[slot].copy_(parts[4]);
      }
      p.lengths[slot] = lengths[i];
      p.encoder_lengths[slot] = encoder_lengths[i];
    }
  } catch (const std::exception& e) {
    return TorchError("KV cache copy failed", e);
  }
  return absl::OkStatus();
}

}  // namespace iblip::model
