#include "model/runtime/image_preprocessor.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace iblip::model {

absl::StatusOr<PixelValues> ImagePreprocessor::Process(
    absl::string_view encoded, absl::string_view field) const {
  if (encoded.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": image is empty"));
  }
  if (encoded.size() > limits_.max_image_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": image is ", encoded.size(), " bytes, more than the limit of ",
        limits_.max_image_bytes));
  }
  cv::Mat decoded;
  try {
    const cv::Mat raw(1, static_cast<int>(encoded.size()), CV_8UC1,
                      const_cast<char*>(encoded.data()));
    // IGNORE_ORIENTATION: the reference processor does not apply EXIF rotation.
    decoded =
        cv::imdecode(raw, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": image could not be decoded (", e.what(), ")"));
  }
  if (decoded.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field,
                     ": image could not be decoded (not a JPEG, PNG, WebP, "
                     "BMP, TIFF or GIF file, "
                     "or truncated)"));
  }
  const uint64_t pixels = static_cast<uint64_t>(decoded.rows) * decoded.cols;
  if (pixels > limits_.max_image_pixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": image has ", decoded.cols, "x", decoded.rows, " = ", pixels,
        " pixels, more than the limit of ", limits_.max_image_pixels));
  }

  cv::Mat rgb;
  cv::cvtColor(decoded, rgb, cv::COLOR_BGR2RGB);
  cv::Mat resized;
  // TODO(issue 4): PIL-compatible antialiased bicubic; INTER_CUBIC differs.
  cv::resize(rgb, resized, cv::Size(spec_.size, spec_.size), 0, 0,
             cv::INTER_CUBIC);

  PixelValues out;
  out.size = spec_.size;
  const size_t plane = static_cast<size_t>(spec_.size) * spec_.size;
  out.chw.resize(3 * plane);
  for (int y = 0; y < spec_.size; ++y) {
    const uint8_t* row = resized.ptr<uint8_t>(y);
    for (int x = 0; x < spec_.size; ++x) {
      for (int c = 0; c < 3; ++c) {
        const float value =
            static_cast<float>(row[3 * x + c]) * spec_.rescale_factor;
        out.chw[c * plane + static_cast<size_t>(y) * spec_.size + x] =
            (value - spec_.mean[c]) / spec_.std[c];
      }
    }
  }
  return out;
}

}  // namespace iblip::model
