"""Synthetic visual questions for the demo model: 1-4 shapes (at most one
circle, square, triangle and star) in six colors, anywhere in images of
many sizes and aspect ratios, on plain, gradient or noisy backgrounds,
with instructions in several templates and short answers. Deterministic
from a seed.

Scenes: the image is W x H (each side 180-560 px; the model sees it
squashed to a square, as the processor resizes). Shapes never overlap;
each has a size (the square root of its box's area) of 0.08-0.55 of the
short side and a width:height of 1:2.2 to 2.2:1, laid out in a row, a
column, a cluster, a grid or scattered. Positions are measured at box
centers, as fractions of the width and height (x right, y down).

Answers (the README states the same rules; the held-out test checks them
with its own code):
  color     "what color is the circle?" -> "red"
  count     "how many shapes are there?" -> "three"
  presence  "is there a star?" -> "yes" / "no", equally often
  position  "where is the square?" -> one of nine zones ("top left", "top",
            "top right", "left", "center", "right", "bottom left",
            "bottom", "bottom right"; the image in thirds), asked only when
            the center is at least ZONE_MARGIN from a third's line;
            "... on the left or on the right?" -> "left" (|x - 1/2| >= SIDE_MARGIN);
            "... at the top or at the bottom?" -> "top";
            "where is the circle relative to the square?" -> "left of the
            square" / "right of ..." / "above the square" / "below ...",
            asked when one axis's distance is at least twice the other's
            and at least PAIR_MARGIN;
            "is the circle left or right of the square?" -> "left"
            (|dx| >= PAIR_MARGIN); "... above or below ...?" -> "above".
  caption   "describe the image." -> "a red circle and a blue square":
            every shape, in the order circle, square, triangle, star.
"""

import colorsys
import io
import math
import random

import numpy as np
from PIL import Image

from iblip_model.demo import raster

SHAPES = ["circle", "square", "triangle", "star"]
COLOR_NAMES = ["red", "orange", "yellow", "green", "blue", "purple"]
# Hue ranges (degrees) and saturation, value floors per color: wide enough to
# hold what drawing programs call these (CSS, matplotlib, ColorBrewer), with
# gaps between neighbours.
COLOR_RANGES = {
    "red": ((-15, 10), 0.55, 0.55), "orange": ((18, 43), 0.6, 0.8),
    "yellow": ((48, 64), 0.6, 0.8), "green": ((85, 160), 0.5, 0.4),
    "blue": ((195, 250), 0.5, 0.5), "purple": ((265, 312), 0.38, 0.45),
}
NUMBERS = ["zero", "one", "two", "three", "four"]
TYPES = ["color", "count", "presence", "position", "caption"]
MAX_SHAPES = 4
ZONE_MARGIN = 0.04   # from the lines at 1/3 and 2/3
SIDE_MARGIN = 0.08   # from the middle line, for left-or-right, top-or-bottom
PAIR_MARGIN = 0.1    # between two shapes' centers, for the relative questions
ZONES = ["top left", "top", "top right", "left", "center", "right",
         "bottom left", "bottom", "bottom right"]

TEMPLATES = {
    "color": ["what color is the {shape}?", "which color does the {shape} have?",
              "Question: what is the color of the {shape}? Short answer:", "the {shape} is what color?"],
    "count": ["how many shapes are there?", "count the shapes.",
              "Question: how many shapes are in the image? Short answer:", "what is the number of shapes?"],
    "presence": ["is there a {shape}?", "does the image contain a {shape}?",
                 "Question: is there a {shape} in the picture? Short answer:", "can you see a {shape}?"],
    "position": ["where is the {shape}?",
                 "Question: in which part of the image is the {shape}? Short answer:",
                 "is the {shape} on the left or on the right?",
                 "is the {shape} at the top or at the bottom?",
                 "where is the {shape} relative to the {other}?",
                 "is the {shape} left or right of the {other}?",
                 "is the {shape} above or below the {other}?"],
    "caption": ["describe the image.", "write a short caption.", "A short image caption:",
                "what is in the picture?"],
}
LAYOUTS = ["scatter", "row", "column", "cluster", "grid"]


def random_color(name, rng):
    (low, high), saturation, value = COLOR_RANGES[name]
    hue = (rng.uniform(low, high) % 360) / 360
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(saturation, 1.0), rng.uniform(value, 1.0))
    return tuple(int(round(255 * c)) for c in rgb)


