#include "model/runtime/image_decoder.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/runtime/image_codecs/codecs.h"

namespace iblip::model {
namespace {

using DecodeFn = absl::StatusOr<Rgb8Image> (*)(
    absl::string_view, const image_codecs::DecodeContext&);

struct Format {
  const char* name;
  bool (*sniff)(absl::string_view data);
  DecodeFn decode;
};

bool StartsWith(absl::string_view data, absl::string_view prefix) {
  return data.substr(0, prefix.size()) == prefix;
}

// The magic numbers Pillow's plugins accept (their _accept functions), less
// the malformed TIFF byte orders libtiff refuses anyway.
const Format kFormats[] = {
    {"JPEG", [](absl::string_view d) { return StartsWith(d, "\xFF\xD8\xFF"); },
     image_codecs::DecodeJpeg},
    {"PNG",
     [](absl::string_view d) { return StartsWith(d, "\x89PNG\r\n\x1A\n"); },
     image_codecs::DecodePng},
    {"GIF",
     [](absl::string_view d) {
       return StartsWith(d, "GIF87a") || StartsWith(d, "GIF89a");
     },
     image_codecs::DecodeGif},
    {"BMP", [](absl::string_view d) { return StartsWith(d, "BM"); },
     image_codecs::DecodeBmp},
    {"TIFF",
     [](absl::string_view d) {
       // Classic and BigTIFF, little- and big-endian (NULs: explicit sizes).
       return StartsWith(d, absl::string_view("II\x2A\x00", 4)) ||
              StartsWith(d, absl::string_view("MM\x00\x2A", 4)) ||
              StartsWith(d, absl::string_view("II\x2B\x00", 4)) ||
              StartsWith(d, absl::string_view("MM\x00\x2B", 4));
     },
     image_codecs::DecodeTiff},
    {"WebP",
     [](absl::string_view d) {
       return StartsWith(d, "RIFF") && d.size() >= 12 &&
              d.substr(8, 4) == "WEBP";
     },
     image_codecs::DecodeWebp},
};

}  // namespace

const std::vector<std::string>& AcceptedImageFormats() {
  static const auto* names = [] {
    auto* list = new std::vector<std::string>;
    for (const Format& format : kFormats) list->push_back(format.name);
    return list;
  }();
  return *names;
}

absl::StatusOr<Rgb8Image> DecodeImageAsPil(absl::string_view encoded,
                                           const ImageLimits& limits,
                                           absl::string_view field) {
  if (encoded.empty())
    return absl::InvalidArgumentError(absl::StrCat(field, ": image is empty"));
  if (encoded.size() > limits.max_image_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": image is ", encoded.size(), " bytes, more than the limit of ",
        limits.max_image_bytes));
  }
  for (const Format& format : kFormats) {
    if (format.sniff(encoded))
      return format.decode(encoded, {field, format.name, limits});
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": image is in none of the accepted formats (",
                   absl::StrJoin(AcceptedImageFormats(), ", "), ")"));
}

}  // namespace iblip::model
