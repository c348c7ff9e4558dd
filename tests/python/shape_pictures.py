"""Pictures of shapes drawn the way another program would draw them, and the
questions the README says the demo model answers, with answers by the
README's rules: the held-out set of tests/python/test_demo_model.py.

Nothing here comes from the trainer (model/python/iblip_model/demo): the
drawing is PIL's ImageDraw polygons (aliased edges; ellipses as 60-gons,
a star of inner radius 0.4), the colors are the named colors of CSS,
matplotlib and ColorBrewer, the backgrounds and layouts (shapes side by
side in a row, stacked in a column, in a tight cluster, or anywhere) are
drawn by this module, and so are the answers.

Scenes: 224x224 to 500x400 pixels, 1-4 shapes of different kinds, no two
overlapping, each of size 1/10 to 1/2 of the short side (the square root of
its box's area) and width:height from 1:2 to 2:1.
"""

import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle", "star")
PALETTE = {  # named colors of CSS, matplotlib's tab10, ColorBrewer Set1, Okabe-Ito
    "red": ["#ff0000", "#d62728", "#e41a1c", "#dc143c"],
    "orange": ["#ffa500", "#ff7f0e", "#ff8c00", "#e69f00"],
    "yellow": ["#ffff00", "#ffd700", "#f0e442", "#ffeb3b"],
    "green": ["#008000", "#2ca02c", "#4daf4a", "#32cd32"],
    "blue": ["#0000ff", "#1f77b4", "#377eb8", "#4169e1"],
    "purple": ["#800080", "#9467bd", "#984ea3", "#8a2be2"],
}
BACKDROPS = ["#ffffff", "#f2f2f2", "#1e1e1e", "#f5f5dc", "#dfe7ef", "#808080", "#faf0e6"]
WORDS = ["zero", "one", "two", "three", "four"]

QUESTIONS = {  # the README's templates
    "color": ["what color is the {a}?", "which color does the {a} have?",
              "Question: what is the color of the {a}? Short answer:", "the {a} is what color?"],
    "count": ["how many shapes are there?", "count the shapes.",
              "Question: how many shapes are in the image? Short answer:", "what is the number of shapes?"],
    "presence": ["is there a {a}?", "does the image contain a {a}?",
                 "Question: is there a {a} in the picture? Short answer:", "can you see a {a}?"],
    "position": ["where is the {a}?", "Question: in which part of the image is the {a}? Short answer:",
                 "is the {a} on the left or on the right?", "is the {a} at the top or at the bottom?",
                 "where is the {a} relative to the {b}?", "is the {a} left or right of the {b}?",
                 "is the {a} above or below the {b}?"],
    "caption": ["describe the image.", "write a short caption.", "A short image caption:",
                "what is in the picture?"],
}


class Shape:
    def __init__(self, kind, color, rgb, left, top, width, height):
        self.kind, self.color, self.rgb = kind, color, rgb
        self.left, self.top, self.width, self.height = left, top, width, height

    def overlaps(self, other, spacing):
        return not (self.left + self.width + spacing <= other.left
                    or other.left + other.width + spacing <= self.left
                    or self.top + self.height + spacing <= other.top
                    or other.top + other.height + spacing <= self.top)


def _outline(shape):
    """The polygon of a shape, fitted to its box."""
    x, y, w, h = shape.left, shape.top, shape.width, shape.height
    if shape.kind == "square":
        unit = [(0, 0), (1, 0), (1, 1), (0, 1)]
    elif shape.kind == "triangle":
        unit = [(0.5, 0), (1, 1), (0, 1)]
    elif shape.kind == "circle":
        unit = [(0.5 + 0.5 * math.cos(2 * math.pi * k / 60), 0.5 + 0.5 * math.sin(2 * math.pi * k / 60))
                for k in range(60)]
    else:
        points = [((1.0 if k % 2 == 0 else 0.4) * math.sin(math.pi * k / 5),
                   -(1.0 if k % 2 == 0 else 0.4) * math.cos(math.pi * k / 5)) for k in range(10)]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        unit = [((px - min(xs)) / (max(xs) - min(xs)), (py - min(ys)) / (max(ys) - min(ys)))
                for px, py in points]
    return [(x + u * w, y + v * h) for u, v in unit]


