#include "model/runtime/instructblip_model.h"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <limits>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/device.h"
#include "model/runtime/linear_op.h"
#include "model/runtime/paged_attention_op.h"

namespace iblip::model {

namespace {

uint64_t TensorBytes(const torch::Tensor& t) {
  return t.defined() ? static_cast<uint64_t>(t.numel()) * t.element_size() : 0;
}

// A tensor behind the torch-free handles of model_tensors.h.
class TorchTensor final : public TensorHandle {
 public:
  explicit TorchTensor(torch::Tensor tensor) : tensor_(std::move(tensor)) {}
  uint64_t bytes() const override { return TensorBytes(tensor_); }
  int rows() const override {
    return tensor_.defined() ? static_cast<int>(tensor_.size(0)) : 0;
  }
  const torch::Tensor& tensor() const { return tensor_; }

 private:
  torch::Tensor tensor_;
};

template <typename Shared>
Shared Wrap(torch::Tensor tensor) {
  return Shared(std::make_shared<const TorchTensor>(std::move(tensor)));
}

template <typename Shared>
const torch::Tensor& Unwrap(const Shared& shared) {
  return static_cast<const TorchTensor*>(shared.handle())->tensor();
}

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

// Logits [B,V] on any device -> one float vector per row.
std::vector<std::vector<float>> ToRows(const torch::Tensor& logits) {
  torch::Tensor cpu = logits.to(torch::kCPU, torch::kFloat).contiguous();
  std::vector<std::vector<float>> rows(cpu.size(0));
  const int64_t vocab = cpu.size(1);
  for (size_t b = 0; b < rows.size(); ++b) {
    const float* data = cpu.data_ptr<float>() + b * vocab;
    rows[b].assign(data, data + vocab);
  }
  return rows;
}

}  // namespace

struct VisionState::Impl {
  torch::Tensor hidden;  // [B, 1+P, Hv] in the model's dtype
};
VisionState::VisionState(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VisionState::~VisionState() = default;

struct InstructBlipModel::Impl {
  std::string device_name;
  torch::Device device{torch::kCPU};
  bool candidates_on_cpu = false;  // RuntimeOptions::candidates_on_cpu
  LmFamily family = LmFamily::kLlama;
  int64_t decoder_start_token_id = 0;
  int num_layers = 0, kv_heads = 0, head_dim = 0, max_context = 0;
  int vision_layers = 0;
  torch::ScalarType dtype = torch::kFloat;  // the KV cache's
  int threads = 1;  // torch intra-op threads, set on every calling thread
  torch::jit::Module vision;   // forward / embed, run_layers, finish
  torch::jit::Module qformer;  // forward(image_embeds, ids, mask)
  torch::jit::Module language;  // see model/PACKAGE.md

  // The paged KV cache, [L, blocks, block_size, KV, D] keys and values.
  torch::Tensor keys, values;
  int block_size = 0;

  // Host tensors that feed the device: pinned on a GPU, so their copies
  // are DMA from memory that cannot be paged out, and may overlap the
  // host's work (non_blocking; the caching host allocator keeps a block
  // until its copy is done).
  torch::TensorOptions Long() const {
    return torch::TensorOptions()
        .dtype(torch::kLong)
        .pinned_memory(device.is_cuda());
  }
  torch::Tensor ToDevice(const torch::Tensor& host) const {
    return host.to(device, /*non_blocking=*/true);
  }
  torch::Tensor ToHost(const torch::Tensor& on_device,
                       bool non_blocking = false) const {
    torch::Tensor host =
        torch::empty(on_device.sizes(), on_device.options()
                                            .device(torch::kCPU)
                                            .pinned_memory(device.is_cuda()));
    return host.copy_(on_device, non_blocking);
  }
  // Decode's logits [B, V] on the device -> the rows' host vectors, each
  // whole or as its candidates (PagedDecodeRow::candidates).
  std::vector<std::vector<float>> RowsToHost(
      const torch::Tensor& device_logits,
      const std::vector<PagedDecodeRow>& rows) const;
  torch::Tensor Ids(const std::vector<int32_t>& ids) const {
    return torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()),
                         torch::kLong)
        .unsqueeze(0)
        .to(device);
  }
  // Global slots (block * block_size + offset) of positions [from, to).
  torch::Tensor Slots(const std::vector<int>& blocks, int from, int to) const {
    torch::Tensor slots = torch::empty({to - from}, Long());
    int64_t* data = slots.data_ptr<int64_t>();
    for (int p = from; p < to; ++p) {
      data[p - from] =
          int64_t{blocks[p / block_size]} * block_size + p % block_size;
    }
    return ToDevice(slots);
  }
  // Block tables of several rows, padded with block 0 (never read: the
  // context lengths stop before it).
  torch::Tensor Tables(const std::vector<const std::vector<int>*>& tables) const {
    size_t width = 1;
    for (const auto* t : tables) width = std::max(width, t->size());
    torch::Tensor out = torch::zeros(
        {static_cast<int64_t>(tables.size()), static_cast<int64_t>(width)},
        Long());
    auto a = out.accessor<int64_t, 2>();
    for (size_t r = 0; r < tables.size(); ++r) {
      for (size_t i = 0; i < tables[r]->size(); ++i) a[r][i] = (*tables[r])[i];
    }
    return ToDevice(out);
  }
  // [1, end-start, H]: the model input of positions [start, end).
  torch::Tensor PrefillEmbeds(const PagedPrefill& chunk) {
    const torch::Tensor& soft = Unwrap(*chunk.image);
    const int q = static_cast<int>(soft.size(0));
    std::vector<torch::Tensor> parts;
    if (chunk.start < q) {
      parts.push_back(
          soft.narrow(0, chunk.start, std::min(chunk.end, q) - chunk.start)
              .unsqueeze(0));
    }
    if (chunk.end > q) {
      const int from = std::max(chunk.start, q) - q, to = chunk.end - q;
      std::vector<int32_t> ids(chunk.tokens->begin() + from,
                               chunk.tokens->begin() + to);
      parts.push_back(language.get_method("embed")({Ids(ids)}).toTensor());
    }
    return parts.size() == 1 ? parts[0] : torch::cat(parts, 1);
  }
};

