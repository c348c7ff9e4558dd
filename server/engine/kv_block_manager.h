#pragma once

#include <vector>

namespace iblip::server {

// One sequence's KV cache blocks, in position order: block i holds positions
// i*block_size .. i*block_size + block_size - 1.
struct BlockTable {
  std::vector<int> blocks;
};

// A block whose contents must be copied before a write (copy on write).
struct BlockCopy {
  int from = -1;
  int to = -1;
};

// The paged KV cache's bookkeeping: which of the pool's fixed-size blocks are
// free, and how many block tables share each used block. The sequences of one
// request (beams, n > 1 samples) share the blocks of their common prefix; a
// shared block is copied before it is written (copy on write), so a sequence
// never sees another's tokens. Holds no tensors: the model runner owns the
// memory, and the engine applies the copies this class asks for.
//
// Invariants: every block is free or referenced by >= 1 table; a free block
// is in the free list exactly once. Not thread-safe (engine thread only).
class KvBlockManager {
 public:
  KvBlockManager(int num_blocks, int block_size);

  int num_blocks() const { return static_cast<int>(refcount_.size()); }
  int block_size() const { return block_size_; }
  int free_blocks() const { return static_cast<int>(free_.size()); }
  int used_blocks() const { return num_blocks() - free_blocks(); }
  int refcount(int block) const { return refcount_[block]; }

  // Blocks that hold `positions` positions.
  int BlocksFor(int positions) const {
    return (positions + block_size_ - 1) / block_size_;
  }

  // Free blocks Reserve would take: the blocks missing to hold `positions`
  // positions, plus a private copy of each shared block that positions
  // [write_from, positions) fall in.
  int ReserveCost(const BlockTable& table, int write_from,
                  int positions) const;

  // Makes `table` hold `positions` positions, ready for writes to
  // [write_from, positions): appends new blocks and replaces each shared
  // block in the written range by a private one, whose copy is appended to
  // `copies` (to run before the write). Returns false, changing nothing, when
  // fewer than ReserveCost blocks are free.
  bool Reserve(BlockTable& table, int write_from, int positions,
               std::vector<BlockCopy>& copies);

  // A table on the same blocks (one more reference to each).
  BlockTable Share(const BlockTable& table);

  // Drops the table's references (a block is free when none is left) and
  // empties it.
  void Release(BlockTable& table);

 private:
  int Take();

  const int block_size_;
  std::vector<int> refcount_;  // per block
  std::vector<int> free_;      // free block ids, a stack
};

}  // namespace iblip::server
