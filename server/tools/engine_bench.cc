// iblip-engine-bench: the engine in-process on a model package.
//
//   iblip-engine-bench --model PACKAGE_DIR
//       [--concurrency 1,4,8,16,32] [--requests-per-level N] [--threads N]
//       [--images A.jpg,B.jpg,...] [--prompt TEXT] [--heap-retain-mib N]
//
// Workload: synthetic images, prompts of 6-20 tokens, output lengths spread
// evenly over [--min-tokens, --max-tokens] (min_new_tokens = max_new_tokens,
// so every request produces exactly its length). The eager PyTorch baseline
// (model/python/iblip_model/eager_bench.py) runs in bench/run on the same
// JPEGs and prompts as the server. With --images (request i
// decodes and preprocesses image i mod n on the submitting thread, as the
// server's handlers do) and --prompt, the load is the one bench/run sends
// through gRPC, so the two differ only by gRPC and the server's scheduling.
// Prints a table.

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/command_line.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/instructblip_model.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/package.h"
#include "model/runtime/wordpiece_tokenizer.h"
#include "server/engine/engine.h"
#include "server/engine/torch_model_runner.h"
#include "server/heap_policy.h"
#include "spdlog/spdlog.h"

namespace iblip::server {
namespace {

struct Workload {
  std::vector<std::string> prompts;
  std::vector<int> lengths;
  std::vector<std::string> images;  // encoded files; empty: synthetic pixels
};

Workload MakeWorkload(int count, int min_tokens, int max_tokens,
                      const std::vector<std::string>& images = {},
                      const std::string& fixed_prompt = "") {
  const char* words[] = {"what",    "is",   "the",   "color", "of",
                         "shape",   "in",   "this",  "image", "describe",
                         "picture", "left", "right", "how",   "many",
                         "are",     "there"};
  std::mt19937 rng(17);
  Workload w;
  w.images = images;
  for (int i = 0; i < count; ++i) {
    std::string prompt;
    const int n = 6 + static_cast<int>(rng() % 15);
    for (int j = 0; j < n; ++j)
      prompt += std::string(j ? " " : "") + words[rng() % 17];
    w.prompts.push_back(fixed_prompt.empty() ? prompt + "?" : fixed_prompt);
    w.lengths.push_back(count == 1 ? max_tokens
                                   : min_tokens + (max_tokens - min_tokens) *
                                                      i / (count - 1));
  }
  return w;
}

class TimingSink final : public TokenSink {
 public:
  void OnTokens(TokenDelta delta) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (tokens_ == 0) first_ = absl::Now();
    tokens_ += static_cast<int>(delta.token_ids.size());
  }
  void OnComplete(const absl::Status& status, const UsageStats&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return done_; });
  }
  absl::Time first() const { return first_; }
  int tokens() const { return tokens_; }
  const absl::Status& status() const { return status_; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  absl::Time first_;
  int tokens_ = 0;
  bool done_ = false;
  absl::Status status_;
};