std::vector<std::vector<float>> InstructBlipModel::Impl::RowsToHost(
    const torch::Tensor& device_logits,
    const std::vector<PagedDecodeRow>& rows) const {
  const torch::Tensor logits = device_logits.to(torch::kFloat);
  const int64_t vocab = logits.size(1);
  std::vector<std::vector<float>> result(rows.size());
  std::vector<int64_t> sparse;  // rows sent as their best candidates
  int64_t width = 0;            // candidates taken per sparse row
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].candidates > 0 && rows[r].candidates < vocab) {
      sparse.push_back(static_cast<int64_t>(r));
      // One more than needed: a tie across the boundary shows.
      width = std::max<int64_t>(width, rows[r].candidates + 1);
    }
  }
  const auto index = [this](const std::vector<int64_t>& chosen) {
    torch::Tensor host =
        torch::empty({static_cast<int64_t>(chosen.size())}, Long());
    std::copy(chosen.begin(), chosen.end(), host.data_ptr<int64_t>());
    return ToDevice(host);
  };
  std::vector<int64_t> whole;  // rows sent in full
  if (!sparse.empty()) {
    auto [best, best_ids] = logits.index_select(0, index(sparse))
                                .topk(width, /*dim=*/1, /*largest=*/true,
                                      /*sorted=*/true);
    // One wait for both: the second copy is ordered after the first.
    const torch::Tensor values = ToHost(best, /*non_blocking=*/true);
    const torch::Tensor ids = ToHost(best_ids);
    const auto v = values.accessor<float, 2>();
    const auto id = ids.accessor<int64_t, 2>();
    for (size_t i = 0; i < sparse.size(); ++i) {
      const int64_t r = sparse[i];
      const int n = rows[r].candidates;
      if (v[i][n - 1] == v[i][n]) {
        whole.push_back(r);
        continue;
      }
      std::vector<float>& row = result[r];
      row.assign(vocab, -std::numeric_limits<float>::infinity());
      for (int j = 0; j < n; ++j) row[id[i][j]] = v[i][j];
    }
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].candidates <= 0 || rows[r].candidates >= vocab)
      whole.push_back(static_cast<int64_t>(r));
  }
  if (!whole.empty()) {
    std::sort(whole.begin(), whole.end());
    const torch::Tensor host =
        ToHost(whole.size() == rows.size()
                   ? logits
                   : logits.index_select(0, index(whole)))
            .contiguous();
    for (size_t i = 0; i < whole.size(); ++i) {
      const float* data = host.data_ptr<float>() + i * vocab;
      result[whole[i]].assign(data, data + vocab);
    }
  }
  return result;
}

