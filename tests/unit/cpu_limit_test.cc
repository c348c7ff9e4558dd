#include "common/cpu_limit.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace iblip {
namespace {

namespace fs = std::filesystem;

TEST(CpuLimitTest, ParsesCgroupV2CpuMax) {
  EXPECT_DOUBLE_EQ(*ParseCgroupV2CpuMax("200000 100000\n"), 2.0);
  EXPECT_DOUBLE_EQ(*ParseCgroupV2CpuMax("150000 100000"), 1.5);
  EXPECT_FALSE(ParseCgroupV2CpuMax("max 100000\n"));  // no limit
  EXPECT_FALSE(ParseCgroupV2CpuMax(""));
  EXPECT_FALSE(ParseCgroupV2CpuMax("200000"));
  EXPECT_FALSE(ParseCgroupV2CpuMax("0 100000"));
  EXPECT_FALSE(ParseCgroupV2CpuMax("100000 0"));
  EXPECT_FALSE(ParseCgroupV2CpuMax("-5 100000"));
  EXPECT_FALSE(ParseCgroupV2CpuMax("2x 100000"));
  EXPECT_FALSE(ParseCgroupV2CpuMax("1 2 3"));
}

TEST(CpuLimitTest, ParsesCgroupV1Quota) {
  EXPECT_DOUBLE_EQ(*ParseCgroupV1CpuQuota("400000\n", "100000\n"), 4.0);
  EXPECT_FALSE(ParseCgroupV1CpuQuota("-1\n", "100000\n"));  // no limit
  EXPECT_FALSE(ParseCgroupV1CpuQuota("400000", "0"));
  EXPECT_FALSE(ParseCgroupV1CpuQuota("lots", "100000"));
}

TEST(CpuLimitTest, ParsesProcSelfCgroupSkippingMalformedLines) {
  auto lines = ParseProcCgroup(
      "12:cpu,cpuacct:/kubepods/pod1/c1\n"
      "1:name=systemd:/x\n"
      "0::/kubepods.slice/pod2/c2/\n"
      "garbage\n"
      "x:cpu:/y\n"
      "3:cpu:relative\n"
      "4:cpu:/a:b\n");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_FALSE(lines[0].unified);
  EXPECT_EQ(lines[0].controllers, (std::vector<std::string>{"cpu", "cpuacct"}));
  EXPECT_EQ(lines[0].path, "/kubepods/pod1/c1");
  EXPECT_FALSE(lines[1].unified);
  EXPECT_TRUE(lines[2].unified);
  EXPECT_EQ(lines[2].path, "/kubepods.slice/pod2/c2");  // trailing '/' gone
  EXPECT_EQ(lines[3].path, "/a:b");  // a ':' in the path is kept
}

// A fake root with /proc/self/cgroup and cgroup files, removed afterwards.
class FakeRoot {
 public:
  FakeRoot() {
    root_ =
        fs::path(testing::TempDir()) /
        ("cpu_limit_" +
         std::string(
             testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  ~FakeRoot() { fs::remove_all(root_); }
  void Write(const std::string& relative, const std::string& text) {
    const fs::path path = root_ / relative;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  std::string path() const { return root_.string(); }

 private:
  fs::path root_;
};

TEST(CpuLimitTest, CgroupV2WithItsOwnNamespaceReadsTheMountRoot) {
  FakeRoot root;
  root.Write("proc/self/cgroup", "0::/\n");
  root.Write("sys/fs/cgroup/cpu.max", "200000 100000\n");
  EXPECT_DOUBLE_EQ(*CgroupCpuQuota(root.path()), 2.0);
}

TEST(CpuLimitTest, CgroupV2TakesTheSmallestQuotaOfTheCgroupAndItsAncestors) {
  FakeRoot root;
  root.Write("proc/self/cgroup", "0::/kubepods/pod1/c1\n");
  root.Write("sys/fs/cgroup/kubepods/cpu.max", "max 100000\n");
  root.Write("sys/fs/cgroup/kubepods/pod1/cpu.max", "300000 100000\n");
  root.Write("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "max 100000\n");
  EXPECT_DOUBLE_EQ(*CgroupCpuQuota(root.path()), 3.0);
  root.Write("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "50000 100000\n");
  EXPECT_DOUBLE_EQ(*CgroupCpuQuota(root.path()), 0.5);
}

TEST(CpuLimitTest, CgroupV1ReadsTheCpuControllerMount) {
  FakeRoot root;
  root.Write("proc/self/cgroup",
             "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n");
  // Docker mounts the container's own cgroup at the hierarchy's root.
  root.Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "250000\n");
  root.Write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  EXPECT_DOUBLE_EQ(*CgroupCpuQuota(root.path()), 2.5);
}

TEST(CpuLimitTest, NoQuotaAnywhereMeansNoLimit) {
  FakeRoot root;
  root.Write("proc/self/cgroup", "0::/user.slice\n");
  root.Write("sys/fs/cgroup/user.slice/cpu.max", "max 100000\n");
  EXPECT_FALSE(CgroupCpuQuota(root.path()));
  FakeRoot empty;
  EXPECT_FALSE(CgroupCpuQuota(empty.path()));
}

TEST(CpuLimitTest, WithoutProcTheMountRootsStillCount) {
  FakeRoot root;
  root.Write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "100000");
  root.Write("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000");
  EXPECT_DOUBLE_EQ(*CgroupCpuQuota(root.path()), 1.0);
}

TEST(CpuLimitTest, AvailableCpusIsPositiveAndDescribed) {
  std::string description;
  const int cpus = AvailableCpus(&description);
  EXPECT_GE(cpus, 1);
  EXPECT_EQ(description.rfind(std::to_string(cpus) + " (", 0), 0u)
      << description;
}

}  // namespace
}  // namespace iblip