def _hex(code):
    return tuple(int(code[i: i + 2], 16) for i in (1, 3, 5))


def _paint_background(width, height, rng):
    style = rng.choice(["plain", "gradient", "noisy"])
    first = np.array(_hex(rng.choice(BACKDROPS)), dtype=np.float64)
    if style == "gradient":
        second = np.array(_hex(rng.choice(BACKDROPS)), dtype=np.float64)
        ramp = np.linspace(0.0, 1.0, height if rng.random() < 0.5 else width)
        ramp = ramp[:, None, None] if ramp.size == height else ramp[None, :, None]
        pixels = first + (second - first) * ramp
        pixels = np.broadcast_to(pixels, (height, width, 3))
    else:
        pixels = np.broadcast_to(first, (height, width, 3))
    if style == "noisy":
        amount = rng.choice([15, 25, 40])
        noise = np.random.default_rng(rng.getrandbits(32)).integers(-amount, amount + 1, (height, width, 1))
        pixels = pixels + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _box_sizes(count, short, rng):
    sizes = []
    for _ in range(count):
        side = rng.uniform(0.1, 0.5 if count <= 2 else 0.36) * short
        ratio = 2 ** rng.uniform(-1, 1)
        sizes.append((side * math.sqrt(ratio), side / math.sqrt(ratio)))
    return sizes


def _arrange(style, sizes, width, height, rng):
    """Top-left corners for boxes of `sizes`, or None where they do not fit."""
    spacing = max(4, 0.02 * min(width, height))
    if style in ("row", "column"):
        horizontal = style == "row"
        extent = width if horizontal else height
        span = sum(w if horizontal else h for w, h in sizes)
        free = extent - span - 2 * spacing
        if free < spacing * (len(sizes) - 1):
            return None
        gap = rng.uniform(spacing, free / max(1, len(sizes) - 1)) if len(sizes) > 1 else 0
        start = rng.uniform(spacing, extent - span - gap * (len(sizes) - 1) - spacing)
        across_extent = height if horizontal else width
        middle = rng.uniform(0.25, 0.75) * across_extent
        corners, cursor = [], start
        for w, h in sizes:
            across = (h if horizontal else w)
            offset = min(max(middle - across / 2, 0), across_extent - across)
            corners.append((cursor, offset) if horizontal else (offset, cursor))
            cursor += (w if horizontal else h) + gap
        return corners
    corners = []
    anchor = (rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height)
    for w, h in sizes:
        for _ in range(300):
            if style == "cluster":  # as close to the anchor as the others allow
                reach = 0.15 * min(width, height) + 0.6 * max(w, h) * (1 + len(corners))
                x = anchor[0] + rng.uniform(-reach, reach) - w / 2
                y = anchor[1] + rng.uniform(-reach, reach) - h / 2
            else:
                x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            box = Shape("", "", None, x, y, w, h)
            inside = x >= 0 and y >= 0 and x + w <= width and y + h <= height
            if inside and not any(box.overlaps(Shape("", "", None, cx, cy, cw, ch), spacing)
                                  for (cx, cy), (cw, ch) in zip(corners, sizes)):
                corners.append((x, y))
                break
        else:
            return None
    return corners


def draw(shapes, width, height, background):
    """PNG bytes of `shapes` on a background image."""
    draw = ImageDraw.Draw(background)
    for shape in shapes:
        draw.polygon(_outline(shape), fill=shape.rgb)
    out = io.BytesIO()
    background.save(out, format="PNG")
    return out.getvalue()


def plain(width, height, color="#ffffff"):
    return Image.new("RGB", (width, height), _hex(color))


