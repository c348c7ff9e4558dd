#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <mutex>

#include "absl/strings/ascii.h"

namespace iblip::server {
namespace {

// Latency buckets from 1 ms to 60 s, dense where interactive latencies live.
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75,  1.0,    1.5,   2.0,  3.0,   5.0,  7.5,   10,  20,   30,  60};

// Powers of two up to 1024: batch sizes.
const prometheus::Histogram::BucketBoundaries kBatchBuckets = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
// Tokens per request: 1 to 16k, roughly doubling.
const prometheus::Histogram::BucketBoundaries kTokenBuckets = {
    1, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};

const char* CacheLabel(CacheKind kind) {
  return kind == CacheKind::kVision ? "vision" : "qformer";
}

std::string ReasonLabel(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStopSequence:
      return "stop_sequence";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
    case FinishReason::kNone:
      break;
  }
  return "none";
}

// The lower-case code name ("ok", "invalid_argument", ...), as gRPC clients
// and the HTTP API's error types spell it.
std::string StatusLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

}  // namespace

struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry =
      std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter()
          .Name("iblip_requests_total")
          .Help("Finished Generate requests by gRPC status code")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& sequences =
      prometheus::BuildCounter()
          .Name("iblip_sequences_total")
          .Help("Finished sequences by finish reason")
          .Register(*registry);
  prometheus::Counter& prompt_tokens =
      prometheus::BuildCounter()
          .Name("iblip_prompt_tokens_total")
          .Help("Language-model prompt tokens processed")
          .Register(*registry)
          .Add({});
  prometheus::Counter& generated_tokens =
      prometheus::BuildCounter()
          .Name("iblip_generated_tokens_total")
          .Help("Tokens generated")
          .Register(*registry)
          .Add({});
  prometheus::Histogram& queue_time =
      prometheus::BuildHistogram()
          .Name("iblip_request_queue_duration_seconds")
          .Help("Time from arrival until the engine starts the request")
          .Register(*registry)
          .Add({}, kLatencyBuckets);
  prometheus::Histogram& ttft =
      prometheus::BuildHistogram()
          .Name("iblip_time_to_first_token_seconds")
          .Help("Time from arrival until the first generated token")
          .Register(*registry)
          .Add({}, kLatencyBuckets);
  prometheus::Histogram& itl =
      prometheus::BuildHistogram()
          .Name("iblip_inter_token_latency_seconds")
          .Help("Time between consecutive tokens of a sequence")
          .Register(*registry)
          .Add({}, kLatencyBuckets);
  prometheus::Histogram& e2e =
      prometheus::BuildHistogram()
          .Name("iblip_request_duration_seconds")
          .Help("Time from arrival until the request finished")
          .Register(*registry)
          .Add({}, kLatencyBuckets);
  prometheus::Gauge& waiting = prometheus::BuildGauge()
                                   .Name("iblip_requests_waiting")
                                   .Help("Requests admitted but not started")
                                   .Register(*registry)
                                   .Add({});
  prometheus::Gauge& queue_capacity =
      prometheus::BuildGauge()
          .Name("iblip_queue_capacity")
          .Help(
              "Requests that may wait at once (scheduler.max_queue_size); "
              "beyond it RESOURCE_EXHAUSTED")
          .Register(*registry)
          .Add({});
  prometheus::Gauge& running =
      prometheus::BuildGauge()
          .Name("iblip_requests_running")
          .Help("Requests the engine is generating for")
          .Register(*registry)
          .Add({});
  prometheus::Histogram& vision_time =
      prometheus::BuildHistogram()
          .Name("iblip_vision_stage_duration_seconds")
          .Help("Vision encoder + Q-Former time per batch")
          .Register(*registry)
          .Add({}, kLatencyBuckets);
  prometheus::Histogram& vision_batch =
      prometheus::BuildHistogram()
          .Name("iblip_vision_batch_size")
          .Help("Images per vision-stage batch")
          .Register(*registry)
          .Add({}, kBatchBuckets);
  prometheus::Histogram& prefill_time =
      prometheus::BuildHistogram()
          .Name("iblip_prefill_duration_seconds")
          .Help("Language-model prefill time per request")
          .Register(*registry)
          .Add({}, kLatencyBuckets);
  prometheus::Histogram& decode_batch =
      prometheus::BuildHistogram()
          .Name("iblip_decode_batch_size")
          .Help("Sequences advanced per decode step")
          .Register(*registry)
          .Add({}, kBatchBuckets);
  prometheus::Histogram& request_prompt_tokens =
      prometheus::BuildHistogram()
          .Name("iblip_request_prompt_tokens")
          .Help("Language-model prompt tokens per finished request")
          .Register(*registry)
          .Add({}, kTokenBuckets);
  prometheus::Histogram& request_generated_tokens =
      prometheus::BuildHistogram()
          .Name("iblip_request_generated_tokens")
          .Help("Tokens generated per finished request (all sequences)")
          .Register(*registry)
          .Add({}, kTokenBuckets);
  prometheus::Gauge& kv_used =
      prometheus::BuildGauge()
          .Name("iblip_kv_cache_blocks_used")
          .Help("KV cache blocks holding live sequences' positions")
          .Register(*registry)
          .Add({});
  prometheus::Gauge& kv_total = prometheus::BuildGauge()
                                    .Name("iblip_kv_cache_blocks")
                                    .Help("KV cache blocks in the pool")
                                    .Register(*registry)
                                    .Add({});
  prometheus::Gauge& kv_block_tokens =
      prometheus::BuildGauge()
          .Name("iblip_kv_cache_block_tokens")
          .Help("Positions (tokens) one KV cache block holds")
          .Register(*registry)
          .Add({});
  prometheus::Counter& preemptions =
      prometheus::BuildCounter()
          .Name("iblip_preemptions_total")
          .Help("Requests evicted from the KV cache to be recomputed later")
          .Register(*registry)
          .Add({});
  prometheus::Family<prometheus::Counter>& cache_hits =
      prometheus::BuildCounter()
          .Name("iblip_cache_hits_total")
          .Help("Feature cache lookups that found an entry, by cache")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& cache_misses =
      prometheus::BuildCounter()
          .Name("iblip_cache_misses_total")
          .Help("Feature cache lookups that found nothing, by cache")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& cache_bytes =
      prometheus::BuildGauge()
          .Name("iblip_cache_bytes")
          .Help("Memory held by a feature cache")
          .Register(*registry);
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {
  // Known label values start at 0, so every series exists from the first
  // scrape (rate() and dashboards need no "absent" special case).
  for (CacheKind kind : {CacheKind::kVision, CacheKind::kQformer}) {
    impl_->cache_hits.Add({{"cache", CacheLabel(kind)}});
    impl_->cache_misses.Add({{"cache", CacheLabel(kind)}});
    impl_->cache_bytes.Add({{"cache", CacheLabel(kind)}});
  }
}
Metrics::~Metrics() = default;

