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
// for the next forward pass, instead of being unmapped (glibc's default for
// a first block this size) and faulted in again.
TEST(HeapPolicyTest, AFreedLargeBlockStaysInTheProcess) {
  ASSERT_TRUE(RetainFreedHeapMemory(1024).ok());
  constexpr size_t kBlock = 8 << 20;
  const size_t held_before = mallinfo2().fordblks;
  void* block = std::malloc(kBlock);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBlock);
  std::free(block);
  EXPECT_GE(mallinfo2().fordblks, held_before + kBlock);
}

}  // namespace
}  // namespace iblip::server
