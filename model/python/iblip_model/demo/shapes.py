"""Synthetic visual questions: 1-3 shapes (circle, square, triangle, star) in
several colors, sizes and positions on varied backgrounds and image sizes,
some JPEG-compressed, with instructions in several templates and short
answers. Deterministic from a seed.

Each shape sits in its own quarter of the image (top left, top right, bottom
left, bottom right), jittered and sized at random, so every answer is
unambiguous. Question types: color ("what color is the circle?" -> "red"),
count ("how many shapes are there?" -> "three"), presence ("is there a
star?" -> "yes", as often as "no"), position ("where is the square?" -> "top left"; "is the
square on the left or on the right?" -> "left"; "... at the top or at the
bottom?" -> "top"), caption ("describe the image." -> "a red circle and a
blue square", shapes in reading order).
"""

import io
import math
import random

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star"]
COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
          "yellow": (235, 210, 20), "purple": (140, 40, 170), "orange": (245, 130, 20)}
NUMBERS = ["zero", "one", "two", "three", "four"]
BACKGROUNDS = [(255, 255, 255), (235, 235, 235), (20, 20, 20), (200, 220, 240), (245, 235, 210)]
TYPES = ["color", "count", "presence", "position", "caption"]

TEMPLATES = {
    "color": ["what color is the {shape}?", "which color does the {shape} have?",
              "Question: what is the color of the {shape}? Short answer:", "the {shape} is what color?"],
    "count": ["how many shapes are there?", "count the shapes.",
              "Question: how many shapes are in the image? Short answer:", "what is the number of shapes?"],
    "presence": ["is there a {shape}?", "does the image contain a {shape}?",
                 "Question: is there a {shape} in the picture? Short answer:", "can you see a {shape}?"],
    "position": ["where is the {shape}?", "is the {shape} on the left or on the right?",
                 "is the {shape} at the top or at the bottom?",
                 "Question: in which part of the image is the {shape}? Short answer:"],
    "caption": ["describe the image.", "write a short caption.", "A short image caption:",
                "what is in the picture?"],
}


def _draw(draw, shape, box, color):
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color)
    else:
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=color)


MAX_SHAPES = 3  # 4 quarters, at most 3 taken: captions stay short enough to learn in 30 min
QUARTERS = ["top left", "top right", "bottom left", "bottom right"]  # reading order


def random_scene(rng):
    """Distinct shapes (one per kind), each in its own quarter."""
    count = rng.randint(1, MAX_SHAPES)
    kinds = rng.sample(SHAPES, count)
    colors = [rng.choice(list(COLORS)) for _ in kinds]
    quarters = sorted(rng.sample(range(4), count))
    return [{"shape": s, "color": c, "quarter": q} for s, c, q in zip(kinds, colors, quarters)]


def render(scene, rng, encode=True):
    width = rng.choice([96, 128, 160, 200, 240])
    height = rng.choice([96, 128, 160, 200])
    background = rng.choice(BACKGROUNDS)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    cell_w, cell_h = width / 2, height / 2
    for obj in scene:
        row, column = divmod(obj["quarter"], 2)
        size = rng.uniform(0.55, 0.85) * min(cell_w, cell_h)
        cx = (column + 0.5) * cell_w + rng.uniform(-0.1, 0.1) * cell_w
        cy = (row + 0.5) * cell_h + rng.uniform(-0.1, 0.1) * cell_h
        color = COLORS[obj["color"]]
        if background == color:
            color = (128, 128, 128)
        _draw(draw, obj["shape"], (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2), color)
    if not encode:
        return image
    buffer = io.BytesIO()
    if rng.random() < 0.3:
        image.save(buffer, format="JPEG", quality=rng.choice([70, 85, 95]))
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def caption(scene):
    return " and ".join(f"{'an' if o['color'][0] in 'aeiou' else 'a'} {o['color']} {o['shape']}"
                        for o in scene)


def question(scene, rng, kind=None):
    """(type, instruction, answer) for a scene."""
    kind = kind or rng.choice(TYPES)
    template = rng.choice(TEMPLATES[kind])
    if kind == "color":
        obj = rng.choice(scene)
        return kind, template.format(shape=obj["shape"]), obj["color"]
    if kind == "count":
        return kind, template, NUMBERS[len(scene)]
    if kind == "presence":
        # Yes and no equally often whatever the count: with the asked shape
        # drawn uniformly, "yes" follows from the number of shapes (a model
        # answering from the count alone was right 68% of the time).
        present = [o["shape"] for o in scene]
        answer = "yes" if rng.random() < 0.5 else "no"
        shape = rng.choice(present if answer == "yes" else [s for s in SHAPES if s not in present])
        return kind, template.format(shape=shape), answer
    if kind == "position":
        obj = rng.choice(scene)
        vertical, horizontal = QUARTERS[obj["quarter"]].split()
        answer = {"left or": horizontal, "top or": vertical}.get(
            next((k for k in ("left or", "top or") if k in template), None), QUARTERS[obj["quarter"]])
        return kind, template.format(shape=obj["shape"]), answer
    return kind, template, caption(scene)


def examples(seed, count):
    """`count` (image bytes, type, instruction, answer), deterministic."""
    rng = random.Random(seed)
    for _ in range(count):
        scene = random_scene(rng)
        kind, instruction, answer = question(scene, rng)
        yield render(scene, rng), kind, instruction, answer


def corpus_lines():
    """Every word the task uses, for the tokenizers."""
    lines = []
    for kind, templates in TEMPLATES.items():
        for t in templates:
            for shape in SHAPES:
                lines.append(t.format(shape=shape))
    lines += list(COLORS) + NUMBERS + QUARTERS + ["yes", "no", "left", "right", "top", "bottom",
                                                  "a", "an", "and"] + SHAPES
    rng = random.Random(99)
    for _ in range(500):
        lines.append(caption(random_scene(rng)))
    return lines
