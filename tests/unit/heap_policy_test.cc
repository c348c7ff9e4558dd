#include "server/heap_policy.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "gtest/gtest.h"

namespace iblip::server {
namespace {

TEST(HeapPolicyTest, OutOfRangeIsRefusedNamingTheOption) {
  absl::Status status = RetainFreedHeapMemory(4096);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("runtime.heap_retain_mib"),
            std::string::npos);
  EXPECT_TRUE(RetainFreedHeapMemory(0).ok());  // glibc's defaults
}

// What the policy is for: a freed activation-sized block stays in the heap
// for the next forward pass, instead of being mapped for itself (glibc's
// default for a first block this size) and unmapped when freed. The block
// may reuse free space the heap already had, so the check is that it was
// not mapped and that the heap holds at least its size free afterwards.
TEST(HeapPolicyTest, AFreedLargeBlockStaysInTheProcess) {
  ASSERT_TRUE(RetainFreedHeapMemory(1024).ok());
  constexpr size_t kBlock = 8 << 20;
  const struct mallinfo2 before = mallinfo2();
  ASSERT_LT(before.fordblks, kBlock) << "the heap already holds that much free";
  void* block = std::malloc(kBlock);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBlock);
  EXPECT_EQ(mallinfo2().hblkhd, before.hblkhd) << "the block was mapped for itself";
  std::free(block);
  EXPECT_GE(mallinfo2().fordblks, kBlock);
}

}  // namespace
}  // namespace iblip::server
