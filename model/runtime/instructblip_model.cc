#include "model/runtime/instructblip_model.h"

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace iblip::model {

struct ImageEmbedding::Impl {
  torch::Tensor soft_prompt;  // [Q, H]
};

int ImageEmbedding::num_positions() const {
  return impl_ ? static_cast<int>(impl_->soft_prompt.size(0)) : 0;
}

struct InstructBlipModel::Impl {
  std::string device_name;
  torch::Device device{torch::kCPU};
  torch::jit::Module
      vision;  // forward(pixels, qformer_ids, qformer_mask) -> [B,Q,H]
  torch::jit::Module
      language_model;  // next_token_logits(soft_prompt, ids) -> [B,V]
};

namespace {

absl::Status TorchError(absl::string_view what, const std::exception& e) {
  // Torch messages carry a C++ backtrace after the first line; keep the first.
  std::string message = e.what();
  if (auto newline = message.find('\n'); newline != std::string::npos)
    message.resize(newline);
  return absl::InternalError(absl::StrCat(what, ": ", message));
}

torch::Tensor ToLongTensor(const std::vector<int32_t>& ids) {
  std::vector<int64_t> wide(ids.begin(), ids.end());
  return torch::tensor(wide, torch::kLong).unsqueeze(0);
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
  // Torch picks 1 thread on some VMs (libcpuinfo counts cores wrongly), so the
  // thread count is always set explicitly, once, here.
  const int threads =
      options.num_threads > 0
          ? options.num_threads
          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  try {
    impl->vision = torch::jit::load(manifest.vision_module_path, impl->device);
    impl->vision.eval();
    impl->language_model =
        torch::jit::load(manifest.language_module_path, impl->device);
    impl->language_model.eval();
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load the model's TorchScript modules from ", manifest.directory,
        ": ",
        std::string(e.what()).substr(0, std::string(e.what()).find('\n'))));
  }
  if (!impl->language_model.find_method("next_token_logits")) {
    return absl::FailedPreconditionError(absl::StrCat(
        manifest.language_module_path, " has no next_token_logits method"));
  }
  return std::unique_ptr<InstructBlipModel>(
      new InstructBlipModel(std::move(impl)));
}

absl::StatusOr<ImageEmbedding> InstructBlipModel::EncodeImage(
    const PixelValues& pixels, const std::vector<int32_t>& qformer_ids) {
  c10::InferenceMode inference;
  try {
    torch::Tensor image =
        torch::from_blob(const_cast<float*>(pixels.chw.data()),
                         {1, 3, pixels.size, pixels.size}, torch::kFloat)
            .to(impl_->device);
    torch::Tensor ids = ToLongTensor(qformer_ids).to(impl_->device);
    torch::Tensor mask = torch::ones_like(ids);
    torch::Tensor soft_prompt =
        impl_->vision.forward({image, ids, mask}).toTensor();
    auto impl = std::make_shared<ImageEmbedding::Impl>();
    impl->soft_prompt = soft_prompt.squeeze(0).contiguous();
    ImageEmbedding embedding;
    embedding.impl_ = std::move(impl);
    return embedding;
  } catch (const std::exception& e) {
    return TorchError("vision encoder failed", e);
  }
}

absl::StatusOr<std::vector<float>> InstructBlipModel::NextTokenLogits(
    const ImageEmbedding& image, const std::vector<int32_t>& ids) {
  if (image.empty())
    return absl::InvalidArgumentError("NextTokenLogits: empty image embedding");
  c10::InferenceMode inference;
  try {
    torch::Tensor soft_prompt = image.impl_->soft_prompt.unsqueeze(0);
    torch::Tensor input = ToLongTensor(ids).to(impl_->device);
    torch::Tensor logits =
        impl_->language_model
            .get_method("next_token_logits")({soft_prompt, input})
            .toTensor()
            .squeeze(0)
            .to(torch::kCPU, torch::kFloat)
            .contiguous();
    const float* data = logits.data_ptr<float>();
    return std::vector<float>(data, data + logits.numel());
  } catch (const std::exception& e) {
    return TorchError("language model failed", e);
  }
}

}  // namespace iblip::model
