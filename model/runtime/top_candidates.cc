#include "model/runtime/top_candidates.h"

#include <algorithm>
#include <numeric>

namespace iblip::model {
namespace {

// Above size / kSelectShare candidates nth_element over every index beats
// the heap (which then changes too often).
constexpr size_t kSelectShare = 32;

}  // namespace

std::vector<int64_t> TopCandidates(absl::Span<const float> values,
                                   size_t count) {
  const auto ranks_before = [&](int64_t a, int64_t b) {
    return RanksBefore(values[a], a, values[b], b);
  };
  if (count == 0) return {};
  std::vector<int64_t> top;
  if (count * kSelectShare >= values.size()) {
    // A large share: selection over all indices, O(size) on average.
    top.resize(values.size());
    std::iota(top.begin(), top.end(), 0);
    if (count < top.size()) {
      std::nth_element(top.begin(), top.begin() + count, top.end(),
                       ranks_before);
      top.resize(count);
    }
  } else {
    // A heap whose front is the worst candidate kept so far.
    top.resize(count);
    std::iota(top.begin(), top.end(), 0);
    std::make_heap(top.begin(), top.end(), ranks_before);
    float worst = values[top.front()];
    for (int64_t i = static_cast<int64_t>(count);
         i < static_cast<int64_t>(values.size()); ++i) {
      // Fast reject: most values rank below the worst kept one.
      if (values[i] < worst || !ranks_before(i, top.front())) continue;
      std::pop_heap(top.begin(), top.end(), ranks_before);
      top.back() = i;
      std::push_heap(top.begin(), top.end(), ranks_before);
      worst = values[top.front()];
    }
  }
  std::sort(top.begin(), top.end(), ranks_before);
  return top;
}

}  // namespace iblip::model
