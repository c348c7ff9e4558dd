"""Writes the image decoder's test cases (tests/data/images/): small files in
every accepted format and in the odd variants Pillow reads, damaged and
oversized ones, and expected.json with what Pillow 9.4 (Debian's
/usr/bin/python3) makes of each -- the SHA-256 of convert("RGB")'s bytes and
a few sampled pixels, or the exception -- plus what our decoder must do where
it deliberately differs (it refuses damaged data Pillow decodes). Re-run
after changing the cases, then commit the files:

    /usr/bin/python3 tests/data/images/make_cases.py

The functions here are also imported by tests/fuzz/make_seed_corpus.py and
tests/python/test_image_decoder.py.
"""

import hashlib
import io
import json
import os
import random
import struct
import sys
import zlib

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


# --- Pillow's verdict ------------------------------------------------------------

def pillow_decode(data):
    """(True, rgb Image) or (False, "ExceptionName: message")."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return True, im.convert("RGB")
    except Exception as e:  # Pillow raises many kinds; all are refusals
        return False, f"{type(e).__name__}: {e}"


def rgb_sha256(im):
    return hashlib.sha256(im.tobytes()).hexdigest()


def samples(im):
    """Four pixels: the corners' diagonal and the centre."""
    w, h = im.size
    points = sorted({(0, 0), (w - 1, h - 1), (w // 2, h // 2), (w - 1, 0)})
    return [[x, y, *im.getpixel((x, y))] for x, y in points]


# --- Helpers that write formats by hand ------------------------------------------

def encoded(im, fmt, **options):
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(size, seed=1, mode="RGB"):
    rng = random.Random(seed)
    im = Image.new("RGB", size)
    im.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                for _ in range(size[0] * size[1])])
    return im if mode == "RGB" else im.convert(mode)


def gradient(size):
    w, h = size
    im = Image.new("RGB", size)
    im.putdata([(x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x * y) % 256)
                for y in range(h) for x in range(w)])
    return im


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_file(width, height, depth, color_type, pixel_rows, extra_chunks=b"", interlace=False,
             iend=True):
    """pixel_rows[y][x] is a bytes object of one pixel's samples (depth >= 8) or
    an int sample (depth < 8, one channel)."""
    def pack(row):
        if depth >= 8:
            return b"".join(row)
        bits, out, acc, n = depth, bytearray(), 0, 0
        for v in row:
            acc = (acc << bits) | v
            n += bits
            if n == 8:
                out.append(acc), 
                acc, n = 0, 0
        if n:
            out.append(acc << (8 - n))
        return bytes(out)
    raw = b""
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            xs = list(range(x0, width, dx))
            if not xs:
                continue
            for y in range(y0, height, dy):
                raw += b"\0" + pack([pixel_rows[y][x] for x in xs])
    else:
        raw = b"".join(b"\0" + pack(row) for row in pixel_rows)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 1 if interlace else 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra_chunks +
            png_chunk(b"IDAT", zlib.compress(raw)))
    return data + (png_chunk(b"IEND", b"") if iend else b"")


def bmp_file(width, height, bits, pixel_data, palette=b"", compression=0, header_size=40,
             masks=None, colors=0, top_down=False):
    """A BMP with `pixel_data` (rows already padded) after the header."""
    extra = b""
    if header_size == 12:
        info = struct.pack("<IHHHH", 12, width, height, 1, bits)
    else:
        h = (-height) & 0xFFFFFFFF if top_down else height
        info = struct.pack("<IIIHHIIiiII", header_size, width, h, 1, bits, compression,
                           len(pixel_data), 2835, 2835, colors, 0)
        if header_size > 40:
            m = list(masks or (0, 0, 0, 0)) + [0] * 4
            info += struct.pack("<IIII", *m[:4]) + b"\0" * (header_size - 56)
        elif masks:
            extra = struct.pack("<III", *masks[:3])
    offset = 14 + len(info) + len(extra) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixel_data), 0, 0, offset)
    return head + info + extra + palette + pixel_data


