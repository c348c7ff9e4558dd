#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace iblip::server {

// A least-recently-used cache bounded by bytes: Put evicts the oldest
// entries until the new one fits; a value larger than the whole budget is
// not stored. `Value` is cheap to copy (shared, immutable) and has
// `uint64_t bytes() const`. Thread-safe.
template <typename Value>
class LruCache {
 public:
  explicit LruCache(uint64_t budget_bytes) : budget_(budget_bytes) {}

  std::optional<Value> Get(const std::string& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    order_.splice(order_.begin(), order_, it->second);  // now the newest
    return it->second->second;
  }

  void Put(const std::string& key, Value value) {
    const uint64_t size = value.bytes() + key.size();
    std::lock_guard<std::mutex> lock(mutex_);
    if (auto it = index_.find(key); it != index_.end()) EraseLocked(it);
    if (size > budget_) return;
    while (bytes_ + size > budget_)
      EraseLocked(index_.find(order_.back().first));
    order_.emplace_front(key, std::move(value));
    index_.emplace(key, order_.begin());
    bytes_ += size;
  }

  uint64_t bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return bytes_;
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return index_.size();
  }

 private:
  using Entry = std::pair<std::string, Value>;
  using Index =
      std::unordered_map<std::string, typename std::list<Entry>::iterator>;

  void EraseLocked(typename Index::iterator it) {
    bytes_ -= it->second->second.bytes() + it->first.size();
    order_.erase(it->second);
    index_.erase(it);
  }

  const uint64_t budget_;
  mutable std::mutex mutex_;
  std::list<Entry> order_;  // newest first
  Index index_;
  uint64_t bytes_ = 0;
};

}  // namespace iblip::server
