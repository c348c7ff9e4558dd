#pragma once

#include <map>
#include <string>
#include <vector>

namespace iblip::client {

// What one benchmark request measured (client side).
struct RequestSample {
  std::string code = "OK";            // gRPC status code name
  double ttft_s = 0;                  // send to the first token
  double e2e_s = 0;                   // send to the end of the stream
  std::vector<double> inter_token_s;  // gaps between tokens of sequence 0
  int output_tokens = 0;
};

// The benchmark's summary: throughput, latency percentiles (over successful
// requests) and errors by gRPC code. Pure: no I/O, unit-tested.
class LoadReport {
 public:
  struct Percentiles {
    double p50 = 0, p90 = 0, p99 = 0, mean = 0;
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

  std::string Table() const;  // for people
  std::string Json() const;   // one object, for scripts

 private:
  int requests_ = 0;
  int succeeded_ = 0;
  int output_tokens_ = 0;
  double wall_s_ = 0;
  double requests_per_s_ = 0;
  double output_tokens_per_s_ = 0;
  Percentiles ttft_, inter_token_, e2e_;
  std::map<std::string, int> errors_;
};

}  // namespace iblip::client
