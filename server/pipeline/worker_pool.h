#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace iblip::server {

// A fixed set of threads running posted tasks in FIFO order. Used for CPU
// preprocessing (image decoding, tokenization) so that neither gRPC callback
// threads nor the engine thread do it. Post() never blocks; the destructor
// finishes the tasks already posted, then joins.
class WorkerPool {
 public:
  explicit WorkerPool(int num_threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Post(std::function<void()> task);

 private:
  void Run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;  // guarded by mutex_
  bool stopping_ = false;                    // guarded by mutex_
  std::vector<std::thread> threads_;         // started in ctor, joined in dtor
};

}  // namespace iblip::server
