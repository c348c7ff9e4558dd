// iblip-token-cpu-bench: the CPU work the engine does per generated token,
// as a function of the sequence length and the vocabulary size. Prints
// microseconds per token; nothing is asserted (see issue #21: per-token work
// must not grow with the sequence, and must not sort the vocabulary).
//
//   iblip-token-cpu-bench PACKAGE_DIR [PACKAGE_DIR...]
//
// Streaming detokenization (TextStreamer) uses each package's LM tokenizer on
// ids of ordinary English text; sampling (Sampler) and beam search
// (BeamSearch) use synthetic logits over a 32000-word vocabulary (LLaMA's).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "model/runtime/beam_search.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/package.h"
#include "model/runtime/sampler.h"
#include "model/runtime/text_streamer.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kVocab = 32000;
constexpr int kSequenceLengths[] = {50, 500, 2000};

double MicrosSince(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start)
      .count();
}

// Ids of plain prose, repeated to `length` (BOS dropped).
std::vector<int32_t> ProseIds(const iblip::model::LmTokenizer& tokenizer,
                              int length) {
  const std::string prose =
      "The picture shows a small red circle to the left of a large blue "
      "square. There's a green triangle above them, and the background "
      "isn't plain: it's a wooden table with a cup of coffee on it. ";
  const std::vector<int32_t> specials = tokenizer.EncodePrompt("");
  std::vector<int32_t> ids;
  while (static_cast<int>(ids.size()) < length) {
    for (int32_t id : tokenizer.EncodePrompt(prose)) {
      if (std::find(specials.begin(), specials.end(), id) == specials.end())
        ids.push_back(id);
    }
  }
  ids.resize(length);
  return ids;
}

void BenchStreamer(const std::string& package_dir) {
  auto manifest = iblip::model::LoadPackageManifest(package_dir);
  if (!manifest.ok()) {
    std::fprintf(stderr, "%s\n", manifest.status().ToString().c_str());
    return;
  }
  auto tokenizer = iblip::model::LmTokenizer::Load(manifest->lm_tokenizer);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
    return;
  }
  for (bool with_stops : {false, true}) {
    for (int length : kSequenceLengths) {
      const std::vector<int32_t> ids = ProseIds(**tokenizer, length);
      std::vector<std::string> stops;
      if (with_stops) stops = {"\n\n", "USER:", "the end."};
      // Repeat short sequences so each measurement covers >= 20000 tokens.
      const int repeats = std::max(1, 20000 / length);
      size_t bytes = 0;
      const auto start = Clock::now();
      for (int r = 0; r < repeats; ++r) {
        iblip::model::TextStreamer streamer(**tokenizer, stops);
        for (int32_t id : ids) bytes += streamer.Append(id).text.size();
        bytes += streamer.Finish().size();
      }
      std::printf("streamer %-40s stops=%d length=%5d  %8.2f us/token\n",
                  package_dir.substr(package_dir.rfind('/') + 1).c_str(),
                  with_stops ? 3 : 0, length,
                  MicrosSince(start) / (repeats * length));
      if (bytes == 0) std::printf("(no text?)\n");
    }
  }
}

// "confident": N(0, 2) plus ten ids 8-14 above, so that a handful hold most
// of the probability, as in a language model that knows what comes next;
// "flat": N(0, 1.5), the mass spread over thousands of ids (top-p and plain
// sampling must rank far down: the worst case).
std::vector<std::vector<float>> RandomLogits(int rows, bool flat) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, flat ? 1.5f : 2.0f);
  std::uniform_real_distribution<float> boost(8.0f, 14.0f);
  std::vector<std::vector<float>> out(rows, std::vector<float>(kVocab));
  for (auto& row : out) {
    for (float& x : row) x = normal(rng);
    if (!flat) {
      for (int i = 0; i < 10; ++i) row[rng() % kVocab] += boost(rng);
    }
  }
  return out;
}

void BenchSampler(const char* name, iblip::model::SamplingParams params,
                  bool flat, int generated_length) {
  constexpr int kRows = 16;
  constexpr int kTokens = 2000;
  const auto rows = RandomLogits(kRows, flat);
  std::vector<int32_t> generated;
  std::mt19937 rng(3);
  for (int i = 0; i < generated_length; ++i)
    generated.push_back(static_cast<int32_t>(rng() % kVocab));
  params.eos_token_ids = {2};
  iblip::model::Sampler sampler(params, 1);
  std::vector<float> logits;
  double micros = 0;
  long checksum = 0;
  for (int t = 0; t < kTokens; ++t) {
    logits = rows[t % kRows];  // the copy is not timed
    const auto start = Clock::now();
    checksum += sampler.Next(logits, generated);
    micros += MicrosSince(start);
  }
  std::printf(
      "sampler  %-34s %-9s generated=%4d  %8.2f us/token (ids sum %ld)\n", name,
      flat ? "flat" : "confident", generated_length, micros / kTokens,
      checksum);
}

void BenchBeamSearch(int generated_length, float repetition_penalty) {
  constexpr int kBeams = 5;
  iblip::model::BeamSearchParams params;
  params.num_beams = kBeams;
  params.max_new_tokens = generated_length + 64;
  params.repetition_penalty = repetition_penalty;
  params.eos_token_ids = {2};
  iblip::model::BeamSearch beams(params);
  const auto logits = RandomLogits(kBeams, /*flat=*/false);
  // Warm up to the length, then time 32 steps.
  for (int i = 0; i < generated_length && !beams.done(); ++i)
    beams.Advance(logits);
  constexpr int kSteps = 32;
  const auto start = Clock::now();
  int steps = 0;
  for (; steps < kSteps && !beams.done(); ++steps) beams.Advance(logits);
  std::printf(
      "beam     %d beams x %d vocab, repetition_penalty %.1f, generated=%4d  "
      "%8.2f us/step\n",
      kBeams, kVocab, repetition_penalty, generated_length,
      MicrosSince(start) / std::max(steps, 1));
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) BenchStreamer(argv[i]);

  iblip::model::SamplingParams greedy;
  iblip::model::SamplingParams top_k;  // Hugging Face's defaults
  top_k.temperature = 1.0f;
  iblip::model::SamplingParams top_p = top_k;
  top_p.top_k = 0;
  top_p.top_p = 0.9f;
  iblip::model::SamplingParams top_k_p = top_k;
  top_k_p.top_p = 0.9f;
  iblip::model::SamplingParams pure = top_p;
  pure.top_p = 1.0f;
  iblip::model::SamplingParams penalty = top_k;
  penalty.repetition_penalty = 1.2f;
  for (bool flat : {false, true}) {
    BenchSampler("greedy", greedy, flat, 50);
    BenchSampler("top_k=50", top_k, flat, 50);
    BenchSampler("top_k=50 top_p=0.9", top_k_p, flat, 50);
    BenchSampler("top_k=0 top_p=0.9", top_p, flat, 50);
    BenchSampler("top_k=0 top_p=1", pure, flat, 50);
  }
  for (int length : {50, 2000})
    BenchSampler("top_k=50 repetition_penalty=1.2", penalty, false, length);
  for (int length : {50, 500}) {
    BenchBeamSearch(length, 1.0f);
    BenchBeamSearch(length, 1.2f);
  }
  return 0;
}
