#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace iblip::client {

// What one benchmark request measured (client side).
struct RequestSample {
  std::string code = "OK";  // gRPC status code name
  double ttft_s = 0;        // send to the first token
  double e2e_s = 0;         // send to the end of the stream
  // Inter-token latencies: within each returned sequence, the time between
  // consecutive messages that carried its tokens.
  std::vector<double> inter_token_s;
  int output_tokens = 0;
  // Tokens that arrived in the same message as an earlier token of their
  // sequence (the server merges deltas while a write is in flight); they
  // add no inter-token gap, so many of them mean the client fell behind.
  int coalesced_tokens = 0;
};

// A request's token arrivals as the client sees them, turned into its
// sample's timings. Each returned sequence (GenerateResponse.index) has its
// own clock: gaps are never taken between tokens of different sequences.
class TokenTimeline {
 public:
  // `count` tokens of sequence `index` arrived `at_s` after the request
  // was sent.
  void Add(uint32_t index, int count, double at_s);
  // Sets the sample's ttft_s, inter_token_s, output_tokens and
  // coalesced_tokens.
  void Fill(RequestSample& sample) const;

 private:
  std::map<uint32_t, double> last_arrival_s_;  // by sequence index
  std::vector<double> gaps_s_;
  double first_s_ = -1;
  int tokens_ = 0;
  int coalesced_ = 0;
};

// The benchmark's summary: throughput, latency percentiles (over successful
// requests) and errors by gRPC code. Pure: no I/O, unit-tested.
class LoadReport {
 public:
  struct Percentiles {
    double p50 = 0, p90 = 0, p99 = 0, mean = 0, max = 0;
    int count = 0;
  };
  LoadReport(const std::vector<RequestSample>& samples, double wall_s);

  // Linear interpolation between closest ranks (numpy's default).
  static Percentiles Summarize(std::vector<double> values);

  int requests() const { return requests_; }
  int succeeded() const { return succeeded_; }
  double requests_per_s() const { return requests_per_s_; }
  double output_tokens_per_s() const { return output_tokens_per_s_; }
  const Percentiles& ttft() const { return ttft_; }
  const Percentiles& inter_token() const { return inter_token_; }
  const Percentiles& e2e() const { return e2e_; }
  const std::map<std::string, int>& errors() const { return errors_; }
  int coalesced_tokens() const { return coalesced_tokens_; }

  std::string Table() const;  // for people
  std::string Json() const;   // one object, for scripts

 private:
  int requests_ = 0;
  int succeeded_ = 0;
  int output_tokens_ = 0;
  int coalesced_tokens_ = 0;
  double wall_s_ = 0;
  double requests_per_s_ = 0;
  double output_tokens_per_s_ = 0;
  Percentiles ttft_, inter_token_, e2e_;
  std::map<std::string, int> errors_;
};

}  // namespace iblip::client