InstructBlipModel::InstructBlipModel(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}
InstructBlipModel::~InstructBlipModel() = default;

void InstructBlipModel::BindCallingThread() const {
  // OpenMP's thread count is per thread: one set on the loading thread did
  // not reach the engine thread, whose decode steps then ran at about one
  // core's speed (medium model, bf16: 27 ms a step instead of 18).
  at::set_num_threads(impl_->threads);
}

const std::string& InstructBlipModel::device() const {
  return impl_->device_name;
}
int InstructBlipModel::vision_num_layers() const {
  return impl_->vision_layers;
}
bool InstructBlipModel::encoder_decoder() const {
  return impl_->family == LmFamily::kT5;
}
uint64_t InstructBlipModel::kv_bytes_per_position() const {
  const uint64_t element = impl_->dtype == torch::kBFloat16 ? 2 : 4;
  return 2ull * impl_->num_layers * impl_->kv_heads * impl_->head_dim * element;
}

absl::StatusOr<std::unique_ptr<InstructBlipModel>> InstructBlipModel::Load(
    const PackageManifest& manifest, const RuntimeOptions& options) {
  RegisterPagedAttention();
  RegisterLinear();
  // The legacy graph executor: the default profiling one ran the frozen
  // vision encoder 2-3x slower here (medium model, bf16: 284-380 ms per
  // image against 109-125 ms), re-profiling as batch shapes change.
  torch::jit::getExecutorMode() = false;
  auto impl = std::make_unique<Impl>();
  absl::StatusOr<DeviceSpec> device = ParseDevice(options.device);
  if (!device.ok()) return device.status();
  if (device->cuda) {
    // A CPU-only LibTorch (Debian's) answers 0 here too.
    const int gpus = static_cast<int>(torch::cuda::device_count());
    if (gpus == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "runtime.device is ", device->ToString(),
          ", but this server's LibTorch ",
          torch::cuda::is_available() ? "sees no GPU"
                                      : "has no CUDA or sees no GPU",
          " (a CPU-only build, no GPU in the container, or "
          "CUDA_VISIBLE_DEVICES empty): build against a CUDA LibTorch "
          "(README, 'GPU serving') or set runtime.device: cpu"));
    }
    if (device->index >= gpus) {
      return absl::FailedPreconditionError(absl::StrCat(
          "runtime.device is ", device->ToString(), ", but only ", gpus,
          " GPU(s) are visible (cuda:0 to cuda:", gpus - 1, ")"));
    }
  }
  impl->device = torch::Device(device->ToString());
  impl->device_name = device->ToString();
  impl->candidates_on_cpu = options.candidates_on_cpu;
  impl->family = manifest.lm_family;
  impl->decoder_start_token_id = manifest.decoder_start_token_id;
  impl->num_layers = manifest.lm_num_layers;
  impl->kv_heads = manifest.lm_kv_heads;
  impl->head_dim = manifest.lm_head_dim;
  impl->max_context = manifest.max_context_tokens;
  impl->vision_layers = manifest.vision_num_layers;
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
          ? std::vector<std::string>{"embed", "prefill_paged", "decode_paged"}
          : std::vector<std::string>{"embed", "prefill_paged", "decode_paged"};
  for (const std::string& method : methods) {
    if (!impl->language.find_method(method)) {
      return absl::FailedPreconditionError(absl::StrCat(
          manifest.language_module_path, " has no '", method,
          "' method (a package from an older model/export: export it again)"));
    }
  }
  for (const std::string method : {"embed", "run_layers", "finish"}) {
    if (!impl->vision.find_method(method)) {
      return absl::FailedPreconditionError(absl::StrCat(
          manifest.vision_module_path, " has no '", method,
          "' method (a package from an older model/export: export it again)"));
    }
  }
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
            .forward({Unwrap(features->front()).unsqueeze(0),
                      impl_->Ids(qformer_ids), impl_->Ids(qformer_mask)})
            .toTensor();
    return Wrap<ImageEmbedding>(soft_prompt.squeeze(0).contiguous());
  } catch (const std::exception& e) {
    return TorchError("Q-Former failed", e);
  }
}

absl::StatusOr<std::vector<VisionFeatures>> InstructBlipModel::EncodeVision(
    const std::vector<const PixelValues*>& images) {
  if (images.empty()) return std::vector<VisionFeatures>();
  auto state = BeginVision(images);
  if (!state.ok()) return state.status();
  if (absl::Status run = RunVisionLayers(**state, 0, impl_->vision_layers);
      !run.ok()) {
    return run;
  }
  return FinishVision(**state);
}