def bmp_rows(rows, bits):
    """Bottom-up rows of samples -> padded bytes."""
    out = b""
    for row in reversed(rows):
        if bits >= 8:
            data = b"".join(row)
        else:
            acc, n, data = 0, 0, bytearray()
            for v in row:
                acc, n = (acc << bits) | v, n + bits
                if n == 8:
                    data.append(acc)
                    acc, n = 0, 0
            if n:
                data.append(acc << (8 - n))
            data = bytes(data)
        out += data + b"\0" * (-len(data) % 4)
    return out


def tiff_file(width, height, entries, strips, little=True):
    """A baseline TIFF: `entries` is {tag: (type, values)}, strips are raw
    strip bytes placed after the directory (StripOffsets/ByteCounts added)."""
    e = "<" if little else ">"
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8}
    fmt = {1: "B", 2: "B", 3: "H", 4: "I"}
    entries = dict(entries)
    entries[256] = (4, [width])
    entries[257] = (4, [height])
    entries[273] = (4, [0] * len(strips))
    entries[279] = (4, [len(s) for s in strips])
    tags = sorted(entries)
    ifd_size = 2 + 12 * len(tags) + 4
    data_at = 8 + ifd_size
    blobs, values = b"", {}
    for tag in tags:  # values that do not fit in 4 bytes go after the IFD
        kind, vals = entries[tag]
        packed = b"".join(struct.pack(e + fmt[kind], v) for v in vals)
        if len(packed) > 4:
            values[tag] = (data_at + len(blobs), packed)
            blobs += packed + b"\0" * (len(packed) % 2)
    strip_at = data_at + len(blobs)
    offsets = []
    for s in strips:
        offsets.append(strip_at)
        strip_at += len(s)
    entries[273] = (4, offsets)
    ifd = struct.pack(e + "H", len(tags))
    blobs, values = b"", {}
    for tag in tags:
        kind, vals = entries[tag]
        packed = b"".join(struct.pack(e + fmt[kind], v) for v in vals)
        if len(packed) > 4:
            ifd += struct.pack(e + "HHII", tag, kind, len(vals), data_at + len(blobs))
            blobs += packed + b"\0" * (len(packed) % 2)
        else:
            ifd += struct.pack(e + "HHI", tag, kind, len(vals))[:8] + packed.ljust(4, b"\0")
    ifd += b"\0\0\0\0"
    head = (b"II*\0" if little else b"MM\0*") + struct.pack(e + "I", 8)
    return head + ifd + blobs + b"".join(strips)


def gif_file(screen, frame_box, indices, palette=None, local_palette=None, bits=8,
             transparency=None, interlace=False, background=0, trailer=True, terminator=True):
    """A one-frame GIF with uncompressed-style LZW (a clear code before every
    few literals, so any index sequence encodes) built by hand."""
    def color_table(p, size_bits):
        table = bytes(p) + b"\0" * (3 * (1 << size_bits) - len(p))
        return table[:3 * (1 << size_bits)]
    out = b"GIF89a" + struct.pack("<HH", *screen)
    if palette is not None:
        out += bytes([0x80 | (bits - 1), background, 0]) + color_table(palette, bits)
    else:
        out += bytes([0, background, 0])
    if transparency is not None:
        out += b"\x21\xf9\x04" + bytes([1, 0, 0, transparency]) + b"\0"
    x0, y0, w, h = frame_box
    flags = (0x40 if interlace else 0)
    if local_palette is not None:
        flags |= 0x80 | (bits - 1)
    out += b"," + struct.pack("<HHHH", x0, y0, w, h) + bytes([flags])
    if local_palette is not None:
        out += color_table(local_palette, bits)
    code_size = max(bits, 2)
    clear, end = 1 << code_size, (1 << code_size) + 1
    width = code_size + 1
    codes = []
    order = list(range(h))
    if interlace:
        order = ([y for y in range(0, h, 8)] + [y for y in range(4, h, 8)] +
                 [y for y in range(2, h, 4)] + [y for y in range(1, h, 2)])
    stream = ([indices[y * w + x] for y in order for x in range(w)]
              if len(indices) == w * h else list(indices))  # a partial frame
    # A clear code every (2^width - 2^code_size - 2) literals keeps the code
    # width fixed: the table never grows past it.
    room = (1 << width) - (1 << code_size) - 2
    for i, v in enumerate(stream):
        if i % room == 0:
            codes.append(clear)
        codes.append(v)
    codes.append(end)
    acc, n, packed = 0, 0, bytearray()
    for c in codes:
        acc |= c << n
        n += width
        while n >= 8:
            packed.append(acc & 0xFF)
            acc >>= 8
            n -= 8
    if n:
        packed.append(acc)
    out += bytes([code_size])
    for i in range(0, len(packed), 255):
        block = packed[i:i + 255]
        out += bytes([len(block)]) + block
    if terminator:
        out += b"\0"
    if trailer and terminator:
        out += b";"
    return out


