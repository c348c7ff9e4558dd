#pragma once

// The LZW decoding of one GIF frame, by the rules of Pillow's GifDecode.c
// (the reference), written here because giflib's decoder differs from it
// where it matters for refusing damaged data: giflib substitutes a pixel for
// a code that is not in the table yet, Pillow refuses the file ("broken data
// stream"). Everything else about GIF (header, palettes, extensions, frame
// descriptors, sub-blocks) stays with giflib.
//
// Pillow's rules, all kept: codes are read least significant bit first
// across sub-blocks; the code width grows when the entry just added is
// 2^width - 1 (up to 12 bits) and the table stops growing at 4096 entries;
// a code above the next free entry, or a first code after a clear above the
// clear code, is an error; consecutive clear codes are one; the frame is
// complete as soon as its last pixel is written (later codes are not read);
// interlaced frames fill rows 0, 8, ..., then 4, 12, ..., 2, 6, ..., 1, 3.

#include <cstddef>
#include <cstdint>

namespace iblip::model::image_codecs {

class GifLzwDecoder {
 public:
  // Writes indices into rows of `width` pixels, `stride` bytes apart,
  // starting at `out`. min_code_size is the byte before the sub-blocks
  // (0..8; giflib refuses larger ones).
  GifLzwDecoder(int min_code_size, int width, int height, bool interlaced,
                uint8_t* out, size_t stride);

  enum class Status {
    kNeedMore,  // every byte used, pixels still missing
    kComplete,  // the last pixel was written
    kBroken,    // a code the table does not allow (see error())
  };
  // Decodes one sub-block's bytes; call again with the next sub-block while
  // it returns kNeedMore.
  Status Feed(const uint8_t* data, size_t size);

  const char* error() const { return error_; }

 private:
  static constexpr int kTableSize = 4096;  // Pillow's GIFTABLE and GIFBUFFER
  static constexpr int kMaxCodeSize = 12;

  void Reset();
  // Appends a decoded string to the frame; false once the frame is full.
  bool Emit(const uint8_t* string, int length);
  Status Fail(const char* why);

  // Code table: entry i is prefix_[i]'s string followed by suffix_[i].
  uint8_t suffix_[kTableSize] = {};
  uint16_t prefix_[kTableSize] = {};
  uint8_t stack_[kTableSize] = {};
  const int clear_code_, end_code_, min_code_size_;
  int next_code_ = 0, code_size_ = 0, code_mask_ = 0;
  bool after_clear_ = true;  // Pillow's state 2: the next code starts fresh
  int last_code_ = 0;
  uint8_t last_first_ = 0;  // first index of the last code's string
  uint32_t bit_buffer_ = 0;
  int bit_count_ = 0;
  // Where the next pixel goes.
  const int width_, height_;
  uint8_t* const out_;
  const size_t stride_;
  int x_ = 0, y_ = 0, row_step_ = 1, interlace_pass_ = 0;
  bool complete_ = false;
  const char* error_ = "";
};

}  // namespace iblip::model::image_codecs