struct LevelResult {
  int concurrency = 0;
  int requests = 0;
  double wall_s = 0;
  int tokens = 0;
  double median_ttft_ms = 0;
  double decode_tok_s = 0;  // tokens of batched decode steps / their time
  double mean_batch = 0;    // rows per decode step
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Closed loop: `concurrency` requests in flight until `count` are done.
LevelResult RunLevel(Engine& engine, const model::PackageManifest& manifest,
                     const model::LmTokenizer& lm,
                     const model::WordPieceTokenizer& qformer, int concurrency,
                     const Workload& work) {
  const model::ImagePreprocessor preprocessor(manifest.image, {});
  LevelResult result;
  result.concurrency = concurrency;
  result.requests = static_cast<int>(work.prompts.size());
  std::vector<std::shared_ptr<TimingSink>> sinks(work.prompts.size());
  std::vector<absl::Time> starts(work.prompts.size());
  size_t next = 0, done = 0;
  const absl::Time begin = absl::Now();
  auto submit = [&](size_t i) {
    auto request = std::make_shared<GenerationRequest>();
    request->arrival = starts[i] = absl::Now();
    if (work.images.empty()) {
      request->pixels.size = manifest.image.size;
      request->pixels.chw.assign(
          3ull * manifest.image.size * manifest.image.size, 0.01f * (i % 50));
    } else {
      auto pixels =
          preprocessor.Process(work.images[i % work.images.size()], "--images");
      if (!pixels.ok()) std::abort();
      request->pixels = *std::move(pixels);
    }
    request->prompt_ids = lm.EncodePrompt(work.prompts[i]);
    request->qformer_ids = qformer.Encode(work.prompts[i]);
    request->settings.max_new_tokens = work.lengths[i];
    request->settings.sampling.min_new_tokens = work.lengths[i];
    sinks[i] = std::make_shared<TimingSink>();
    request->sink = sinks[i];
    if (!engine.Admit().ok()) std::abort();
    engine.Submit(std::move(request));
  };
  std::vector<size_t> in_flight;
  while (next < sinks.size() &&
         static_cast<int>(in_flight.size()) < concurrency) {
    in_flight.push_back(next);
    submit(next++);
  }
  std::vector<double> ttft;
  const Engine::DecodeStats before = engine.decode_stats();
  while (done < sinks.size()) {
    // Wait for the oldest in flight (closed loop; requests are similar).
    const size_t i = in_flight.front();
    in_flight.erase(in_flight.begin());
    sinks[i]->Wait();
    if (!sinks[i]->status().ok()) {
      std::cerr << "request failed: " << sinks[i]->status() << "\n";
      std::exit(1);
    }
    ++done;
    result.tokens += sinks[i]->tokens();
    ttft.push_back(absl::ToDoubleMilliseconds(sinks[i]->first() - starts[i]));
    if (next < sinks.size()) {
      in_flight.push_back(next);
      submit(next++);
    }
  }
  result.wall_s = absl::ToDoubleSeconds(absl::Now() - begin);
  result.median_ttft_ms = Median(ttft);
  const Engine::DecodeStats after = engine.decode_stats();
  result.decode_tok_s =
      (after.tokens - before.tokens) / (after.seconds - before.seconds);
  result.mean_batch = static_cast<double>(after.tokens - before.tokens) /
                      (after.steps - before.steps);
  return result;
}

int Main(int argc, char** argv) {
  // One access-log line per request would bury the table.
  spdlog::set_level(spdlog::level::warn);
  auto parsed = CommandLine::Parse(argc, argv, {});
  if (!parsed.ok() || !parsed->Get("model")) {
    std::cerr
        << "usage: iblip-engine-bench --model PACKAGE_DIR "
           "[--concurrency 1,4,8,16,32] [--requests-per-level N] [--threads N] "
           "[--min-tokens 32] [--max-tokens 128] [--images A.jpg,B.jpg] "
           "[--prompt TEXT]\n";
    return 2;
  }
  const CommandLine& line = *parsed;
  auto number = [&](const char* flag, int fallback) {
    int value = fallback;
    if (auto text = line.Get(flag)) (void)absl::SimpleAtoi(*text, &value);
    return value;
  };
  std::vector<int> levels;
  for (absl::string_view part :
       absl::StrSplit(line.Get("concurrency").value_or("1,4,8,16,32"), ',')) {
    int level;
    if (absl::SimpleAtoi(part, &level) && level > 0) levels.push_back(level);
  }
  const int threads = number("threads", 0);
  const int min_tokens = number("min-tokens", 32),
            max_tokens = number("max-tokens", 128);

  std::vector<std::string> images;
  if (auto list = line.Get("images")) {
    for (absl::string_view path : absl::StrSplit(*list, ',')) {
      std::ifstream file{std::string(path), std::ios::binary};
      if (!file) return std::cerr << "cannot read " << path << "\n", 1;
      images.emplace_back(std::istreambuf_iterator<char>(file),
                          std::istreambuf_iterator<char>());
    }
  }
  const std::string prompt = line.Get("prompt").value_or("");

  // As the server does (runtime.heap_retain_mib's default).
  if (absl::Status heap = RetainFreedHeapMemory(number("heap-retain-mib", 1024));
      !heap.ok()) {
    return std::cerr << heap << "\n", 1;
  }
  auto manifest = model::LoadPackageManifest(*line.Get("model"));
  if (!manifest.ok()) return std::cerr << manifest.status() << "\n", 1;
  auto model = model::InstructBlipModel::Load(*manifest, {"cpu", threads});
  auto lm = model::LmTokenizer::Load(manifest->lm_tokenizer);
  auto qformer = model::WordPieceTokenizer::Load(manifest->qformer_tokenizer);
  if (!model.ok() || !lm.ok() || !qformer.ok())
    return std::cerr << "cannot load the package\n", 1;
  Metrics metrics;
  Engine::Options options;
  options.max_running_sequences =
      *std::max_element(levels.begin(), levels.end());
  options.kv_cache_bytes = 8ull << 30;
  options.decoder_start_token = manifest->decoder_start_token_id;
  TorchModelRunner runner(**model);
  auto engine =
      Engine::Create(runner, manifest->eos_token_ids, metrics, options);
  if (!engine.ok()) return std::cerr << engine.status() << "\n", 1;
  (*engine)->Start([&model] { (*model)->BindCallingThread(); });
  RunLevel(**engine, *manifest, **lm, **qformer, 1,
           MakeWorkload(1, 4, 4));  // warm-up

  std::vector<LevelResult> results;
  for (int level : levels) {
    const int count = number("requests-per-level", std::max(8, 2 * level));
    results.push_back(
        RunLevel(**engine, *manifest, **lm, **qformer, level,
                 MakeWorkload(count, min_tokens, max_tokens, images, prompt)));
    const auto& r = results.back();
    std::fprintf(stderr, "  concurrency %d done: %.1f output tok/s\n", level,
                 r.tokens / r.wall_s);
  }

  std::printf("\nengine (C++, continuous batching), model %s, %d threads\n",
              manifest->model_id.c_str(), threads);
  std::printf(
      "| concurrency | requests | output tok/s (end to end) | decode-phase "
      "tok/s | mean decode batch | median TTFT ms |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const auto& r : results) {
    std::printf("| %d | %d | %.1f | %.1f | %.1f | %.0f |\n", r.concurrency,
                r.requests, r.tokens / r.wall_s, r.decode_tok_s, r.mean_batch,
                r.median_ttft_ms);
  }
  const auto single = std::find_if(results.begin(), results.end(),
                                   [](auto& r) { return r.concurrency == 1; });
  const auto sixteen =
      std::find_if(results.begin(), results.end(),
                   [](auto& r) { return r.concurrency == 16; });
  if (single != results.end() && sixteen != results.end()) {
    std::printf(
        "\ndecode-phase tok/s at 16 / single stream: %.2fx (target >= 6x)\n",
        sixteen->decode_tok_s / single->decode_tok_s);
  }
  return 0;
}

}  // namespace
}  // namespace iblip::server

int main(int argc, char** argv) { return iblip::server::Main(argc, argv); }
