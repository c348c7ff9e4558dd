#include "common/command_line.h"

#include <gtest/gtest.h>

#include <vector>

namespace iblip {
namespace {

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args) {
  std::vector<char*> argv;
  static std::string program = "prog";
  argv.push_back(program.data());
  for (std::string& a : args) argv.push_back(a.data());
  return CommandLine::Parse(static_cast<int>(argv.size()), argv.data(),
                            {"json"});
}

TEST(CommandLineTest, ParsesCommandValuesSwitchesAndRepeats) {
  auto line = Parse({"generate", "--max-new-tokens", "7", "--json", "--stop=a",
                     "--stop", "b"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(line->command(), "generate");
  EXPECT_EQ(*line->Get("max-new-tokens"), "7");
  EXPECT_TRUE(line->Has("json"));
  EXPECT_EQ(line->GetAll("stop"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(**line->GetInt("max-new-tokens"), 7);
}

TEST(CommandLineTest, ReportsMissingValuesBadNumbersAndUnknownFlags) {
  EXPECT_FALSE(Parse({"generate", "--prompt"}).ok());
  auto line = Parse({"--top-p", "abc", "--bogus", "1"});
  ASSERT_TRUE(line.ok());
  auto value = line->GetDouble("top-p");
  ASSERT_FALSE(value.ok());
  EXPECT_NE(value.status().message().find("--top-p"), std::string::npos);
  EXPECT_EQ(line->Unknown({"top-p"}), std::vector<std::string>{"bogus"});
}

TEST(CommandLineTest, CollectsPositionalArgumentsAfterTheCommand) {
  auto line = Parse({"preprocess", "--model", "m", "image.png", "--json"});
  ASSERT_TRUE(line.ok());
  EXPECT_EQ(line->command(), "preprocess");
  EXPECT_EQ(line->positional(), std::vector<std::string>{"image.png"});
}

}  // namespace
}  // namespace iblip