def jpeg_cut_after_scan_start(data, extra=10):
    """The JPEG up to a few bytes into its first scan."""
    return data[:data.index(b"\xff\xda") + extra]


# --- The cases --------------------------------------------------------------------

def valid_cases():
    """(name, bytes): files Pillow decodes; ours must give the same pixels."""
    rgb = noise((9, 7))
    grad = gradient((16, 12))
    # JPEG
    yield "baseline.jpg", encoded(grad, "JPEG", quality=90)
    yield "progressive.jpg", encoded(grad, "JPEG", quality=80, progressive=True)
    yield "gray.jpg", encoded(grad.convert("L"), "JPEG")
    yield "cmyk.jpg", encoded(grad.convert("CMYK"), "JPEG", quality=95)
    yield "subsampled-444.jpg", encoded(rgb, "JPEG", subsampling=0, quality=70)
    yield "trailing-garbage.jpg", encoded(rgb, "JPEG") + b"not image data"
    # PNG: every colour type and depth Pillow maps
    px = lambda *v: bytes(v)
    yield "gray1.png", png_file(9, 2, 1, 0, [[x % 2 for x in range(9)], [1] * 9])
    yield "gray2.png", png_file(5, 2, 2, 0, [[x % 4 for x in range(5)], [3] * 5])
    yield "gray4.png", png_file(5, 2, 4, 0, [[x * 3 for x in range(5)], [15] * 5])
    yield "gray16.png", png_file(4, 1, 16, 0, [[struct.pack(">H", v) for v in (0, 200, 255, 40000)]])
    yield "gray-alpha16.png", png_file(3, 1, 16, 4, [[struct.pack(">HH", v, 9) for v in (0x1234, 0xABCD, 0x00FF)]])
    yield "gray-alpha.png", encoded(grad.convert("LA"), "PNG")
    yield "rgb16.png", png_file(2, 2, 16, 2, [[struct.pack(">HHH", 0x1234, 0x5678, 0x9ABC)] * 2] * 2)
    yield "rgba16.png", png_file(2, 1, 16, 6, [[struct.pack(">HHHH", 0xFF00, 0x0100, 0x8080, 0)] * 2])
    yield "rgba.png", encoded(grad.convert("RGBA"), "PNG")
    plte = png_chunk(b"PLTE", bytes([10, 20, 30, 200, 100, 50]))
    yield "palette-short.png", png_file(4, 1, 8, 3, [[px(0), px(1), px(5), px(200)]], plte)
    yield "palette4.png", png_file(5, 1, 4, 3, [[0, 1, 2, 3, 15]], plte)
    trns = png_chunk(b"tRNS", bytes([0, 128]))
    yield "palette-trns.png", png_file(3, 1, 8, 3, [[px(0), px(1), px(0)]], plte + trns)
    yield "interlaced.png", png_file(11, 9, 8, 2, [[px(x * 20, y * 25, (x ^ y) * 9) for x in range(11)]
                                                  for y in range(9)], interlace=True)
    yield "interlaced-1x1.png", png_file(1, 1, 8, 2, [[px(1, 2, 3)]], interlace=True)
    full = encoded(rgb, "PNG")
    yield "no-iend.png", full[:-12]
    yield "cut-in-last-crc.png", full[:-14]
    # GIF
    pal = [10, 20, 30, 200, 100, 50, 0, 255, 0, 1, 2, 3]
    idx = [(x + y) % 4 for y in range(5) for x in range(6)]
    yield "gif-basic.gif", gif_file((6, 5), (0, 0, 6, 5), idx, palette=pal, bits=2)
    yield "gif-small-frame.gif", gif_file((9, 8), (2, 1, 6, 5), idx, palette=pal, bits=2,
                                         background=2)
    yield "gif-frame-beyond-screen.gif", gif_file((1, 1), (3, 2, 6, 5), idx, palette=pal, bits=2)
    yield "gif-transparency.gif", gif_file((9, 8), (2, 1, 6, 5), idx, palette=pal, bits=2,
                                          transparency=2)
    yield "gif-interlaced.gif", gif_file((6, 11), (0, 0, 6, 11),
                                        [(x * y) % 4 for y in range(11) for x in range(6)],
                                        palette=pal, bits=2, interlace=True)
    yield "gif-local-palette.gif", gif_file((6, 5), (0, 0, 6, 5), idx, local_palette=pal[::-1], bits=2)
    yield "gif-no-palette.gif", gif_file((6, 5), (0, 0, 6, 5), [i * 40 for i in idx], bits=8)
    yield "gif-index-past-palette.gif", gif_file((6, 5), (0, 0, 6, 5), [i * 3 for i in idx],
                                                palette=pal, bits=4)
    yield "gif-no-trailer.gif", gif_file((6, 5), (0, 0, 6, 5), idx, palette=pal, bits=2, trailer=False)
    yield "gif-no-terminator.gif", gif_file((6, 5), (0, 0, 6, 5), idx, palette=pal, bits=2,
                                           terminator=False)
    yield "pillow.gif", encoded(grad, "GIF")
    # BMP: Pillow's rawmodes
    yield "rgb24.bmp", encoded(rgb, "BMP")
    yield "gray8.bmp", encoded(grad.convert("L"), "BMP")
    yield "bilevel.bmp", encoded(grad.convert("1"), "BMP")
    yield "palette8.bmp", encoded(grad.convert("P"), "BMP")
    p4 = b"".join(bytes([b, g, r, 0]) for r, g, b in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)])
    yield "palette4.bmp", bmp_file(5, 2, 4, bmp_rows([[0, 1, 2, 3, 7], [3, 2, 1, 0, 1]], 4), p4, colors=4)
    yield "palette8-short.bmp", bmp_file(3, 1, 8, bmp_rows([[b"\0", b"\1", b"\x07"]], 8), p4[:12], colors=3)
    yield "os2.bmp", bmp_file(3, 2, 8, bmp_rows([[b"\0", b"\1", b"\2"]] * 2, 8),
                              b"".join(bytes([b, g, r]) for r, g, b in [(1, 2, 3), (40, 50, 60), (7, 8, 9)] * 86)[:768],
                              header_size=12)
    s15 = [[struct.pack("<H", (31 << 10) | (y * 9 << 5) | x * 7) for x in range(4)] for y in range(3)]
    yield "rgb15.bmp", bmp_file(4, 3, 16, bmp_rows(s15, 16))
    s16 = [[struct.pack("<H", (x * 7 << 11) | (y * 20 << 5) | 31) for x in range(4)] for y in range(3)]
    yield "rgb565.bmp", bmp_file(4, 3, 16, bmp_rows(s16, 16), compression=3,
                                 masks=(0xF800, 0x7E0, 0x1F))
    s32 = [[bytes([x * 50, y * 80, 200, 77]) for x in range(3)] for y in range(2)]
    yield "bgrx32.bmp", bmp_file(3, 2, 32, bmp_rows(s32, 32))
    yield "xbgr32-bitfields.bmp", bmp_file(3, 2, 32, bmp_rows(s32, 32), compression=3, header_size=124,
                                           masks=(0xFF000000, 0xFF0000, 0xFF00, 0))
    yield "rgba32-bitfields.bmp", bmp_file(3, 2, 32, bmp_rows(s32, 32), compression=3, header_size=108,
                                           masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000))
    yield "top-down.bmp", bmp_file(3, 2, 32, b"".join(b"".join(r) for r in s32), top_down=True)
    p8 = b"".join(bytes([i * 3 % 256, i * 5 % 256, i * 7 % 256, 0]) for i in range(256))
    rle8 = bytes([3, 4, 0, 3, 9, 8, 7, 0, 0, 0, 2, 2, 1, 5, 0, 0, 0, 2, 1, 0, 2, 6, 0, 0, 0, 1])
    yield "rle8.bmp", bmp_file(6, 3, 8, rle8, p8, compression=1)
    rle4 = bytes([5, 0x12, 0, 0, 0, 4, 0x34, 0x56, 0, 0, 3, 0xF0, 0, 1])
    yield "rle4.bmp", bmp_file(5, 2, 4, rle4, p8[:64], compression=2, colors=16)
    # TIFF
    for compression in ("raw", "tiff_lzw", "tiff_deflate", "packbits"):
        yield f"rgb-{compression}.tiff", encoded(grad, "TIFF", compression=compression)
    yield "gray.tiff", encoded(grad.convert("L"), "TIFF")
    yield "bilevel.tiff", encoded(grad.convert("1"), "TIFF")
    yield "bilevel-g4.tiff", encoded(grad.convert("1"), "TIFF", compression="group4")
    yield "palette.tiff", encoded(grad.convert("P"), "TIFF")
    yield "cmyk.tiff", encoded(grad.convert("CMYK"), "TIFF")
    yield "rgba.tiff", encoded(grad.convert("RGBA"), "TIFF")
    yield "jpeg.tiff", encoded(grad, "TIFF", compression="jpeg")
    planar = [bytes(v for v in band.tobytes()) for band in grad.split()]
    yield "planar.tiff", tiff_file(16, 12, {258: (3, [8, 8, 8]), 259: (3, [1]), 262: (3, [2]),
                                            277: (3, [3]), 278: (4, [12]), 284: (3, [2])}, planar)
    rgba = bytes(v for p in [(200, 100, 50, 128), (10, 20, 30, 255), (90, 90, 90, 0), (100, 50, 25, 100)]
                 for v in p)
    yield "associated-alpha.tiff", tiff_file(2, 2, {258: (3, [8] * 4), 259: (3, [1]), 262: (3, [2]),
                                                    277: (3, [4]), 278: (4, [2]), 338: (3, [1])}, [rgba])
    g16 = struct.pack(">4H", 0, 200, 300, 65535)
    yield "gray16-be.tiff", tiff_file(2, 2, {258: (3, [16]), 259: (3, [1]), 262: (3, [1]),
                                             277: (3, [1]), 278: (4, [2])}, [g16], little=False)
    white = bytes([0, 100, 255, 30])
    yield "min-is-white.tiff", tiff_file(2, 2, {258: (3, [8]), 259: (3, [1]), 262: (3, [0]),
                                                277: (3, [1]), 278: (4, [2])}, [white])
    cmap = [v * 257 for v in range(0, 256, 17)] + [(15 - v) * 4369 for v in range(16)] + [30000] * 16
    yield "palette4.tiff", tiff_file(4, 2, {258: (3, [4]), 259: (3, [1]), 262: (3, [3]),
                                            277: (3, [1]), 278: (4, [2]), 320: (3, cmap)},
                                     [bytes([0x01, 0x23, 0xEF, 0xA5])])
    # Pillow 9.4 applies a TIFF's Orientation tag (and no other format's).
    for orientation in range(2, 9):
        yield f"orientation{orientation}.tiff", tiff_file(
            3, 2, {258: (3, [8, 8, 8]), 259: (3, [1]), 262: (3, [2]), 277: (3, [3]),
                   278: (4, [2]), 274: (3, [orientation])}, [bytes(range(0, 180, 10))])
    yield "orientation6-lzw.tiff", encoded(grad, "TIFF", compression="tiff_lzw",
                                           tiffinfo={274: 6})
    # WebP
    yield "lossy.webp", encoded(grad, "WEBP", quality=80)
    yield "lossless.webp", encoded(rgb, "WEBP", lossless=True)
    yield "alpha.webp", encoded(grad.convert("RGBA"), "WEBP", quality=90)
    frames = [grad, noise((16, 12), seed=2)]
    yield "animated.webp", encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:],
                                   duration=100, lossless=True)


