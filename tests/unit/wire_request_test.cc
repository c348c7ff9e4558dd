#include "server/grpc/wire_request.h"

#include <gtest/gtest.h>

#include <string>

namespace iblip::server {
namespace {

// A serialized request whose `placeholder` bytes are swapped for `bytes`
// (same length), as a client that skips protobuf's UTF-8 check would send.
std::string WireWith(v1::GenerateRequest request,
                     const std::string& placeholder, const std::string& bytes) {
  std::string wire = request.SerializeAsString();
  const size_t at = wire.find(placeholder);
  EXPECT_NE(at, std::string::npos);
  EXPECT_EQ(placeholder.size(), bytes.size());
  return wire.replace(at, placeholder.size(), bytes);
}

v1::GenerateRequest Request() {
  v1::GenerateRequest request;
  request.add_images()->set_data("\x89PNG image bytes");
  request.set_prompt("what is this?");
  return request;
}

void ExpectInvalid(const std::string& wire, const std::string& message) {
  auto parsed = ParseGenerateRequest(wire);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed.status().message(), message);
}

TEST(WireRequestTest, ParsesAWellFormedRequest) {
  auto parsed = ParseGenerateRequest(Request().SerializeAsString());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->prompt(), "what is this?");
  EXPECT_EQ(parsed->images_size(), 1);
}

TEST(WireRequestTest, NamesTheStringThatIsNotUtf8) {
  auto request = Request();
  request.set_prompt("PROMPT");
  ExpectInvalid(WireWith(request, "PROMPT", "ab\xC3\x28zz"),
                "prompt: is not valid UTF-8");

  request = Request();
  request.set_request_id("REQID");
  ExpectInvalid(WireWith(request, "REQID",
                         "\xC0\xAF"
                         "abc"),
                "request_id: is not valid UTF-8");

  request = Request();
  request.mutable_parameters()->add_stop_sequences("fine");
  request.mutable_parameters()->add_stop_sequences("STOP");
  ExpectInvalid(WireWith(request, "STOP", "\xED\xA0\x80!"),
                "parameters.stop_sequences[1]: is not valid UTF-8");

  request = Request();
  request.add_images()->set_sha256("HASHHASH");
  ExpectInvalid(WireWith(request, "HASHHASH",
                         "ab\xFF\xFE"
                         "abcd"),
                "images[1].sha256: is not valid UTF-8");
}

TEST(WireRequestTest, MalformedBytesAreAnInvalidRequest) {
  const std::string truncated = Request().SerializeAsString().substr(0, 5);
  for (const std::string& wire :
       {truncated, std::string("\x0a\xff\xff\xff\xff\x0f", 6),
        std::string("\xff\xff\xff", 3)}) {
    auto parsed = ParseGenerateRequest(wire);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(parsed.status().message().substr(0, 9), "request: ");
  }
}

}  // namespace
}  // namespace iblip::server
