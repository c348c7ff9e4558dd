#pragma once

#include <atomic>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace iblip::server {

// The engine's time source. Production uses the wall clock; tests inject a
// FakeClock that the fake model runner advances by the work it pretends to
// do, so scheduling tests are exact and do not depend on the machine.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
  static Clock& Get() {
    static RealClock clock;
    return clock;
  }
};

// A clock that moves only when told. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::UnixEpoch())
      : nanos_(absl::ToUnixNanos(start)) {}
  absl::Time Now() const override {
    return absl::FromUnixNanos(nanos_.load());
  }
  void Advance(absl::Duration d) {
    nanos_.fetch_add(absl::ToInt64Nanoseconds(d));
  }

 private:
  std::atomic<int64_t> nanos_;
};

}  // namespace iblip::server
