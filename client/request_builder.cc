#include "client/request_builder.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace iblip::client {

const char* const kGenerateFlags[] = {"image",
                                      "prompt",
                                      "max-new-tokens",
                                      "min-new-tokens",
                                      "temperature",
                                      "top-k",
                                      "top-p",
                                      "repetition-penalty",
                                      "length-penalty",
                                      "num-beams",
                                      "num-return-sequences",
                                      "stop",
                                      "seed",
                                      "early-stopping",
                                      "priority",
                                      "request-id",
                                      nullptr};

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(
        absl::StrCat("--image: cannot read '", path, "'"));
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

absl::StatusOr<uint32_t> NonNegative(const std::string& flag, long long value) {
  if (value < 0 || value > UINT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": must be >= 0, got ", value));
  }
  return static_cast<uint32_t>(value);
}

}  // namespace

absl::StatusOr<v1::GenerateRequest> BuildGenerateRequest(
    const CommandLine& line) {
  v1::GenerateRequest request;
  auto image = line.Get("image");
  if (!image) return absl::InvalidArgumentError("--image FILE is required");
  ASSIGN_OR_RETURN(*request.add_images()->mutable_data(), ReadFile(*image));
  request.set_prompt(line.Get("prompt").value_or(""));
  if (auto id = line.Get("request-id")) request.set_request_id(*id);
  if (auto priority = line.Get("priority")) {
    if (*priority == "low") {
      request.set_priority(v1::PRIORITY_LOW);
    } else if (*priority == "normal") {
      request.set_priority(v1::PRIORITY_NORMAL);
    } else if (*priority == "high") {
      request.set_priority(v1::PRIORITY_HIGH);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--priority: expected low, normal or high, got '", *priority, "'"));
    }
  }

  v1::GenerationParameters& p = *request.mutable_parameters();
  struct IntFlag {
    const char* name;
    void (v1::GenerationParameters::*set)(uint32_t);
  };
  for (const IntFlag& f :
       {IntFlag{"max-new-tokens",
                &v1::GenerationParameters::set_max_new_tokens},
        IntFlag{"min-new-tokens",
                &v1::GenerationParameters::set_min_new_tokens},
        IntFlag{"top-k", &v1::GenerationParameters::set_top_k},
        IntFlag{"num-beams", &v1::GenerationParameters::set_num_beams},
        IntFlag{"num-return-sequences",
                &v1::GenerationParameters::set_num_return_sequences}}) {
    ASSIGN_OR_RETURN(auto value, line.GetInt(f.name));
    if (value) {
      ASSIGN_OR_RETURN(uint32_t checked, NonNegative(f.name, *value));
      (p.*f.set)(checked);
    }
  }
  struct FloatFlag {
    const char* name;
    void (v1::GenerationParameters::*set)(float);
  };
  for (const FloatFlag& f :
       {FloatFlag{"temperature", &v1::GenerationParameters::set_temperature},
        FloatFlag{"top-p", &v1::GenerationParameters::set_top_p},
        FloatFlag{"repetition-penalty",
                  &v1::GenerationParameters::set_repetition_penalty},
        FloatFlag{"length-penalty",
                  &v1::GenerationParameters::set_length_penalty}}) {
    ASSIGN_OR_RETURN(auto value, line.GetDouble(f.name));
    if (value) (p.*f.set)(static_cast<float>(*value));
  }
  ASSIGN_OR_RETURN(auto seed, line.GetInt("seed"));
  if (seed) {
    if (*seed < 0) return absl::InvalidArgumentError("--seed: must be >= 0");
    p.set_seed(static_cast<uint64_t>(*seed));
  }
  for (const std::string& stop : line.GetAll("stop"))
    p.add_stop_sequences(stop);
  if (auto early = line.Get("early-stopping")) {
    if (*early != "true" && *early != "false") {
      return absl::InvalidArgumentError(
          "--early-stopping: expected true or false");
    }
    p.set_early_stopping(*early == "true");
  }
  return request;
}

}  // namespace iblip::client
