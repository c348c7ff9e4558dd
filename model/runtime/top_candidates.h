#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace iblip::model {

// The rank order of scores: the larger value first, the lower index first
// among equal values (what a stable descending sort gives), NaN after every
// number (so the order stays a strict total order).
inline bool RanksBefore(float a, int64_t a_index, float b, int64_t b_index) {
  if (a > b) return true;
  if (a < b) return false;
  if (a == b) return a_index < b_index;
  // At least one NaN.
  if (std::isnan(a) != std::isnan(b)) return std::isnan(b);
  return a_index < b_index;
}

// The indices of the `count` best-ranked values (all when count >= size),
// best first, without sorting the rest: for a few, one pass with a heap of
// `count` candidates (O(size) comparisons plus O(log count) per heap
// change); for a large share, nth_element (O(size) on average). Then
// O(count log count) to sort them.
std::vector<int64_t> TopCandidates(absl::Span<const float> values,
                                   size_t count);

}  // namespace iblip::model