std::shared_ptr<prometheus::Registry> Metrics::registry() const {
  return impl_->registry;
}

void Metrics::RequestFinished(absl::StatusCode code) {
  impl_->requests.Add({{"code", StatusLabel(code)}}).Increment();
}
void Metrics::SequenceFinished(FinishReason reason) {
  impl_->sequences.Add({{"finish_reason", ReasonLabel(reason)}}).Increment();
}
void Metrics::ObserveQueueTime(absl::Duration d) {
  impl_->queue_time.Observe(absl::ToDoubleSeconds(d));
}
void Metrics::ObserveTimeToFirstToken(absl::Duration d) {
  impl_->ttft.Observe(absl::ToDoubleSeconds(d));
}
void Metrics::ObserveInterTokenLatency(absl::Duration d) {
  impl_->itl.Observe(absl::ToDoubleSeconds(d));
}
void Metrics::ObserveRequestDuration(absl::Duration d) {
  impl_->e2e.Observe(absl::ToDoubleSeconds(d));
}
void Metrics::AddPromptTokens(int n) { impl_->prompt_tokens.Increment(n); }
void Metrics::AddGeneratedTokens(int n) {
  impl_->generated_tokens.Increment(n);
}
void Metrics::SetWaiting(int n) { impl_->waiting.Set(n); }
void Metrics::SetQueueCapacity(int n) { impl_->queue_capacity.Set(n); }
void Metrics::SetRunning(int n) { impl_->running.Set(n); }

void Metrics::ObserveVisionBatch(int size, absl::Duration d) {
  impl_->vision_batch.Observe(size);
  impl_->vision_time.Observe(absl::ToDoubleSeconds(d));
}
void Metrics::ObservePrefill(absl::Duration d) {
  impl_->prefill_time.Observe(absl::ToDoubleSeconds(d));
}
void Metrics::ObserveDecodeBatch(int rows) {
  impl_->decode_batch.Observe(rows);
}
void Metrics::SetKvCacheBlocks(int used, int total, int block_tokens) {
  impl_->kv_used.Set(used);
  impl_->kv_total.Set(total);
  impl_->kv_block_tokens.Set(block_tokens);
}
void Metrics::Preempted() { impl_->preemptions.Increment(); }
void Metrics::ObserveRequestTokens(int prompt_tokens, int generated_tokens) {
  impl_->request_prompt_tokens.Observe(prompt_tokens);
  impl_->request_generated_tokens.Observe(generated_tokens);
}
void Metrics::CacheLookup(CacheKind kind, bool hit) {
  (hit ? impl_->cache_hits : impl_->cache_misses)
      .Add({{"cache", CacheLabel(kind)}})
      .Increment();
}
void Metrics::SetCacheBytes(CacheKind kind, uint64_t bytes) {
  impl_->cache_bytes.Add({{"cache", CacheLabel(kind)}})
      .Set(static_cast<double>(bytes));
}

}  // namespace iblip::server
