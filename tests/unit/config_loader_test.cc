#include "config/config_loader.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <tuple>

#include "common/device.h"
#include "config/config_options.h"

namespace iblip::config {
namespace {

const std::string kShippedConfig =
    std::string(IBLIP_SOURCE_DIR) + "/config/server.yaml";

TEST(ConfigLoaderTest, EmptyConfigGetsEveryDefault) {
  auto config = WithDefaults(ServerConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host(), "0.0.0.0");
  EXPECT_EQ(config->port(), 50051u);
  EXPECT_EQ(config->metrics_port(), 9090u);
  EXPECT_TRUE(config->metrics_enabled());
  EXPECT_EQ(config->runtime().device(), "cpu");
  EXPECT_EQ(config->limits().default_max_new_tokens(), 64u);
  EXPECT_EQ(config->limits().max_request_bytes(), (20u << 20) + (1u << 20));
  EXPECT_FALSE(config->limits().has_max_prompt_tokens());  // model-dependent
  EXPECT_EQ(config->scheduler().max_queue_size(), 256u);
  EXPECT_EQ(config->cache().vision_cache_mib(), 256u);
  EXPECT_EQ(config->logging().format(), "text");
  EXPECT_TRUE(ParseServerConfig("").ok());
}

TEST(ConfigLoaderTest, ParsesYamlAndKeepsSetValues) {
  auto parsed = ParseServerConfig(R"(
port: 7000
metrics_enabled: false
runtime:
  num_threads: 2
limits: {max_new_tokens: 100, default_max_new_tokens: 10}
logging:
  format: json
)");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto config = WithDefaults(*parsed);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->port(), 7000u);
  EXPECT_FALSE(config->metrics_enabled());
  EXPECT_EQ(config->runtime().num_threads(), 2u);
  EXPECT_EQ(config->limits().max_new_tokens(), 100u);
  EXPECT_EQ(config->logging().format(), "json");
}

void ExpectError(const std::string& yaml, const std::string& needle) {
  auto parsed = ParseServerConfig(yaml, "server.yaml");
  ASSERT_FALSE(parsed.ok()) << yaml;
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find(needle), std::string::npos)
      << parsed.status();
}

TEST(ConfigLoaderTest, MistakesNameTheLineAndTheOption) {
  ExpectError("port: 1\nprot: 2\n", "server.yaml:2: unknown option 'prot'");
  ExpectError("scheduler:\n  max_queue: 3\n",
              "unknown option 'scheduler.max_queue'");
  ExpectError("port: many\n", "server.yaml:1: port must be uint32, got 'many'");
  ExpectError("port: -1\n", "port must be uint32");
  ExpectError("metrics_enabled: perhaps\n", "metrics_enabled must be bool");
  ExpectError("runtime: 3\n", "runtime must be a mapping");
  ExpectError("port: [1, 2]\n", "port must be a single uint32 value");
  ExpectError("port: {\n", "server.yaml:");  // not YAML at all
  ExpectError("- port\n", "top level must be a mapping");
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
  EXPECT_NE(WithDefaults(bad_port).status().message().find("port"),
            std::string::npos);
  ServerConfig bad_heap;
  bad_heap.mutable_runtime()->set_heap_retain_mib(4096);
  EXPECT_NE(
      WithDefaults(bad_heap).status().message().find("runtime.heap_retain_mib"),
      std::string::npos);
  for (uint32_t stretch : {0u, 99u, 10001u}) {
    ServerConfig bad_stretch;
    bad_stretch.mutable_scheduler()->set_max_step_stretch_percent(stretch);
    EXPECT_NE(WithDefaults(bad_stretch)
                  .status()
                  .message()
                  .find("scheduler.max_step_stretch_percent"),
              std::string::npos)
        << stretch;
  }
  ServerConfig edge_stretch;
  edge_stretch.mutable_scheduler()->set_max_step_stretch_percent(100);
  EXPECT_TRUE(WithDefaults(edge_stretch).ok());
  ServerConfig bad_format;
  bad_format.mutable_logging()->set_format("xml");
  EXPECT_NE(WithDefaults(bad_format).status().message().find("logging.format"),
            std::string::npos);
}

TEST(DeviceTest, ParsesCpuCudaAndCudaN) {
  for (const auto& [text, cuda, index] :
       {std::tuple<const char*, bool, int>{"cpu", false, 0},
        {"cuda", true, 0},
        {"cuda:0", true, 0},
        {"cuda:3", true, 3},
        {"cuda:1023", true, 1023}}) {
    auto spec = ParseDevice(text);
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status();
    EXPECT_EQ(spec->cuda, cuda) << text;
    EXPECT_EQ(spec->index, index) << text;
  }
  EXPECT_EQ(ParseDevice("cuda")->ToString(), "cuda:0");
  EXPECT_EQ(ParseDevice("cpu")->ToString(), "cpu");
}

TEST(DeviceTest, RefusesAnythingElseNamingTheOption) {
  for (const char* text :
       {"", "gpu", "CPU", "Cuda", " cuda", "cuda ", "cuda:", "cuda:x",
        "cuda:-1", "cuda:+1", "cuda:01", "cuda:1024", "cuda:99999999999",
        "cuda:0:1", "cuda:1.5", "cpu:0", "mps", "cuda,cpu"}) {
    auto spec = ParseDevice(text);
    ASSERT_FALSE(spec.ok()) << "'" << text << "'";
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(spec.status().message().find("runtime.device"), std::string::npos)
        << spec.status();
  }
}

TEST(DeviceTest, WithDefaultsValidatesAndSpellsTheDeviceOneWay) {
  ServerConfig config;
  config.mutable_runtime()->set_device("cuda");
  auto resolved = WithDefaults(config);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->runtime().device(), "cuda:0");