def _pale(rng):
    """A background color: any lightness, little saturation, so no shape
    color can be mistaken for it."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.15), rng.choice(
        [rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.85)]))
    return tuple(int(round(255 * c)) for c in rgb)


def random_background(rng):
    kind = rng.choice(["plain", "plain", "gradient", "noisy"])
    spec = {"kind": "gradient" if kind == "gradient" else "plain",
            "colors": [_pale(rng), _pale(rng)], "angle": rng.uniform(0, 2 * math.pi), "noise": 0.0}
    if kind == "noisy":
        spec["kind"] = rng.choice(["plain", "gradient"])
        spec["noise"] = rng.uniform(4, 30)
    return spec


def _sizes(count, rng):
    """Box sides as fractions of the short side."""
    sizes = []
    for _ in range(count):
        size = math.exp(rng.uniform(math.log(0.08), math.log(0.55 if count < 3 else 0.42)))
        aspect = math.exp(rng.uniform(math.log(1 / 2.2), math.log(2.2)))
        sizes.append((size * math.sqrt(aspect), size / math.sqrt(aspect)))
    return sizes


def random_scene(rng):
    """One scene: distinct shape kinds, any colors, non-overlapping boxes."""
    width, height = rng.randint(180, 560), rng.randint(180, 560)
    count = rng.randint(1, MAX_SHAPES)
    kinds = rng.sample(SHAPES, count)
    layout = rng.choice(LAYOUTS) if count > 1 else "scatter"
    for attempt in range(60):
        boxes = _layout_boxes(layout if attempt < 30 else "scatter", _sizes(count, rng),
                              width, height, rng)
        if boxes is not None:
            break
    else:
        boxes = _layout_boxes("scatter", [(0.1, 0.1)] * count, width, height, rng, tries=500)
    objects = []
    for kind, box in zip(kinds, boxes):
        color = rng.choice(COLOR_NAMES)
        detail = rng.uniform(-0.3, 0.3) if kind == "triangle" else rng.uniform(0.36, 0.55)
        objects.append({"shape": kind, "color": color, "rgb": random_color(color, rng),
                        "box": box, "detail": detail})
    return {"width": width, "height": height, "objects": objects,
            "background": random_background(rng),
            "noise": rng.uniform(2, 10) if rng.random() < 0.15 else 0.0}


def _layout_boxes(layout, sizes, width, height, rng, tries=1):
    """Boxes (fractions of the image) for `sizes` (short-side units), or
    None where they overlap or leave the image."""
    short = min(width, height)
    sx, sy = short / width, short / height  # short-side units -> fractions
    gap = 0.012
    boxes = []
    if layout in ("row", "column"):
        along = 0 if layout == "row" else 1
        spans = [s[along] * (sx if along == 0 else sy) for s in sizes]
        gaps = [rng.uniform(0.02, 0.2) for _ in sizes[1:]]
        total = sum(spans) + sum(gaps)
        if total > 0.98:
            return None
        position = rng.uniform(0.01, 0.99 - total)
        line = rng.uniform(0.1, 0.9)
        for i, (w, h) in enumerate(sizes):
            w, h = w * sx, h * sy
            across = line + rng.uniform(-0.05, 0.05)
            if along == 0:
                box = (position, across - h / 2, position + w, across + h / 2)
            else:
                box = (across - w / 2, position, across + w / 2, position + h)
            position += spans[i] + (gaps[i] if i < len(gaps) else 0)
            boxes.append(box)
    elif layout == "grid":
        columns = rng.choice([2, 2, 3])
        rows = 2
        if len(sizes) > columns * rows:
            return None
        cells = rng.sample(range(columns * rows), len(sizes))
        left, top = rng.uniform(0, 0.3), rng.uniform(0, 0.3)
        cell_w, cell_h = rng.uniform(0.7, 1.0 - left) / columns, rng.uniform(0.7, 1.0 - top) / rows
        for (w, h), cell in zip(sizes, cells):
            row, column = divmod(cell, columns)
            cx, cy = left + (column + 0.5) * cell_w, top + (row + 0.5) * cell_h
            w, h = min(w * sx, cell_w * 0.9), min(h * sy, cell_h * 0.9)
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    else:
        cluster = layout == "cluster"
        center = (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
        for w, h in sizes:
            w, h = w * sx, h * sy
            for _ in range(tries * (40 if cluster else 20)):
                if cluster:
                    spread = 0.08 + 0.1 * len(boxes)
                    cx = center[0] + rng.uniform(-spread, spread) * sx * 2
                    cy = center[1] + rng.uniform(-spread, spread) * sy * 2
                else:
                    cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                if _fits(box, boxes, gap):
                    boxes.append(box)
                    break
            else:
                return None
    for i, box in enumerate(boxes):
        if not _fits(box, boxes[:i], gap):
            return None
    return boxes


def _fits(box, others, gap):
    if box[0] < 0 or box[1] < 0 or box[2] > 1 or box[3] > 1:
        return False
    return all(box[2] + gap <= o[0] or o[2] + gap <= box[0] or box[3] + gap <= o[1]
               or o[3] + gap <= box[1] for o in others)


def center(obj):
    x0, y0, x1, y1 = obj["box"]
    return (x0 + x1) / 2, (y0 + y1) / 2


def zone(obj):
    """The zone word of the shape's center, or None near a third's line."""
    words = []
    for value, (low, high) in zip(reversed(center(obj)), (("top", "bottom"), ("left", "right"))):
        if min(abs(value - 1 / 3), abs(value - 2 / 3)) < ZONE_MARGIN:
            return None
        words.append(low if value < 1 / 3 else high if value > 2 / 3 else "")
    return " ".join(w for w in words if w) or "center"


def relation(obj, other, template):
    """The answer about obj relative to other for a relative template, or
    None where the rule does not make it clear."""
    (ax, ay), (bx, by) = center(obj), center(other)
    dx, dy = ax - bx, ay - by
    if "left or right" in template:
        return None if abs(dx) < PAIR_MARGIN else ("left" if dx < 0 else "right")
    if "above or below" in template:
        return None if abs(dy) < PAIR_MARGIN else ("above" if dy < 0 else "below")
    name = other["shape"]
    if abs(dx) >= PAIR_MARGIN and abs(dx) >= 2 * abs(dy):
        return f"{'left' if dx < 0 else 'right'} of the {name}"
    if abs(dy) >= PAIR_MARGIN and abs(dy) >= 2 * abs(dx):
        return f"{'above' if dy < 0 else 'below'} the {name}"
    return None


def position_answer(obj, template, other=None):
    if "{other}" in template:
        return relation(obj, other, template)
    x, y = center(obj)
    if "left or on the right" in template:
        return None if abs(x - 0.5) < SIDE_MARGIN else ("left" if x < 0.5 else "right")
    if "top or at the bottom" in template:
        return None if abs(y - 0.5) < SIDE_MARGIN else ("top" if y < 0.5 else "bottom")
    return zone(obj)


def caption(scene):
    ordered = sorted(scene["objects"], key=lambda o: SHAPES.index(o["shape"]))
    return " and ".join(f"{'an' if o['color'][0] in 'aeiou' else 'a'} {o['color']} {o['shape']}"
                        for o in ordered)


def question(scene, rng, kind=None):
    """(type, instruction, answer, named shapes) for a scene; a position
    question goes to another template or shape where its rule gives no
    clear answer (None where none has one)."""
    kind = kind or rng.choice(TYPES)
    objects = scene["objects"]
    if kind == "position":
        # A template first (each equally often, however many pairs it has),
        # then a shape (and another) it gives a clear answer for.
        templates = list(TEMPLATES[kind])
        rng.shuffle(templates)
        for template in templates:
            choices = [(o, p) for o in objects
                       for p in ([x for x in objects if x is not o] if "{other}" in template else [None])]
            choices = [(o, p, position_answer(o, template, p)) for o, p in choices]
            choices = [c for c in choices if c[2] is not None]
            if choices:
                obj, other, answer = rng.choice(choices)
                named = [obj["shape"]] + ([other["shape"]] if other else [])
                return kind, template.format(shape=obj["shape"], other=other and other["shape"]), \
                    answer, named
        return None
    template = rng.choice(TEMPLATES[kind])
    if kind == "color":
        obj = rng.choice(objects)
        return kind, template.format(shape=obj["shape"]), obj["color"], [obj["shape"]]
    if kind == "count":
        return kind, template, NUMBERS[len(objects)], []
    if kind == "presence":
        # Yes and no equally often where both can be (a model answering from
        # the count alone was once right 68% of the time).
        present = [o["shape"] for o in objects]
        absent = [s for s in SHAPES if s not in present]
        answer = "yes" if not absent or rng.random() < 0.5 else "no"
        shape = rng.choice(present if answer == "yes" else absent)
        return kind, template.format(shape=shape), answer, [shape]
    return kind, template, caption(scene), []


def render(scene, rng, size=None, encode=True):
    """The scene at `size` (width, height; default its own), as PNG or
    JPEG bytes (encode) or a PIL image."""
    width, height = size or (scene["width"], scene["height"])
    image = Image.fromarray(raster.draw(scene, width, height, np.random.default_rng(rng.getrandbits(64))))
    if not encode:
        return image
    buffer = io.BytesIO()
    if rng.random() < 0.3:
        image.save(buffer, format="JPEG", quality=rng.choice([70, 85, 95]))
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def examples(seed, count):
    """`count` (image bytes, type, instruction, answer), deterministic."""
    rng = random.Random(seed)
    made = 0
    while made < count:
        scene = random_scene(rng)
        asked = question(scene, rng)
        if asked is None:
            continue
        made += 1
        yield render(scene, rng), asked[0], asked[1], asked[2]


def corpus_lines():
    """Every word the task uses, for the tokenizers."""
    lines = []
    for templates in TEMPLATES.values():
        for t in templates:
            for shape in SHAPES:
                for other in SHAPES:
                    if other != shape or "{other}" not in t:
                        lines.append(t.format(shape=shape, other=other))
    lines += COLOR_NAMES + NUMBERS + ZONES + ["yes", "no", "left", "right", "top", "bottom", "above",
                                              "below", "a", "an", "and", "the", "of"] + SHAPES
    lines += [f"{side} of the {s}" for side in ("left", "right") for s in SHAPES]
    lines += [f"{side} the {s}" for side in ("above", "below") for s in SHAPES]
    rng = random.Random(99)
    for _ in range(500):
        scene = random_scene(rng)
        lines.append(caption(scene))
    return lines