def picture(rng):
    """(PNG bytes, [Shape], width, height) for one random scene."""
    width, height = rng.randint(224, 500), rng.randint(224, 400)
    count = rng.randint(1, 4)
    kinds = rng.sample(KINDS, count)
    while True:
        style = rng.choice(["row", "column", "cluster", "anywhere"])
        sizes = _box_sizes(count, min(width, height), rng)
        corners = _arrange(style, sizes, width, height, rng)
        if corners is not None:
            break
    background = _paint_background(width, height, rng)
    shapes = []
    for kind, (w, h), (x, y) in zip(kinds, sizes, corners):
        color = rng.choice(list(PALETTE))
        shapes.append(Shape(kind, color, _hex(rng.choice(PALETTE[color])), x, y, w, h))
    return draw(shapes, width, height, background), shapes, width, height


# -- answers, by the README's rules ------------------------------------------

def _middle(shape, width, height):
    return (shape.left + shape.width / 2) / width, (shape.top + shape.height / 2) / height


def _where(x, y):
    def third(value, before, after):
        if abs(value - 1 / 3) < 0.04 or abs(value - 2 / 3) < 0.04:
            return None
        return before if value < 1 / 3 else after if value > 2 / 3 else ""
    row, column = third(y, "top", "bottom"), third(x, "left", "right")
    if row is None or column is None:
        return None
    return f"{row} {column}".strip() or "center"


def _position(template, shape, other, width, height):
    x, y = _middle(shape, width, height)
    if other is None:
        if "left or on the right" in template:
            return None if abs(x - 0.5) < 0.08 else "left" if x < 0.5 else "right"
        if "top or at the bottom" in template:
            return None if abs(y - 0.5) < 0.08 else "top" if y < 0.5 else "bottom"
        return _where(x, y)
    ox, oy = _middle(other, width, height)
    dx, dy = x - ox, y - oy
    if "left or right of" in template:
        return None if abs(dx) < 0.1 else "left" if dx < 0 else "right"
    if "above or below" in template:
        return None if abs(dy) < 0.1 else "above" if dy < 0 else "below"
    if abs(dx) >= 0.1 and abs(dx) >= 2 * abs(dy):
        return ("left of the " if dx < 0 else "right of the ") + other.kind
    if abs(dy) >= 0.1 and abs(dy) >= 2 * abs(dx):
        return ("above the " if dy < 0 else "below the ") + other.kind
    return None


def ask(kind, shapes, width, height, rng):
    """(instruction, answer) of type `kind`, or None where the rules give
    this scene no clear answer of that type."""
    if kind == "count":
        return rng.choice(QUESTIONS[kind]), WORDS[len(shapes)]
    if kind == "caption":
        ordered = sorted(shapes, key=lambda s: KINDS.index(s.kind))
        return rng.choice(QUESTIONS[kind]), " and ".join(
            ("an " if s.color[0] in "aeiou" else "a ") + s.color + " " + s.kind for s in ordered)
    if kind == "color":
        shape = rng.choice(shapes)
        return rng.choice(QUESTIONS[kind]).format(a=shape.kind), shape.color
    if kind == "presence":
        missing = [k for k in KINDS if k not in {s.kind for s in shapes}]
        if missing and rng.random() < 0.5:
            return rng.choice(QUESTIONS[kind]).format(a=rng.choice(missing)), "no"
        return rng.choice(QUESTIONS[kind]).format(a=rng.choice(shapes).kind), "yes"
    by_template = []  # templates equally often, whatever the number of pairs
    for template in QUESTIONS["position"]:
        options = []
        for shape in shapes:
            for other in ([s for s in shapes if s is not shape] if "{b}" in template else [None]):
                answer = _position(template, shape, other, width, height)
                if answer is not None:
                    options.append((template.format(a=shape.kind, b=other and other.kind), answer))
        if options:
            by_template.append(options)
    return rng.choice(rng.choice(by_template)) if by_template else None


def held_out(seed, per_type):
    """`per_type` (PNG bytes, type, instruction, answer) of every type."""
    rng = random.Random(seed)
    out = []
    for kind in ("color", "count", "presence", "position", "caption"):
        made = 0
        while made < per_type:
            image, shapes, width, height = picture(rng)
            asked = ask(kind, shapes, width, height, rng)
            if asked is not None:
                out.append((image, kind) + asked)
                made += 1
    return out
