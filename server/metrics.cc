#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <mutex>

#include "server/status_util.h"

namespace iblip::server {
namespace {

// Latency buckets from 1 ms to 60 s, dense where interactive latencies live.
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75,  1.0,    1.5,   2.0,  3.0,   5.0,  7.5,   10,  20,   30,  60};

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
  prometheus::Gauge& running =
      prometheus::BuildGauge()
          .Name("iblip_requests_running")
          .Help("Requests the engine is generating for")
          .Register(*registry)
          .Add({});
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
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
void Metrics::SetRunning(int n) { impl_->running.Set(n); }

}  // namespace iblip::server
