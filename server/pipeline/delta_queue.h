#pragma once

#include <deque>

#include "server/engine/generation_request.h"

namespace iblip::server {

// Queues `delta` for a transport whose writer may be behind the engine: it
// joins the newest unsent delta of its sequence (text and tokens appended,
// time and finish reason updated) unless that one already finished. A slow
// reader so gets fewer, larger messages, and the queue holds at most one
// unfinished delta per sequence however slow it is; the engine never waits.
inline void QueueDelta(std::deque<SequenceDelta>& pending,
                       SequenceDelta delta) {
  for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
    if (it->index != delta.index) continue;
    if (it->finish_reason != FinishReason::kNone) break;
    it->text += delta.text;
    it->token_ids.insert(it->token_ids.end(), delta.token_ids.begin(),
                         delta.token_ids.end());
    it->elapsed = delta.elapsed;
    it->finish_reason = delta.finish_reason;
    return;
  }
  pending.push_back(std::move(delta));
}

}  // namespace iblip::server
