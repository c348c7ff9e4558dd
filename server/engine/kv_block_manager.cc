#include "server/engine/kv_block_manager.h"

#include <algorithm>
#include <cassert>

namespace iblip::server {

KvBlockManager::KvBlockManager(int num_blocks, int block_size)
    : block_size_(std::max(1, block_size)),
      refcount_(std::max(0, num_blocks), 0) {
  // Hand out low block ids first (a stack popped from the back).
  for (int block = num_blocks - 1; block >= 0; --block) free_.push_back(block);
}

int KvBlockManager::Take() {
  const int block = free_.back();
  free_.pop_back();
  refcount_[block] = 1;
  return block;
}

int KvBlockManager::ReserveCost(const BlockTable& table, int write_from,
                                int positions) const {
  const int have = static_cast<int>(table.blocks.size());
  const int need = BlocksFor(positions);
  int cost = std::max(0, need - have);
  const int first_written = write_from / block_size_;
  for (int i = first_written; i < std::min(have, need); ++i) {
    if (refcount_[table.blocks[i]] > 1) ++cost;
  }
  return cost;
}

bool KvBlockManager::Reserve(BlockTable& table, int write_from, int positions,
                             std::vector<BlockCopy>& copies) {
  if (ReserveCost(table, write_from, positions) > free_blocks()) return false;
  const int have = static_cast<int>(table.blocks.size());
  const int need = BlocksFor(positions);
  for (int i = write_from / block_size_; i < std::min(have, need); ++i) {
    int& block = table.blocks[i];
    if (refcount_[block] <= 1) continue;
    const int copy = Take();
    copies.push_back({block, copy});
    --refcount_[block];
    block = copy;
  }
  while (static_cast<int>(table.blocks.size()) < need)
    table.blocks.push_back(Take());
  return true;
}

BlockTable KvBlockManager::Share(const BlockTable& table) {
  for (int block : table.blocks) ++refcount_[block];
  return table;
}

void KvBlockManager::Release(BlockTable& table) {
  for (int block : table.blocks) {
    assert(refcount_[block] > 0);
    if (--refcount_[block] == 0) free_.push_back(block);
  }
  table.blocks.clear();
}

}  // namespace iblip::server
