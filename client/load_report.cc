#include "client/load_report.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace iblip::client {

void TokenTimeline::Add(uint32_t index, int count, double at_s) {
  if (count <= 0) return;
  if (first_s_ < 0) first_s_ = at_s;
  auto [last, first_of_sequence] = last_arrival_s_.try_emplace(index, at_s);
  if (!first_of_sequence) {
    gaps_s_.push_back(at_s - last->second);
    last->second = at_s;
  }
  tokens_ += count;
  coalesced_ += count - 1;
}

void TokenTimeline::Fill(RequestSample& sample) const {
  sample.ttft_s = first_s_ < 0 ? 0 : first_s_;
  sample.inter_token_s = gaps_s_;
  sample.output_tokens = tokens_;
  sample.coalesced_tokens = coalesced_;
}

LoadReport::Percentiles LoadReport::Summarize(std::vector<double> values) {
  Percentiles p;
  p.count = static_cast<int>(values.size());
  if (values.empty()) return p;
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    const double rank = q * static_cast<double>(values.size() - 1);
    const size_t low = static_cast<size_t>(std::floor(rank));
    const size_t high = std::min(low + 1, values.size() - 1);
    return values[low] + (values[high] - values[low]) * (rank - low);
  };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p99 = at(0.99);
  p.max = values.back();
  p.mean = std::accumulate(values.begin(), values.end(), 0.0) /
           static_cast<double>(values.size());
  return p;
}

LoadReport::LoadReport(const std::vector<RequestSample>& samples, double wall_s)
    : requests_(static_cast<int>(samples.size())), wall_s_(wall_s) {
  std::vector<double> ttft, itl, e2e;
  for (const RequestSample& s : samples) {
    if (s.code != "OK") {
      ++errors_[s.code];
      continue;
    }
    ++succeeded_;
    output_tokens_ += s.output_tokens;
    coalesced_tokens_ += s.coalesced_tokens;
    if (s.output_tokens > 0) ttft.push_back(s.ttft_s);
    e2e.push_back(s.e2e_s);
    itl.insert(itl.end(), s.inter_token_s.begin(), s.inter_token_s.end());
  }
  ttft_ = Summarize(std::move(ttft));
  inter_token_ = Summarize(std::move(itl));
  e2e_ = Summarize(std::move(e2e));
  if (wall_s > 0) {
    requests_per_s_ = succeeded_ / wall_s;
    output_tokens_per_s_ = output_tokens_ / wall_s;
  }
}

std::string LoadReport::Table() const {
  std::string out = absl::StrFormat(
      "requests %d (ok %d) in %.2f s: %.2f req/s, %.1f output tok/s\n",
      requests_, succeeded_, wall_s_, requests_per_s_, output_tokens_per_s_);
  if (coalesced_tokens_ > 0) {
    out += absl::StrFormat(
        "%d tokens arrived in one message with an earlier token of their "
        "sequence (the client fell behind)\n",
        coalesced_tokens_);
  }
  out += absl::StrFormat("%-22s %10s %10s %10s %10s %10s\n", "latency (ms)",
                         "p50", "p90", "p99", "mean", "max");
  for (const auto& [name, p] : {std::pair<const char*, const Percentiles&>{
                                    "time to first token", ttft_},
                                {"inter-token", inter_token_},
                                {"end to end", e2e_}}) {
    out += absl::StrFormat("%-22s %10.1f %10.1f %10.1f %10.1f %10.1f\n",
                           name, p.p50 * 1e3, p.p90 * 1e3, p.p99 * 1e3,
                           p.mean * 1e3, p.max * 1e3);
  }
  if (errors_.empty()) {
    out += "errors: none\n";
  } else {
    out += "errors:";
    for (const auto& [code, count] : errors_)
      out += absl::StrFormat(" %s=%d", code, count);
    out += "\n";
  }
  return out;
}

std::string LoadReport::Json() const {
  auto percentiles = [](const Percentiles& p) {
    return nlohmann::json{{"p50_ms", p.p50 * 1e3},
                          {"p90_ms", p.p90 * 1e3},
                          {"p99_ms", p.p99 * 1e3},
                          {"mean_ms", p.mean * 1e3},
                          {"max_ms", p.max * 1e3},
                          {"count", p.count}};
  };
  nlohmann::json report = {{"requests", requests_},
                           {"succeeded", succeeded_},
                           {"wall_s", wall_s_},
                           {"requests_per_s", requests_per_s_},
                           {"output_tokens", output_tokens_},
                           {"output_tokens_per_s", output_tokens_per_s_},
                           {"coalesced_tokens", coalesced_tokens_},
                           {"time_to_first_token", percentiles(ttft_)},
                           {"inter_token_latency", percentiles(inter_token_)},
                           {"end_to_end_latency", percentiles(e2e_)},
                           {"errors", errors_}};
  return report.dump();
}

}  // namespace iblip::client
