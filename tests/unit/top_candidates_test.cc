#include "model/runtime/top_candidates.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

namespace iblip::model {
namespace {

// What sorting everything gives: descending, ties by index (stable), NaN last.
std::vector<int64_t> SortEverything(const std::vector<float>& values) {
  std::vector<int64_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const float x = std::isnan(values[a]) ? -INFINITY : values[a];
    const float y = std::isnan(values[b]) ? -INFINITY : values[b];
    if (x != y) return x > y;
    return !std::isnan(values[a]) && std::isnan(values[b]);
  });
  return order;
}

TEST(TopCandidatesTest, MatchesTheStableSortOfEverything) {
  std::mt19937 rng(9);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<float> values(1 + rng() % 300);
    // Few distinct values (many ties), infinities, NaN now and then.
    for (float& v : values) {
      const unsigned r = rng() % 40;
      v = r == 0   ? -std::numeric_limits<float>::infinity()
          : r == 1 ? std::numeric_limits<float>::quiet_NaN()
          : r == 2 ? std::numeric_limits<float>::infinity()
                   : static_cast<float>(rng() % 12) * 0.5f - 3.0f;
    }
    const std::vector<int64_t> sorted = SortEverything(values);
    for (size_t count : {size_t{0}, size_t{1}, size_t{2}, values.size() / 3,
                         values.size() - 1, values.size(), values.size() + 5}) {
      const std::vector<int64_t> top = TopCandidates(values, count);
      ASSERT_EQ(top, std::vector<int64_t>(
                         sorted.begin(),
                         sorted.begin() + std::min(count, sorted.size())))
          << "count " << count;
    }
  }
}

TEST(TopCandidatesTest, AscendingInputKeepsTheLast) {
  std::vector<float> values(1000);
  std::iota(values.begin(), values.end(), 0.0f);
  EXPECT_EQ(TopCandidates(values, 3), (std::vector<int64_t>{999, 998, 997}));
}

}  // namespace
}  // namespace iblip::model