absl::StatusOr<std::unique_ptr<VisionState>> InstructBlipModel::BeginVision(
    const std::vector<const PixelValues*>& images) {
  c10::InferenceMode inference;
  try {
    std::vector<torch::Tensor> rows;
    for (const PixelValues* pixels : images) {
      rows.push_back(torch::from_blob(const_cast<float*>(pixels->chw.data()),
                                      {3, pixels->size, pixels->size},
                                      torch::kFloat));
    }
    auto impl = std::make_unique<VisionState::Impl>();
    impl->hidden = impl_->vision
                       .get_method("embed")(
                           {torch::stack(rows).to(impl_->device)})
                       .toTensor();
    return std::unique_ptr<VisionState>(new VisionState(std::move(impl)));
  } catch (const std::exception& e) {
    return TorchError("vision encoder failed", e);
  }
}

absl::Status InstructBlipModel::RunVisionLayers(VisionState& state, int begin,
                                                int end) {
  c10::InferenceMode inference;
  try {
    state.impl_->hidden =
        impl_->vision
            .get_method("run_layers")(
                {state.impl_->hidden, int64_t{begin}, int64_t{end}})
            .toTensor();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return TorchError("vision encoder failed", e);
  }
}

absl::StatusOr<std::vector<VisionFeatures>> InstructBlipModel::FinishVision(
    VisionState& state) {
  c10::InferenceMode inference;
  try {
    torch::Tensor embeds = impl_->vision.get_method("finish")(
                                           {state.impl_->hidden})
                               .toTensor();
    state.impl_->hidden = torch::Tensor();
    std::vector<VisionFeatures> result;
    for (int64_t i = 0; i < embeds.size(0); ++i) {
      result.push_back(
          Wrap<VisionFeatures>(embeds[i].clone()));  // not the batch's memory
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
    auto ids_a = ids.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    std::vector<torch::Tensor> embeds;
    for (int64_t i = 0; i < batch; ++i) {
      const auto& row = qformer_ids[i];
      for (size_t j = 0; j < row.size(); ++j) {
        ids_a[i][j] = static_cast<int64_t>(row[j]);
        mask_a[i][j] = 1;
      }
      embeds.push_back(Unwrap(features[i]));
    }
    torch::Tensor soft_prompts =
        impl_->qformer
            .forward({torch::stack(embeds), ids.to(impl_->device),
                      mask.to(impl_->device)})
            .toTensor();
    std::vector<ImageEmbedding> result;
    for (int64_t i = 0; i < batch; ++i) {
      result.push_back(Wrap<ImageEmbedding>(soft_prompts[i].contiguous().clone()));
    }
    return result;
  } catch (const std::exception& e) {
    return TorchError("Q-Former failed", e);
  }
}

// ---------------------------------------------------------------------------
// The paged KV cache

absl::Status InstructBlipModel::AllocateKvCache(int num_blocks,
                                                int block_size) {
  if (num_blocks < 1 || block_size < 1)
    return absl::InvalidArgumentError("AllocateKvCache: empty pool");
  try {
    const auto options =
        torch::TensorOptions().dtype(impl_->dtype).device(impl_->device);
    const std::vector<int64_t> shape = {impl_->num_layers, num_blocks,
                                        block_size, impl_->kv_heads,
                                        impl_->head_dim};
    impl_->keys = torch::zeros(shape, options);
    impl_->values = torch::zeros(shape, options);
    impl_->block_size = block_size;
  } catch (const std::exception& e) {
    return TorchError("cannot allocate the KV cache", e);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> InstructBlipModel::Prefill(
    const PagedPrefill& chunk) {
  if (!impl_->keys.defined())
    return absl::FailedPreconditionError("Prefill: no KV cache allocated");
  if (chunk.image == nullptr || chunk.image->empty())
    return absl::InvalidArgumentError("Prefill: empty image embedding");
  if (chunk.end <= chunk.start)
    return absl::InvalidArgumentError("Prefill: empty chunk");
  c10::InferenceMode inference;
  try {
    torch::jit::Module& lm = impl_->language;
    torch::Tensor logits;
    if (impl_->family == LmFamily::kLlama) {
      logits = lm.get_method("prefill_paged")(
                     {impl_->PrefillEmbeds(chunk), int64_t{chunk.start},
                      impl_->Slots(*chunk.blocks, 0, chunk.end), impl_->keys,
                      impl_->values})
                   .toTensor();
      return ToRows(logits)[0];
    }
    int next = chunk.start;
    if (next == 0) {
      const int encoder = Unwrap(*chunk.image).size(0) +
                          static_cast<int>(chunk.tokens->size());
      PagedPrefill all = chunk;
      all.start = 0;
      all.end = encoder;
      logits = lm.get_method("prefill_paged")(
                     {impl_->PrefillEmbeds(all),
                      impl_->Slots(*chunk.cross_blocks, 0, encoder),
                      int64_t{(*chunk.blocks)[0]} * impl_->block_size,
                      impl_->decoder_start_token_id, impl_->keys,
                      impl_->values})
                   .toTensor();
      next = 1;
    }
    // Recomputing after preemption: the decoder's later positions, one step
    // each (T5's decoder has no multi-position prefill).
    if (next < chunk.end) {
      const int encoder = Unwrap(*chunk.image).size(0) +
                          static_cast<int>(chunk.tokens->size());
      for (int p = next; p < chunk.end; ++p) {
        PagedDecodeRow row;
        row.token = (*chunk.decoder_tokens)[p - 1];
        row.position = p;
        row.blocks = chunk.blocks;
        row.cross_blocks = chunk.cross_blocks;
        row.cross_length = encoder;
        auto rows = Decode({row});
        if (!rows.ok()) return rows.status();
        if (p + 1 == chunk.end) return std::move((*rows)[0]);
      }
    }
    return ToRows(logits)[0];
  } catch (const std::exception& e) {
    return TorchError("language model prefill failed", e);
  }
}

absl::StatusOr<std::vector<std::vector<float>>> InstructBlipModel::Decode(
    const std::vector<PagedDecodeRow>& rows) {
  if (rows.empty()) return absl::InvalidArgumentError("Decode: no rows");
  if (!impl_->keys.defined())
    return absl::FailedPreconditionError("Decode: no KV cache allocated");
  c10::InferenceMode inference;
  try {
    const int64_t batch = static_cast<int64_t>(rows.size());
    torch::Tensor ids = torch::empty({batch, 1}, impl_->Long());
    torch::Tensor positions = torch::empty({batch}, impl_->Long());
    torch::Tensor slots = torch::empty({batch}, impl_->Long());
    std::vector<const std::vector<int>*> tables, cross_tables;
    torch::Tensor cross_lens = torch::empty({batch}, impl_->Long());
    for (int64_t b = 0; b < batch; ++b) {
      const PagedDecodeRow& row = rows[b];
      ids[b][0] = int64_t{row.token};
      positions[b] = int64_t{row.position};
      slots[b] = int64_t{(*row.blocks)[row.position / impl_->block_size]} *
                     impl_->block_size +
                 row.position % impl_->block_size;
      tables.push_back(row.blocks);
      if (row.cross_blocks) cross_tables.push_back(row.cross_blocks);
      cross_lens[b] = int64_t{row.cross_length};
    }
    std::vector<c10::IValue> inputs = {
        impl_->ToDevice(ids), impl_->ToDevice(positions),
        impl_->ToDevice(slots), impl_->Tables(tables)};
    if (impl_->family == LmFamily::kT5) {
      inputs.push_back(impl_->Tables(cross_tables));
      inputs.push_back(impl_->ToDevice(cross_lens));
    }
    inputs.push_back(impl_->keys);
    inputs.push_back(impl_->values);
    torch::Tensor logits =
        impl_->language.get_method("decode_paged")(inputs).toTensor();
    // On the CPU the logits are in host memory already: every row whole,
    // exactly as before the device path existed.
    if (impl_->device.is_cpu() && !impl_->candidates_on_cpu)
      return ToRows(logits);
    return impl_->RowsToHost(logits, rows);
  } catch (const std::exception& e) {
    return TorchError("batched decode failed", e);
  }
}

absl::Status InstructBlipModel::CopyBlocks(
    const std::vector<std::pair<int, int>>& copies) {
  c10::InferenceMode inference;
  try {
    for (const auto& [from, to] : copies) {
      impl_->keys.select(1, to).copy_(impl_->keys.select(1, from));
      impl_->values.select(1, to).copy_(impl_->values.select(1, from));
    }
  } catch (const std::exception& e) {
    return TorchError("KV cache copy failed", e);
  }
  return absl::OkStatus();
}

}  // namespace iblip::model
