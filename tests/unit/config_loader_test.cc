#include "config/config_loader.h"

#include <gtest/gtest.h>

#include <fstream>

namespace iblip::config {
namespace {

TEST(ConfigLoaderTest, EmptyConfigGetsEveryDefault) {
  auto config = WithDefaults(ServerConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host(), "0.0.0.0");
  EXPECT_EQ(config->port(), 50051u);
  EXPECT_EQ(config->metrics_port(), 9090u);
  EXPECT_TRUE(config->metrics_enabled());
  EXPECT_EQ(config->runtime().device(), "cpu");
  EXPECT_EQ(config->limits().default_max_new_tokens(), 64u);
  EXPECT_EQ(config->scheduler().max_queue_size(), 256u);
}

TEST(ConfigLoaderTest, ParsesTextFormatAndKeepsSetValues) {
  auto parsed = ParseServerConfig(R"(
      port: 7000
      runtime { num_threads: 2 }
      limits { max_new_tokens: 100 default_max_new_tokens: 10 })");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto config = WithDefaults(*parsed);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->port(), 7000u);
  EXPECT_EQ(config->runtime().num_threads(), 2u);
  EXPECT_EQ(config->limits().max_new_tokens(), 100u);
}

TEST(ConfigLoaderTest, UnknownFieldIsAnErrorWithItsLine) {
  auto parsed = ParseServerConfig("port: 1\nprot: 2\n");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find("line 2"), std::string::npos)
      << parsed.status();
}

TEST(ConfigLoaderTest, OutOfRangeValuesNameTheField) {
  ServerConfig config;
  config.mutable_limits()->set_max_new_tokens(10);
  config.mutable_limits()->set_default_max_new_tokens(20);
  auto resolved = WithDefaults(config);
  ASSERT_FALSE(resolved.ok());
  EXPECT_NE(resolved.status().message().find("limits.default_max_new_tokens"),
            std::string::npos);

  ServerConfig bad_port;
  bad_port.set_port(70000);
  EXPECT_FALSE(WithDefaults(bad_port).ok());
}

TEST(ConfigLoaderTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadServerConfig("/nonexistent/server.pbtxt").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ConfigLoaderTest, ShippedExampleConfigIsValid) {
  auto config =
      LoadServerConfig(std::string(IBLIP_SOURCE_DIR) + "/config/server.pbtxt");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(WithDefaults(*config).ok());
}

}  // namespace
}  // namespace iblip::config
