// iblip-inspect: what does the server see?
//
//   iblip-inspect preprocess --model PACKAGE_DIR IMAGE --out FILE.npy
//       writes the float32 pixel_values [1,3,H,W] the vision encoder gets.
//   iblip-inspect tokenize --model PACKAGE_DIR --text TEXT
//       prints {"input_ids": [...], "qformer_input_ids": [...]} exactly as the
//       model receives them.
//
// Exit status: 0 success, 1 bad input or package (message on stderr), 2 bad
// command line.

#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/command_line.h"
#include "model/runtime/image_preprocessor.h"
#include "model/runtime/lm_tokenizer.h"
#include "model/runtime/package.h"
#include "model/runtime/prompt.h"
#include "model/runtime/wordpiece_tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

constexpr char kUsage[] = R"(usage:
  iblip-inspect preprocess --model PACKAGE_DIR IMAGE --out FILE.npy
  iblip-inspect tokenize   --model PACKAGE_DIR --text TEXT [--special-tokens-as-text]

tokenize: special-token strings in TEXT ("</s>", "[SEP]") become their
special tokens, as Hugging Face's processor does; --special-tokens-as-text
tokenizes them as plain text (the server's tokenizer.special_tokens_as_text).
)";

int UsageError(const std::string& message) {
  std::cerr << "iblip-inspect: " << message << "\n\n" << kUsage;
  return 2;
}

int Fail(const absl::Status& status) {
  std::cerr << "iblip-inspect: " << status.message() << "\n";
  return 1;
}

// NumPy .npy v1.0: magic, header length, a Python dict literal padded with
// spaces to a 64-byte boundary and ended by a newline, then the data.
bool WriteNpy(const std::string& path, const std::vector<int64_t>& shape,
              const std::vector<float>& data) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       absl::StrJoin(shape, ", ") +
                       (shape.size() == 1 ? ",), }" : "), }");
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  const uint16_t length = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(length & 0xFF));
  out.put(static_cast<char>(length >> 8));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * sizeof(float)));
  return static_cast<bool>(out);
}

int Preprocess(const iblip::CommandLine& line,
               const iblip::model::PackageManifest& manifest) {
  if (line.positional().size() != 1)
    return UsageError("preprocess needs one IMAGE");
  auto out = line.Get("out");
  if (!out) return UsageError("preprocess needs --out FILE.npy");
  std::ifstream in(line.positional()[0], std::ios::binary);
  if (!in)
    return Fail(absl::NotFoundError(
        absl::StrCat("cannot read ", line.positional()[0])));
  std::stringstream bytes;
  bytes << in.rdbuf();
  iblip::model::ImagePreprocessor processor(manifest.image, {});
  auto pixels = processor.Process(bytes.str(), line.positional()[0]);
  if (!pixels.ok()) return Fail(pixels.status());
  if (!WriteNpy(*out, {1, 3, pixels->size, pixels->size}, pixels->chw)) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot write ", *out)));
  }
  return 0;
}

int Tokenize(const iblip::CommandLine& line,
             iblip::model::PackageManifest manifest) {
  auto text = line.Get("text");
  if (!text) return UsageError("tokenize needs --text TEXT");
  const bool as_text = line.Has("special-tokens-as-text");
  manifest.lm_tokenizer.special_tokens_as_text = as_text;
  manifest.qformer_tokenizer.special_tokens_as_text = as_text;
  auto lm = iblip::model::LmTokenizer::Load(manifest.lm_tokenizer);
  if (!lm.ok()) return Fail(lm.status());
  auto qformer =
      iblip::model::WordPieceTokenizer::Load(manifest.qformer_tokenizer);
  if (!qformer.ok()) return Fail(qformer.status());
  const auto inputs =
      iblip::model::AssemblePrompt(manifest, **lm, **qformer, *text);
  std::cout << nlohmann::json{{"input_ids", inputs.input_ids},
                              {"qformer_input_ids", inputs.qformer_input_ids}}
                   .dump(-1, ' ', false,
                         nlohmann::json::error_handler_t::replace)
            << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = iblip::CommandLine::Parse(
      argc, argv, {"help", "special-tokens-as-text"});
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  const iblip::CommandLine& line = *parsed;
  if (line.Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (line.command() != "preprocess" && line.command() != "tokenize") {
    return UsageError(line.command().empty()
                          ? "a command is required"
                          : "unknown command '" + line.command() + "'");
  }
  if (auto unknown = line.Unknown(
          {"model", "out", "text", "help", "special-tokens-as-text"});
      !unknown.empty()) {
    return UsageError("unknown flag --" + absl::StrJoin(unknown, ", --"));
  }
  auto model = line.Get("model");
  if (!model) return UsageError("--model PACKAGE_DIR is required");
  auto manifest = iblip::model::LoadPackageManifest(*model);
  if (!manifest.ok()) return Fail(manifest.status());
  return line.command() == "preprocess" ? Preprocess(line, *manifest)
                                        : Tokenize(line, *manifest);
}
