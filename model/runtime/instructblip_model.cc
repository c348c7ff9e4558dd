#include "model/runtime/instructblip_model.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace iblip::model {

struct ImageEmbedding::Impl {
  torch::Tensor soft_prompt;  // [Q, H] float32
};

int ImageEmbedding::num_positions() const {
  return impl_ ? static_cast<int>(impl_->soft_prompt.size(0)) : 0;
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

struct InstructBlipModel::Impl {
  std::string device_name;
  torch::Device device{torch::kCPU};
  LmFamily family = LmFamily::kLlama;
  int64_t decoder_start_token_id = 0;
  torch::jit::Module vision;  // forward(pixels) -> image_embeds
  torch::jit::Module
      qformer;  // forward(image_embeds, ids, mask) -> soft prompt
  torch::jit::Module language;  // see model/PACKAGE.md

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
  // Torch picks 1 thread on some VMs (libcpuinfo counts cores wrongly), so the
  // thread count is always set explicitly, once, here.
  const int threads =
      options.num_threads > 0
          ? options.num_threads
          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
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
  c10::InferenceMode inference;
  try {
    torch::Tensor image =
        torch::from_blob(const_cast<float*>(pixels.chw.data()),
                         {1, 3, pixels.size, pixels.size}, torch::kFloat)
            .to(impl_->device);
    torch::Tensor image_embeds = impl_->vision.forward({image}).toTensor();
    torch::Tensor ids = impl_->Ids(qformer_ids);
    torch::Tensor mask =
        qformer_mask.empty() ? torch::ones_like(ids) : impl_->Ids(qformer_mask);
    torch::Tensor soft_prompt =
        impl_->qformer.forward({image_embeds, ids, mask}).toTensor();
    auto impl = std::make_shared<ImageEmbedding::Impl>();
    impl->soft_prompt = soft_prompt.squeeze(0).contiguous();
    ImageEmbedding embedding;
    embedding.impl_ = std::move(impl);
    return embedding;
  } catch (const std::exception& e) {
    return TorchError("vision encoder failed", e);
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

absl::StatusOr<std::vector<float>> InstructBlipModel::Decode(
    int32_t token, SequenceState* state) {
  SequenceState::Impl& s = *state->impl_;
  if (s.length == 0)
    return absl::FailedPreconditionError("Decode before Prefill");
  c10::InferenceMode inference;
  try {
    torch::jit::Module& lm = impl_->language;
    torch::Tensor ids = impl_->Ids({token});
    torch::Tensor logits, keys, values;
    if (impl_->family == LmFamily::kLlama) {
      std::tie(logits, keys, values) = Unpack3(lm.get_method("decode")(
          {ids, impl_->Ones(s.length + 1), impl_->Range(s.length, s.length + 1),
           s.keys, s.values}));
    } else {
      std::tie(logits, keys, values) = Unpack3(lm.get_method("decode")(
          {ids, impl_->Range(0, s.length + 1), impl_->Ones(s.length + 1),
           s.keys, s.values, s.cross_keys, s.cross_values, s.encoder_mask}));
    }
    // New tensors, never in place: copies of this state keep their prefix.
    s.keys = torch::cat({s.keys, keys}, 3);
    s.values = torch::cat({s.values, values}, 3);
    ++s.length;
    return Impl::ToVector(logits);
  } catch (const std::exception& e) {
    return TorchError("language model decode failed", e);
  }
}

}  // namespace iblip::model
