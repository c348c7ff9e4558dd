"""The trainer's own drawing code: shapes as implicit inside-tests,
antialiased by supersampling each pixel, on plain, gradient or noisy
backgrounds, in numpy. It shares nothing with PIL's ImageDraw (what the
held-out test draws with), so the demo model's test measures what the
model learned about shapes, not about one rasterizer's edges.

Every shape fills its bounding box as a real drawing program's would: a
"circle" in a 2:1 box is an ellipse, a "square" a rectangle.
"""

import math

import numpy as np

_COS36, _SIN36 = math.cos(math.pi / 5), math.sin(math.pi / 5)
# An upright five-pointed star of outer radius 1 spans x in [-sin 72, sin 72]
# and y in [-1, cos 36]: these map its box onto [-1, 1] x [-1, 1].
_STAR_HALF_WIDTH = math.sin(2 * math.pi / 5)
_STAR_HALF_HEIGHT = (1 + _COS36) / 2


def _inside(shape, u, v, detail):
    """Boolean mask of the points (u, v) of the box [-1, 1]^2 (y down)
    inside `shape`. `detail` varies the drawing: the triangle's apex
    offset, the star's inner radius."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.broadcast_to((np.abs(u) <= 1.0) & (np.abs(v) <= 1.0), np.broadcast(u, v).shape)
    if shape == "triangle":
        # Apex at (detail, -1), base from (-1, 1) to (1, 1).
        t = (v + 1.0) / 2.0  # 0 at the apex, 1 at the base
        left = detail + t * (-1.0 - detail)
        right = detail + t * (1.0 - detail)
        return (t >= 0) & (t <= 1) & (u >= left) & (u <= right)
    # Star: fold the angle into [0, 36] degrees from the nearest outer point,
    # then keep the points on the center's side of the edge from the outer
    # point (1, 0) to the inner one (rho cos 36, rho sin 36).
    x = u * _STAR_HALF_WIDTH
    y = (v + 1.0) * _STAR_HALF_HEIGHT - 1.0
    radius = np.hypot(x, y)
    angle = np.mod(np.arctan2(x, -y), 2 * math.pi / 5)
    angle = np.minimum(angle, 2 * math.pi / 5 - angle)
    px, py = radius * np.cos(angle), radius * np.sin(angle)
    ix, iy = detail * _COS36, detail * _SIN36
    return (ix - 1.0) * py - iy * (px - 1.0) >= 0


def coverage(shape, box, width, height, samples=3, detail=0.0):
    """(top, left, fraction[h, w]): how much of each pixel of a
    width x height image the shape in `box` (x0, y0, x1, y1 as fractions
    of the width and height) covers, over the pixels its box touches."""
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    left, top = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    right, bottom = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
    offsets = (np.arange(samples) + 0.5) / samples
    xs = (np.arange(left, right)[:, None] + offsets[None]).reshape(-1)
    ys = (np.arange(top, bottom)[:, None] + offsets[None]).reshape(-1)
    u = ((xs - (x0 + x1) / 2) / max((x1 - x0) / 2, 1e-6))[None, :]
    v = ((ys - (y0 + y1) / 2) / max((y1 - y0) / 2, 1e-6))[:, None]
    inside = _inside(shape, u, v, detail).astype(np.float32)
    h, w = bottom - top, right - left
    return top, left, inside.reshape(h, samples, w, samples).mean(axis=(1, 3))


def background(spec, width, height, rng):
    """float32 [height, width, 3] in 0..255. spec: {"kind": "plain" |
    "gradient", "colors": [rgb, rgb], "angle": radians, "noise": std}."""
    first = np.asarray(spec["colors"][0], dtype=np.float32)
    if spec["kind"] == "gradient":
        last = np.asarray(spec["colors"][1], dtype=np.float32)
        xs = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
        ys = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
        along = math.cos(spec["angle"]) * xs[None, :] + math.sin(spec["angle"]) * ys[:, None]
        t = np.clip(along / (abs(math.cos(spec["angle"])) * 0.5 + abs(math.sin(spec["angle"])) * 0.5)
                    * 0.5 + 0.5, 0.0, 1.0)[..., None]
        image = first * (1 - t) + last * t
    else:
        image = np.broadcast_to(first, (height, width, 3)).copy()
    if spec.get("noise", 0) > 0:
        image = image + rng.normal(0.0, spec["noise"], size=image.shape).astype(np.float32)
    return image


def draw(scene, width, height, rng, samples=3):
    """uint8 [height, width, 3] of the scene (shapes' boxes are fractions
    of the image, so any size draws the same scene)."""
    image = background(scene["background"], width, height, rng)
    for obj in scene["objects"]:
        top, left, fraction = coverage(obj["shape"], obj["box"], width, height, samples,
                                       obj.get("detail", 0.0))
        h, w = fraction.shape
        region = image[top: top + h, left: left + w]
        region += (np.asarray(obj["rgb"], dtype=np.float32) - region) * fraction[..., None]
    noise = scene.get("noise", 0)
    if noise > 0:
        image += rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
