#include "model/runtime/image_codecs/gif_lzw.h"

#include <algorithm>

namespace iblip::model::image_codecs {

GifLzwDecoder::GifLzwDecoder(int min_code_size, int width, int height,
                             bool interlaced, uint8_t* out, size_t stride)
    : clear_code_(1 << min_code_size),
      end_code_((1 << min_code_size) + 1),
      min_code_size_(min_code_size),
      width_(width),
      height_(height),
      out_(out),
      stride_(stride) {
  if (interlaced) {
    row_step_ = 8;
    interlace_pass_ = 1;
  }
  Reset();
}

void GifLzwDecoder::Reset() {
  next_code_ = clear_code_ + 2;
  code_size_ = min_code_size_ + 1;
  code_mask_ = (1 << code_size_) - 1;
  after_clear_ = true;
}

GifLzwDecoder::Status GifLzwDecoder::Fail(const char* why) {
  error_ = why;
  return Status::kBroken;
}

bool GifLzwDecoder::Emit(const uint8_t* string, int length) {
  for (int i = 0; i < length; ++i) {
    out_[static_cast<size_t>(y_) * stride_ + x_] = string[i];
    if (++x_ < width_) continue;
    x_ = 0;
    y_ += row_step_;
    // The next interlace pass once this one runs past the bottom.
    while (y_ >= height_) {
      switch (interlace_pass_) {
        case 1:
          y_ = 4, interlace_pass_ = 2;
          break;
        case 2:
          row_step_ = 4, y_ = 2, interlace_pass_ = 3;
          break;
        case 3:
          row_step_ = 2, y_ = 1, interlace_pass_ = 0;
          break;
        default:
          complete_ = true;
          return false;
      }
    }
  }
  return true;
}

GifLzwDecoder::Status GifLzwDecoder::Feed(const uint8_t* data, size_t size) {
  if (complete_) return Status::kComplete;
  for (size_t at = 0;;) {
    while (bit_count_ < code_size_) {
      if (at == size) return Status::kNeedMore;
      bit_buffer_ |= uint32_t{data[at++]} << bit_count_;
      bit_count_ += 8;
    }
    const int code = static_cast<int>(bit_buffer_ & code_mask_);
    bit_buffer_ >>= code_size_;
    bit_count_ -= code_size_;

    if (code == clear_code_) {
      if (!after_clear_) Reset();
      continue;
    }
    // Pillow pauses at the end code and then reads on; with the whole file
    // in hand, as here, that ends in "image file is truncated".
    if (code == end_code_) return Fail("end code before the last pixel");

    if (after_clear_) {
      if (code > clear_code_)
        return Fail("code not in the table after a clear");
      last_code_ = code;
      last_first_ = static_cast<uint8_t>(code);
      after_clear_ = false;
      const uint8_t pixel = last_first_;
      if (!Emit(&pixel, 1)) return Status::kComplete;
      continue;
    }

    if (code > next_code_) return Fail("code not in the table");
    // The string is built backwards on the stack, from its last index.
    int top = kTableSize;
    int walk = code;
    if (code == next_code_) {  // the entry being defined: last + its first
      stack_[--top] = last_first_;
      walk = last_code_;
    }
    while (walk >= clear_code_) {
      if (top <= 0 || walk >= kTableSize) return Fail("string too long");
      stack_[--top] = suffix_[walk];
      walk = prefix_[walk];
    }
    last_first_ = static_cast<uint8_t>(walk);
    if (next_code_ < kTableSize) {
      suffix_[next_code_] = last_first_;
      prefix_[next_code_] = static_cast<uint16_t>(last_code_);
      if (next_code_ == code_mask_ && code_size_ < kMaxCodeSize) {
        ++code_size_;
        code_mask_ = (1 << code_size_) - 1;
      }
      ++next_code_;
    }
    last_code_ = code;
    if (!Emit(&last_first_, 1)) return Status::kComplete;
    if (!Emit(stack_ + top, kTableSize - top)) return Status::kComplete;
  }
}

}  // namespace iblip::model::image_codecs