  auto parsed =
      ParseServerConfig("runtime:\n  device: cuda:x\n", "server.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto refused = WithDefaults(*parsed);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("runtime.device"),
            std::string::npos);
  EXPECT_NE(refused.status().message().find("cuda:x"), std::string::npos);
}

TEST(ConfigLoaderTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadServerConfig("/nonexistent/server.yaml").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ConfigOptionsTest, EveryOptionHasDocsAFlagAndADefaultThatParses) {
  ASSERT_GT(AllConfigOptions().size(), 25u);
  for (const ConfigOption& option : AllConfigOptions()) {
    EXPECT_FALSE(option.doc.empty()) << option.path;
    EXPECT_EQ(FindOptionByFlag(option.flag), &option);
    EXPECT_EQ(option.flag.find('_'), std::string::npos) << option.flag;
    if (option.default_value.empty()) continue;
    ServerConfig config;
    EXPECT_TRUE(SetOption(config, option, option.default_value, "d").ok())
        << option.path;
    EXPECT_EQ(OptionValue(config, option), option.default_value);
  }
  EXPECT_EQ(FindOptionByFlag("scheduler.max-queue-size")->path,
            "scheduler.max_queue_size");
}

// config/server.yaml is the documentation: it must set every option to its
// real default (or mention the model-dependent ones), and parse.
TEST(ConfigOptionsTest, ShippedConfigDocumentsEveryOptionWithItsDefault) {
  auto config = LoadServerConfig(kShippedConfig);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(WithDefaults(*config).ok());
  std::ifstream file(kShippedConfig);
  std::stringstream text;
  text << file.rdbuf();
  for (const ConfigOption& option : AllConfigOptions()) {
    if (option.default_value.empty()) {
      // Unset by default: shown as "" or, when the model decides, commented.
      const std::string key = option.path.substr(option.path.rfind('.') + 1);
      const bool shown_empty =
          IsOptionSet(*config, option) && OptionValue(*config, option).empty();
      EXPECT_TRUE(shown_empty ||
                  text.str().find("# " + key + ":") != std::string::npos)
          << option.path << " is not documented in config/server.yaml";
      continue;
    }
    EXPECT_TRUE(IsOptionSet(*config, option))
        << option.path << " is missing from config/server.yaml";
    EXPECT_EQ(OptionValue(*config, option), option.default_value)
        << option.path;
  }
}

}  // namespace
}  // namespace iblip::config
