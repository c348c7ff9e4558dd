#include "client/load_report.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "client/workload.h"
#include "nlohmann/json.hpp"

namespace iblip::client {
namespace {

TEST(LoadReportTest, PercentilesInterpolateLikeNumpy) {
  auto p = LoadReport::Summarize({4, 1, 3, 2, 5});
  EXPECT_DOUBLE_EQ(p.p50, 3);
  EXPECT_DOUBLE_EQ(p.p90, 4.6);
  EXPECT_DOUBLE_EQ(p.p99, 4.96);
  EXPECT_DOUBLE_EQ(p.mean, 3);
  EXPECT_DOUBLE_EQ(p.max, 5);
  EXPECT_EQ(p.count, 5);
  EXPECT_EQ(LoadReport::Summarize({}).count, 0);
}

TEST(LoadReportTest, ThroughputCountsSuccessesAndErrorsAreByCode) {
  RequestSample ok;
  ok.ttft_s = 0.1;
  ok.e2e_s = 0.5;
  ok.output_tokens = 10;
  ok.inter_token_s = {0.01, 0.02};
  RequestSample busy;
  busy.code = "RESOURCE_EXHAUSTED";
  LoadReport report({ok, ok, busy}, /*wall_s=*/2.0);
  EXPECT_EQ(report.requests(), 3);
  EXPECT_EQ(report.succeeded(), 2);
  EXPECT_DOUBLE_EQ(report.requests_per_s(), 1.0);
  EXPECT_DOUBLE_EQ(report.output_tokens_per_s(), 10.0);
  EXPECT_EQ(report.inter_token().count, 4);
  EXPECT_EQ(report.errors().at("RESOURCE_EXHAUSTED"), 1);
  auto json = nlohmann::json::parse(report.Json());
  EXPECT_EQ(json["errors"]["RESOURCE_EXHAUSTED"], 1);
  EXPECT_DOUBLE_EQ(json["time_to_first_token"]["p50_ms"].get<double>(), 100);
  EXPECT_NE(report.Table().find("RESOURCE_EXHAUSTED=1"), std::string::npos);
}

TEST(TokenTimelineTest, GapsAreTakenWithinEachSequenceBetweenMessages) {
  TokenTimeline timeline;
  timeline.Add(/*index=*/0, /*count=*/1, /*at_s=*/0.10);
  timeline.Add(1, 1, 0.15);
  timeline.Add(0, 2, 0.30);  // two tokens in one message: one gap
  timeline.Add(0, 0, 0.32);  // the final message carries no tokens
  timeline.Add(1, 1, 0.40);
  RequestSample sample;
  timeline.Fill(sample);
  EXPECT_DOUBLE_EQ(sample.ttft_s, 0.10);
  ASSERT_EQ(sample.inter_token_s.size(), 2u);
  EXPECT_NEAR(sample.inter_token_s[0], 0.20, 1e-12);  // sequence 0
  EXPECT_NEAR(sample.inter_token_s[1], 0.25, 1e-12);  // sequence 1
  EXPECT_EQ(sample.output_tokens, 5);
  EXPECT_EQ(sample.coalesced_tokens, 1);

  RequestSample empty;
  TokenTimeline().Fill(empty);
  EXPECT_EQ(empty.output_tokens, 0);
  EXPECT_TRUE(empty.inter_token_s.empty());
}

TEST(LoadReportTest, CountsCoalescedTokensAndReportsTheLargestGap) {
  RequestSample a;
  a.output_tokens = 3;
  a.inter_token_s = {0.01, 0.5};
  a.coalesced_tokens = 1;
  LoadReport report({a}, 1.0);
  EXPECT_EQ(report.coalesced_tokens(), 1);
  EXPECT_DOUBLE_EQ(report.inter_token().max, 0.5);
  auto json = nlohmann::json::parse(report.Json());
  EXPECT_EQ(json["coalesced_tokens"], 1);
  EXPECT_DOUBLE_EQ(json["inter_token_latency"]["max_ms"].get<double>(), 500);
  EXPECT_NE(report.Table().find("1 tokens arrived in one message"),
            std::string::npos);
}

TEST(WorkloadTest, ReadsJsonLinesWithRelativeImagesAndParameters) {
  // Per process: other checkouts may run this test at the same time.
  const auto dir = std::filesystem::temp_directory_path() /
                   ("iblip-workload-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "a.png") << "fake-image";
  std::ofstream(dir / "w.jsonl")
      << R"({"image": "a.png", "prompt": "hi", "parameters": {"max_new_tokens": 7, "temperature": 0.5}})"
      << "\n\n"
      << R"({"image": "a.png", "priority": "PRIORITY_HIGH"})"
      << "\n";
  auto workload = LoadWorkload((dir / "w.jsonl").string());
  ASSERT_TRUE(workload.ok()) << workload.status();
  ASSERT_EQ(workload->size(), 2u);
  EXPECT_EQ((*workload)[0].images(0).data(), "fake-image");
  EXPECT_EQ((*workload)[0].parameters().max_new_tokens(), 7u);
  EXPECT_EQ((*workload)[1].priority(), v1::PRIORITY_HIGH);

  std::ofstream(dir / "bad.jsonl")
      << R"({"image": "a.png", "parameters": {"max_new_tokenz": 1}})";
  auto bad = LoadWorkload((dir / "bad.jsonl").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.jsonl:1"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(WorkloadTest, GeneratedWorkloadIsExactAndReproducible) {
  auto a = GeneratedWorkload("img", 20, 4, 9, 3);
  auto b = GeneratedWorkload("img", 20, 4, 9, 3);
  ASSERT_EQ(a.size(), 20u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].parameters().max_new_tokens(),
              b[i].parameters().max_new_tokens());
    EXPECT_EQ(a[i].parameters().min_new_tokens(),
              a[i].parameters().max_new_tokens());
    EXPECT_GE(a[i].parameters().max_new_tokens(), 4u);
    EXPECT_LE(a[i].parameters().max_new_tokens(), 9u);
  }
}

}  // namespace
}  // namespace iblip::client
