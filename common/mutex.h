#pragma once

// A mutex, scoped lock and condition variable that clang's thread-safety
// analysis understands (ABSL_GUARDED_BY, ABSL_EXCLUSIVE_LOCKS_REQUIRED) and
// ThreadSanitizer sees: they are std::mutex and std::condition_variable_any
// underneath, whose pthread calls TSan intercepts. (absl::Mutex from
// Debian's uninstrumented libabsl is invisible to TSan: every access it
// orders would be reported as a race.)

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace iblip {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mutex_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mutex_.unlock(); }
  // BasicLockable, for std::condition_variable_any.
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mutex_.lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mutex_.unlock(); }

 private:
  std::mutex mutex_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mutex) ABSL_EXCLUSIVE_LOCK_FUNCTION(mutex)
      : mutex_(mutex) {
    mutex_->Lock();
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mutex_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mutex_;
};

// Waits release `mutex` (held by the caller) while asleep and hold it again
// when they return. Spurious wake-ups happen: wait in a loop on the
// condition, or use the predicate forms.
class CondVar {
 public:
  void Wait(Mutex* mutex) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    cv_.wait(*mutex);
  }
  // False when `timeout` passed first.
  bool WaitWithTimeout(Mutex* mutex, absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    return cv_.wait_for(*mutex, absl::ToChronoNanoseconds(timeout)) ==
           std::cv_status::no_timeout;
  }
  template <typename Predicate>
  void Await(Mutex* mutex, Predicate done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    cv_.wait(*mutex, done);
  }
  // True if `done` holds, false if `timeout` passed first.
  template <typename Predicate>
  bool AwaitWithTimeout(Mutex* mutex, absl::Duration timeout, Predicate done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    return cv_.wait_for(*mutex, absl::ToChronoNanoseconds(timeout), done);
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable_any cv_;
};

}  // namespace iblip
