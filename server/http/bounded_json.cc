#include "server/http/bounded_json.h"

#include "absl/strings/str_cat.h"
#include "server/http/http_errors.h"

namespace iblip::server::http {
namespace {

using nlohmann::json;

// Counts values and nesting as the parser reads them; returning false stops
// the parse at once.
class LimitChecker final : public nlohmann::json_sax<json> {
 public:
  explicit LimitChecker(const JsonLimits& limits) : limits_(limits) {}

  bool null() override { return Value(); }
  bool boolean(bool) override { return Value(); }
  bool number_integer(number_integer_t) override { return Value(); }
  bool number_unsigned(number_unsigned_t) override { return Value(); }
  bool number_float(number_float_t, const string_t&) override {
    return Value();
  }
  bool string(string_t&) override { return Value(); }
  bool binary(binary_t&) override { return Value(); }
  bool key(string_t&) override { return true; }
  bool start_object(std::size_t) override { return Open(); }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override { return Open(); }
  bool end_array() override { return Close(); }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception&) override {
    error_ = absl::StrCat("not valid JSON (error at byte ", position, ")");
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool Value() {
    if (++elements_ <= limits_.max_elements) return true;
    error_ = absl::StrCat("more than ", limits_.max_elements,
                          " JSON values (http.max_json_elements)");
    return false;
  }
  bool Open() {
    if (++depth_ > limits_.max_depth) {
      error_ = absl::StrCat("JSON nested deeper than ", limits_.max_depth,
                            " levels (http.max_json_depth)");
      return false;
    }
    return Value();
  }
  bool Close() {
    --depth_;
    return true;
  }

  const JsonLimits limits_;
  uint64_t elements_ = 0;
  uint32_t depth_ = 0;
  std::string error_;
};

}  // namespace

absl::StatusOr<json> ParseBoundedJson(absl::string_view text,
                                      const JsonLimits& limits,
                                      absl::string_view field) {
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  LimitChecker checker(limits);
  if (!json::sax_parse(begin, end, &checker)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ",
        checker.error().empty() ? "not valid JSON" : checker.error()));
  }
  json document = json::parse(begin, end, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded())  // unreachable after the first pass
    return absl::InvalidArgumentError(absl::StrCat(field, ": not valid JSON"));
  return document;
}

std::string DumpJson(const json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false,
                    json::error_handler_t::replace);
}

std::string DescribeJson(const json& value) {
  switch (value.type()) {
    case json::value_t::object:
      return absl::StrCat("an object of ", value.size(), " members");
    case json::value_t::array:
      return absl::StrCat("an array of ", value.size(), " values");
    case json::value_t::string:
      return DumpJson(json(ClientText(value.get_ref<const std::string&>())));
    default:
      return ClientText(DumpJson(value));
  }
}

}  // namespace iblip::server::http
