#include "config/config_options.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace iblip::config {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

void Collect(const Descriptor* message, const std::string& prefix,
             std::vector<const FieldDescriptor*> parents,
             std::vector<ConfigOption>& out) {
  for (int i = 0; i < message->field_count(); ++i) {
    const FieldDescriptor* field = message->field(i);
    std::vector<const FieldDescriptor*> chain = parents;
    chain.push_back(field);
    const std::string path = prefix + field->name();
    if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
      Collect(field->message_type(), path + ".", chain, out);
      continue;
    }
    ConfigOption option;
    option.path = path;
    option.flag = absl::StrReplaceAll(path, {{"_", "-"}});
    option.type = field->type_name();
    option.doc = field->options().GetExtension(doc);
    option.default_value = field->options().GetExtension(default_value);
    option.fields = std::move(chain);
    out.push_back(std::move(option));
  }
}

// The message holding the option's scalar (MutableHolder creates the
// messages on the way).
const Message* Holder(const ServerConfig& config, const ConfigOption& option) {
  const Message* message = &config;
  for (size_t i = 0; i + 1 < option.fields.size(); ++i) {
    message = &message->GetReflection()->GetMessage(*message, option.fields[i]);
  }
  return message;
}

Message* MutableHolder(ServerConfig& config, const ConfigOption& option) {
  Message* message = &config;
  for (size_t i = 0; i + 1 < option.fields.size(); ++i) {
    message =
        message->GetReflection()->MutableMessage(message, option.fields[i]);
  }
  return message;
}

}  // namespace

const std::vector<ConfigOption>& AllConfigOptions() {
  static const std::vector<ConfigOption>* options = [] {
    auto* all = new std::vector<ConfigOption>();
    Collect(ServerConfig::descriptor(), "", {}, *all);
    return all;
  }();
  return *options;
}

const ConfigOption* FindOptionByPath(absl::string_view path) {
  for (const ConfigOption& option : AllConfigOptions()) {
    if (option.path == path) return &option;
  }
  return nullptr;
}

const ConfigOption* FindOptionByFlag(absl::string_view flag) {
  for (const ConfigOption& option : AllConfigOptions()) {
    if (option.flag == flag) return &option;
  }
  return nullptr;
}

absl::Status SetOption(ServerConfig& config, const ConfigOption& option,
                       absl::string_view value, absl::string_view source) {
  Message* holder = MutableHolder(config, option);
  const Reflection* reflection = holder->GetReflection();
  const FieldDescriptor* field = option.fields.back();
  auto invalid = [&] {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", option.path,
                                                   " must be ", option.type,
                                                   ", got '", value, "'"));
  };
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!absl::SimpleAtoi(value, &v)) return invalid();
      reflection->SetUInt32(holder, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!absl::SimpleAtoi(value, &v)) return invalid();
      reflection->SetUInt64(holder, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (!absl::SimpleAtob(value, &v)) return invalid();
      reflection->SetBool(holder, field, v);
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING:
      reflection->SetString(holder, field, std::string(value));
      break;
    default:
      return absl::InternalError(
          absl::StrCat(option.path, ": unsupported option type ", option.type));
  }
  return absl::OkStatus();
}

bool IsOptionSet(const ServerConfig& config, const ConfigOption& option) {
  const Message* holder = Holder(config, option);
  return holder->GetReflection()->HasField(*holder, option.fields.back());
}

std::string OptionValue(const ServerConfig& config,
                        const ConfigOption& option) {
  const Message* holder = Holder(config, option);
  const Reflection* reflection = holder->GetReflection();
  const FieldDescriptor* field = option.fields.back();
  if (!reflection->HasField(*holder, field)) return "";
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(reflection->GetUInt32(*holder, field));
    case FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(reflection->GetUInt64(*holder, field));
    case FieldDescriptor::CPPTYPE_BOOL:
      return reflection->GetBool(*holder, field) ? "true" : "false";
    case FieldDescriptor::CPPTYPE_STRING:
      return reflection->GetString(*holder, field);
    default:
      return "";
  }
}

}  // namespace iblip::config