def damaged_cases():
    """(name, bytes): truncated and corrupt files."""
    grad = gradient((32, 24))
    rgb = noise((32, 24), seed=5)
    jpg = encoded(rgb, "JPEG", quality=90)
    yield "jpeg-cut-mid-scan.jpg", jpg[:len(jpg) // 2]
    yield "jpeg-cut-after-sos.jpg", jpeg_cut_after_scan_start(jpg)
    yield "jpeg-no-eoi.jpg", jpg[:-2]
    yield "jpeg-cut-in-header.jpg", jpg[:100]
    yield "jpeg-progressive-cut.jpg", encoded(rgb, "JPEG", progressive=True)[:-40]
    # A scan cut short then closed with an end marker: Pillow decodes it
    # (grey blocks), ours refuses it as corrupt.
    yield "jpeg-cut-then-eoi.jpg", jpg[:len(jpg) // 2] + b"\xff\xd9"
    # Entropy-coded data no Huffman table can decode (runs of 1 bits):
    # libjpeg warns and fills zeros; Pillow decodes it, ours refuses it.
    at = jpg.index(b"\xff\xda") + 40
    yield "jpeg-bad-huffman.jpg", jpg[:at] + b"\xff\x00" * 3 + jpg[at + 6:]
    png = encoded(rgb, "PNG")
    yield "png-cut-in-idat.png", png[:len(png) // 2]
    yield "png-cut-in-header.png", png[:20]
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # IHDR's CRC
    yield "png-bad-header-crc.png", bytes(bad_crc)
    gif = encoded(grad, "GIF")
    # An LZW code past the table's next entry: Pillow's "broken data stream"
    # (giflib's own decoder would make up a pixel for it).
    pal = [10, 20, 30, 200, 100, 50, 0, 255, 0, 1, 2, 3]
    broken = bytearray(gif_file((9, 8), (2, 1, 6, 5), [(x + y) % 4 for y in range(5) for x in range(6)],
                                palette=pal, bits=2, transparency=2))
    broken[46] ^= 8
    yield "gif-broken-code.gif", bytes(broken)
    yield "gif-cut-40pct.gif", gif[:len(gif) * 2 // 5]
    yield "gif-cut-in-last-block.gif", gif[:-12]
    yield "gif-cut-in-palette.gif", gif[:30]
    bmp = encoded(rgb, "BMP")
    yield "bmp-cut.bmp", bmp[:len(bmp) // 2]
    yield "bmp-cut-by-one.bmp", bmp[:-1]
    tif = encoded(rgb, "TIFF")
    yield "tiff-cut-in-strip.tiff", tif[:len(tif) // 2]
    lzw = encoded(rgb, "TIFF", compression="tiff_lzw")
    yield "tiff-lzw-no-directory.tiff", lzw[:len(lzw) // 2]
    webp = encoded(rgb, "WEBP", quality=80)
    yield "webp-cut.webp", webp[:len(webp) // 2]
    yield "webp-lossless-cut.webp", encoded(rgb, "WEBP", lossless=True)[:-10]


def oversized_cases():
    """(name, bytes): tiny files whose headers claim 400-625 million pixels."""
    # PNG 20000x20000: IHDR only, a deflate stream that would expand hugely.
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    yield "huge.png", (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
                       png_chunk(b"IDAT", zlib.compress(b"\0" * 200000)) + png_chunk(b"IEND", b""))
    # GIF: a 1x1 logical screen whose frame is 25000x25000.
    yield "huge-frame.gif", gif_file((1, 1), (0, 0, 25000, 25000), [0] * 8, palette=[0, 0, 0, 9, 9, 9],
                                     bits=1, terminator=False)[:-1] + b"\0;"
    # TIFF 20000x20000, one uncompressed strip that is not there.
    yield "huge.tiff", tiff_file(20000, 20000, {258: (3, [8, 8, 8]), 259: (3, [1]), 262: (3, [2]),
                                                277: (3, [3]), 278: (4, [20000])}, [b"\0" * 64])
    # JPEG 25000x25000: a real 8x8 JPEG with the frame header's size edited.
    jpg = bytearray(encoded(Image.new("RGB", (8, 8), (1, 2, 3)), "JPEG"))
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", 25000, 25000)
    yield "huge.jpg", bytes(jpg)
    # BMP 25000x25000, 24-bit, no pixel data.
    yield "huge.bmp", bmp_file(25000, 25000, 24, b"")
    # WebP lossless 16384x16384 (the format's largest), a few bytes of data.
    vp8l = bytes([0x2F]) + struct.pack("<I", (16383) | (16383 << 14))
    body = b"VP8L" + struct.pack("<I", len(vp8l) + 4) + vp8l + b"\0" * 4
    yield "huge.webp", b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def other_format_cases():
    """(name, bytes): formats Pillow reads that the server does not accept."""
    im = gradient((4, 3))
    yield "image.ppm", encoded(im, "PPM")
    yield "image.jp2", encoded(im, "JPEG2000")
    yield "image.ico", encoded(im, "ICO")
    yield "image.tga", encoded(im, "TGA")


# Where our decoder refuses what Pillow decodes, and why (the only allowed
# difference in that direction: damaged data).
STRICTER_THAN_PILLOW = {
    "jpeg-cut-then-eoi.jpg": "corrupt",
    "jpeg-bad-huffman.jpg": "corrupt",
}


def expected_entry(name, data, kind):
    ok, result = pillow_decode(data)
    entry = {"file": name, "bytes": len(data), "kind": kind}
    if ok:
        entry["pillow"] = {"size": list(result.size), "sha256": rgb_sha256(result),
                           "samples": samples(result)}
    else:
        entry["pillow"] = {"error": result.split("\n")[0][:120]}
    if kind == "valid":
        assert ok, f"{name}: Pillow refuses a case meant to be valid: {result}"
        entry["expect"] = "decode"
    elif kind == "oversized":
        entry["expect"] = "pixels"
    elif kind == "other-format":
        entry["expect"] = "format"
    else:
        entry["expect"] = STRICTER_THAN_PILLOW.get(name, "truncated-or-corrupt")
        assert not ok or name in STRICTER_THAN_PILLOW, f"{name}: Pillow decodes it"
    return entry


def all_cases():
    for kind, cases in (("valid", valid_cases()), ("damaged", damaged_cases()),
                        ("oversized", oversized_cases()), ("other-format", other_format_cases())):
        for name, data in cases:
            yield kind, name, data


def main():
    import PIL
    entries = []
    for kind, name, data in all_cases():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        entries.append(expected_entry(name, data, kind))
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        f.write('{"pillow": "%s", "cases": [\n' % PIL.__version__)
        f.write(",\n".join(json.dumps(e) for e in entries))
        f.write("\n]}\n")
    print(f"{len(entries)} cases, {sum(e['bytes'] for e in entries)} bytes")


if __name__ == "__main__":
    sys.exit(main())
