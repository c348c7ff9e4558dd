"""How fast the image decoder refuses an image over the pixel limit, per
format, and whether it allocated the pixels first: complete files of
8000x6400 = 51.2 million pixels (the default limit is 50 million) made with
Pillow, and the tiny header-only files of tests/data/images that claim 400
to 625 million (a GIF whose 1x1 screen holds a 25000x25000 frame, a
20000x20000 TIFF among them). Prints one line per file from
iblip-decode-image --time: the fastest and median time of a refusal, and how
much the process's peak resident memory grew (the pixels would take 154 MB
to 1.9 GB).

    /usr/bin/python3 bench/image_refusal.py [--build build] [--repeats 200]
"""

import argparse
import io
import os
import subprocess
import tempfile

from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
HEADER_ONLY = ["huge.jpg", "huge.png", "huge-frame.gif", "huge.bmp", "huge.tiff", "huge.webp"]


def complete_files(directory):
    """Real over-limit files, one per format (WebP stops at 16383 a side)."""
    Image.MAX_IMAGE_PIXELS = None
    big = Image.new("RGB", (8000, 6400), (30, 120, 200))
    made = {
        "big.jpg": dict(format="JPEG", quality=90),
        "big.png": dict(format="PNG", compress_level=1),
        "big.gif": dict(format="GIF"),
        "big.bmp": dict(format="BMP"),
        "big.tiff": dict(format="TIFF", compression="tiff_deflate"),
    }
    paths = []
    for name, options in made.items():
        path = os.path.join(directory, name)
        big.save(path, **options)
        paths.append(path)
    path = os.path.join(directory, "big.webp")
    Image.new("RGB", (16383, 3200), (30, 120, 200)).save(path, format="WEBP", lossless=True)
    paths.append(path)
    return paths


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    tool = os.path.join(args.build, "model", "iblip-decode-image")
    with tempfile.TemporaryDirectory() as directory:
        files = complete_files(directory) + [
            os.path.join(ROOT, "tests", "data", "images", name) for name in HEADER_ONLY]
        sizes = [os.path.getsize(path) for path in files]
        out = subprocess.run([tool, "--time", str(args.repeats), *files],
                             capture_output=True, text=True, check=True).stdout
    print(f"{'file':<16} {'bytes':>10}  result")
    for line, path, size in zip(out.splitlines(), files, sizes):
        fields = line.split("\t")
        print(f"{os.path.basename(path):<16} {size:>10}  {fields[1]}: {fields[2][:70]}")
        print(f"{'':<28}  {'  '.join(fields[3:])}")


if __name__ == "__main__":
    main()
