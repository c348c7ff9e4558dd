#include "server/engine/lru_cache.h"

#include <gtest/gtest.h>

namespace iblip::server {
namespace {

struct Blob {
  uint64_t size = 0;
  int tag = 0;
  uint64_t bytes() const { return size; }
};

TEST(LruCacheTest, EvictsTheLeastRecentlyUsedToStayWithinBudget) {
  LruCache<Blob> cache(/*budget_bytes=*/303);  // keys are 1 byte each
  cache.Put("a", {100, 1});
  cache.Put("b", {100, 2});
  cache.Put("c", {100, 3});
  EXPECT_EQ(cache.size(), 3u);
  ASSERT_TRUE(cache.Get("a").has_value());  // "b" is now the oldest
  cache.Put("d", {100, 4});
  EXPECT_FALSE(cache.Get("b").has_value());
  EXPECT_EQ(cache.Get("a")->tag, 1);
  EXPECT_EQ(cache.Get("c")->tag, 3);
  EXPECT_EQ(cache.Get("d")->tag, 4);
  EXPECT_LE(cache.bytes(), 303u);
}

TEST(LruCacheTest, ReplacingAKeyUpdatesItsValueAndSize) {
  LruCache<Blob> cache(1000);
  cache.Put("k", {100, 1});
  cache.Put("k", {300, 2});
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.bytes(), 301u);
  EXPECT_EQ(cache.Get("k")->tag, 2);
}

TEST(LruCacheTest, AValueLargerThanTheBudgetIsNotStored) {
  LruCache<Blob> cache(50);
  cache.Put("small", {10, 1});
  cache.Put("big", {100, 2});
  EXPECT_FALSE(cache.Get("big").has_value());
  EXPECT_TRUE(cache.Get("small").has_value());
}

TEST(LruCacheTest, ZeroBudgetStoresNothing) {
  LruCache<Blob> cache(0);
  cache.Put("a", {0, 1});
  EXPECT_FALSE(cache.Get("a").has_value());
}

}  // namespace
}  // namespace iblip::server
