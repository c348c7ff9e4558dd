// The paged KV cache's bookkeeping: allocation, sharing, copy on write, and
// its invariants under random use.
#include "server/engine/kv_block_manager.h"

#include <gtest/gtest.h>

#include <random>

namespace iblip::server {
namespace {

TEST(KvBlockManagerTest, ReserveTakesBlocksAsPositionsGrow) {
  KvBlockManager blocks(8, 4);
  BlockTable table;
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(blocks.Reserve(table, 0, 10, copies));  // 10 positions: 3 blocks
  EXPECT_EQ(table.blocks.size(), 3u);
  EXPECT_EQ(blocks.free_blocks(), 5);
  ASSERT_TRUE(blocks.Reserve(table, 10, 12, copies));  // still block 2
  EXPECT_EQ(blocks.free_blocks(), 5);
  ASSERT_TRUE(blocks.Reserve(table, 12, 13, copies));  // a 4th block
  EXPECT_EQ(blocks.free_blocks(), 4);
  EXPECT_TRUE(copies.empty());
  blocks.Release(table);
  EXPECT_TRUE(table.blocks.empty());
  EXPECT_EQ(blocks.free_blocks(), 8);
}

TEST(KvBlockManagerTest, AFailedReserveChangesNothing) {
  KvBlockManager blocks(3, 4);
  BlockTable table;
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(blocks.Reserve(table, 0, 8, copies));
  EXPECT_FALSE(blocks.Reserve(table, 8, 20, copies));  // needs 3 more, 1 free
  EXPECT_EQ(table.blocks.size(), 2u);
  EXPECT_EQ(blocks.free_blocks(), 1);
  EXPECT_EQ(blocks.ReserveCost(table, 8, 20), 3);
}

TEST(KvBlockManagerTest, SharedBlocksAreCopiedBeforeTheyAreWritten) {
  KvBlockManager blocks(8, 4);
  BlockTable prompt;
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(blocks.Reserve(prompt, 0, 6, copies));  // blocks: full + half
  BlockTable other = blocks.Share(prompt);
  EXPECT_EQ(blocks.refcount(prompt.blocks[0]), 2);
  // Writing position 6 (in the half block) copies that block only.
  EXPECT_EQ(blocks.ReserveCost(other, 6, 7), 1);
  ASSERT_TRUE(blocks.Reserve(other, 6, 7, copies));
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].from, prompt.blocks[1]);
  EXPECT_EQ(copies[0].to, other.blocks[1]);
  EXPECT_EQ(other.blocks[0], prompt.blocks[0]);  // the full block stays shared
  EXPECT_EQ(blocks.refcount(prompt.blocks[1]), 1);
  // The original owner writes its own half block without a copy.
  copies.clear();
  ASSERT_TRUE(blocks.Reserve(prompt, 6, 7, copies));
  EXPECT_TRUE(copies.empty());
  blocks.Release(prompt);
  EXPECT_EQ(blocks.refcount(other.blocks[0]), 1);
  blocks.Release(other);
  EXPECT_EQ(blocks.free_blocks(), 8);
}

// Random reserve/share/release: references always match the tables, and
// every block is free exactly when nothing references it.
TEST(KvBlockManagerTest, InvariantsHoldUnderRandomUse) {
  std::mt19937 rng(7);
  KvBlockManager blocks(32, 4);
  std::vector<std::pair<BlockTable, int>> tables;  // table, positions
  for (int step = 0; step < 5000; ++step) {
    std::vector<BlockCopy> copies;
    const int op = static_cast<int>(rng() % 4);
    if (op == 0 || tables.empty()) {
      BlockTable table;
      const int positions = 1 + static_cast<int>(rng() % 20);
      if (blocks.Reserve(table, 0, positions, copies))
        tables.push_back({table, positions});
    } else if (op == 1) {
      auto& [table, positions] = tables[rng() % tables.size()];
      if (blocks.Reserve(table, positions, positions + 1, copies)) ++positions;
    } else if (op == 2) {
      const auto& [table, positions] = tables[rng() % tables.size()];
      tables.push_back({blocks.Share(table), positions});
    } else {
      const size_t i = rng() % tables.size();
      blocks.Release(tables[i].first);
      tables.erase(tables.begin() + static_cast<long>(i));
    }
    std::vector<int> refs(blocks.num_blocks(), 0);
    for (const auto& [table, positions] : tables) {
      EXPECT_EQ(static_cast<int>(table.blocks.size()),
                blocks.BlocksFor(positions));
      for (int b : table.blocks) ++refs[b];
    }
    int used = 0;
    for (int b = 0; b < blocks.num_blocks(); ++b) {
      ASSERT_EQ(refs[b], blocks.refcount(b)) << "block " << b;
      used += refs[b] > 0;
    }
    ASSERT_EQ(used, blocks.used_blocks());
  }
}

}  // namespace
}  // namespace iblip::server
