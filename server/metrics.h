#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/engine/generation_request.h"

namespace prometheus {
class Registry;
}

namespace iblip::server {

enum class CacheKind { kVision, kQformer };

// The server's Prometheus metrics (iblip_* names; seconds for durations,
// as Prometheus recommends). Thread-safe: prometheus-cpp metrics are atomic.
class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const;

  // One per finished request, labelled by the gRPC code's name.
  void RequestFinished(absl::StatusCode code);
  // One per finished sequence, labelled by finish reason.
  void SequenceFinished(FinishReason reason);
  void ObserveQueueTime(absl::Duration d);
  void ObserveTimeToFirstToken(absl::Duration d);
  void ObserveInterTokenLatency(absl::Duration d);
  void ObserveRequestDuration(absl::Duration d);
  void AddPromptTokens(int n);
  void AddGeneratedTokens(int n);
  void SetWaiting(int n);
  // How many requests may wait (scheduler.max_queue_size): alerts and the
  // autoscaler divide iblip_requests_waiting by it, whatever the config.
  void SetQueueCapacity(int n);
  void SetRunning(int n);

  // Engine stages.
  // Per vision batch: requests encoded, and the model time of its pieces.
  void ObserveVisionBatch(int size, absl::Duration d);
  void ObservePrefill(absl::Duration d);  // one request, all its chunks
  void ObserveDecodeBatch(int rows);                    // one decode step
  void SetKvCacheBlocks(int used, int total, int block_tokens);
  void Preempted();
  // Per finished request.
  void ObserveRequestTokens(int prompt_tokens, int generated_tokens);

  // Feature caches.
  void CacheLookup(CacheKind kind, bool hit);
  void SetCacheBytes(CacheKind kind, uint64_t bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace iblip::server
