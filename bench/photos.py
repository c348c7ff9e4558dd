"""Fresh photo-like JPEGs for the benchmarks: every request that is meant to
miss the server's image caches gets one nobody has sent before.

Each image is 640x480 .. 800x600 (4:3), drawn from its seed: a smooth
two-colour gradient with a low-frequency shading wave, a handful of soft
ellipses, rectangles and triangles, and mild sensor-like noise, saved at
JPEG quality 90. Such images compress like photographs (100-200 KB), unlike
uniform noise, so the server's JPEG decoding costs what it would in use.
"""

import os
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def draw(seed):
    """One RGB PIL image, the same for the same seed."""
    rng = np.random.default_rng(seed)
    width = int(rng.integers(640, 801)) // 4 * 4
    height = width * 3 // 4
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, np.pi)
    t = (x * np.cos(angle) + y * np.sin(angle)) / np.hypot(width, height)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    start, end = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    pixels = start + (end - start) * t[..., None]
    wave = np.sin(x / width * rng.uniform(1, 4) * np.pi + rng.uniform(0, 6.3))
    pixels *= (1 + 0.12 * wave * np.cos(y / height * rng.uniform(1, 3) * np.pi))[..., None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    canvas = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.25) * width
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:
            canvas.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=color)
        elif kind == 1:
            canvas.rectangle([cx - r, cy - r / 2, cx + r / 2, cy + r], fill=color)
        else:
            canvas.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + 0.8 * r)], fill=color)
    image = image.filter(ImageFilter.GaussianBlur(1.2))
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * 3.0
    noisy = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def fresh_jpegs(directory, count, tag):
    """Paths of `count` JPEGs under directory/tag/, written on first use;
    different tags give different images (seeded by tag and index)."""
    folder = os.path.join(directory, f"photos-{tag}")
    os.makedirs(folder, exist_ok=True)
    base = zlib.crc32(tag.encode()) << 20
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i}.jpg")
        if not os.path.exists(path):
            draw(base + i).save(path + ".tmp", format="JPEG", quality=90)
            os.replace(path + ".tmp", path)
        paths.append(path)
    return paths
