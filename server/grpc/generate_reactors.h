#pragma once

// The gRPC side of Generate: reactors that turn engine output into stream
// messages (or one unary response), and a sink that survives the reactor.

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "iblip/v1/iblip.grpc.pb.h"
#include "server/engine/generation_request.h"

namespace iblip::server {

// The engine's handle on a reactor. gRPC deletes a reactor in OnDone, which
// can happen while the engine still holds the request (client gone); the
// reactor detaches first, and later results are dropped.
class DetachableSink final : public ResponseSink {
 public:
  explicit DetachableSink(ResponseSink* target) : target_(target) {}
  void OnDelta(SequenceDelta delta) override;
  void OnComplete(const absl::Status& status, const UsageStats& usage) override;
  void Detach();

 private:
  // Recursive: a reactor's Finish may run OnDone (and so Detach) inline on
  // the thread that is inside OnComplete.
  std::recursive_mutex mutex_;
  ResponseSink* target_;  // guarded by mutex_; not owned; null once detached
};

v1::FinishReason ToProto(FinishReason reason);
v1::Usage ToProto(const UsageStats& usage);

// Server-streaming Generate (a raw method: messages are serialized here, see
// wire_request.h). At most one write in flight; deltas queue in
// `pending_` meanwhile (QueueDelta: merged per sequence, so the engine never
// waits and the queue stays bounded). Finish is called exactly once: after
// the last write (the usage message), or at cancellation.
class StreamGenerateReactor final
    : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
      public ResponseSink {
 public:
  explicit StreamGenerateReactor(std::string request_id)
      : request_id_(std::move(request_id)) {}

  // Gives the reactor the request to cancel on OnCancel; call before
  // handing the request to the engine.
  void Attach(std::shared_ptr<GenerationRequest> request,
              std::shared_ptr<DetachableSink> sink);

  // ResponseSink, called by the engine (through DetachableSink).
  void OnDelta(SequenceDelta delta) override;
  void OnComplete(const absl::Status& status, const UsageStats& usage) override;

  // grpc::ServerWriteReactor.
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  v1::GenerateResponse ToMessage(SequenceDelta delta) const;
  // Starts the next write, or Finish when everything was written and the
  // result is known. Called with mutex_ held; releases it.
  void Pump(std::unique_lock<std::mutex>& lock);

  const std::string request_id_;
  std::shared_ptr<GenerationRequest> request_;  // set by Attach
  std::shared_ptr<DetachableSink> sink_;        // set by Attach

  std::mutex mutex_;
  std::deque<SequenceDelta> pending_;  // guarded by mutex_
  // The final message (usage), sent after the deltas; guarded by mutex_.
  std::optional<v1::GenerateResponse> usage_message_;
  grpc::ByteBuffer in_flight_;     // owned by the write in flight
  bool writing_ = false;           // guarded by mutex_
  bool finish_requested_ = false;  // guarded by mutex_
  bool finished_ = false;          // Finish called; guarded by mutex_
  grpc::Status final_status_;      // guarded by mutex_
};

// GenerateUnary (raw, like Generate): collects every sequence and answers
// once.
class UnaryGenerateReactor final : public grpc::ServerUnaryReactor,
                                   public ResponseSink {
 public:
  UnaryGenerateReactor(std::string request_id, grpc::ByteBuffer* response)
      : request_id_(std::move(request_id)), response_(response) {}

  void Attach(std::shared_ptr<GenerationRequest> request,
              std::shared_ptr<DetachableSink> sink);

  void OnDelta(SequenceDelta delta) override;
  void OnComplete(const absl::Status& status, const UsageStats& usage) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  const std::string request_id_;
  grpc::ByteBuffer* const response_;   // owned by gRPC
  v1::GenerateUnaryResponse message_;  // guarded by mutex_
  std::shared_ptr<GenerationRequest> request_;
  std::shared_ptr<DetachableSink> sink_;

  std::mutex mutex_;
  bool finished_ = false;  // guarded by mutex_
};

}  // namespace iblip::server
