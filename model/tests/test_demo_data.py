"""The synthetic visual-question generator behind the demo model, its
drawing code, and the trainer's auxiliary labels."""

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from iblip_model.demo import probes, raster, shapes, train


def obj(shape, color, box, rgb=(0, 0, 255)):
    return {"shape": shape, "color": color, "rgb": rgb, "box": box, "detail": 0.45}


def scene_of(*objects, width=400, height=300):
    return {"width": width, "height": height, "objects": list(objects), "noise": 0.0,
            "background": {"kind": "plain", "colors": [(255, 255, 255)] * 2, "angle": 0.0, "noise": 0.0}}


def test_examples_are_deterministic_and_consistent():
    first = list(shapes.examples(5, 60))
    assert first == list(shapes.examples(5, 60))
    assert first != list(shapes.examples(6, 60))
    assert {kind for _, kind, _, _ in first} == set(shapes.TYPES)
    for image, kind, instruction, answer in first:
        Image.open(io.BytesIO(image)).verify()  # PNG or JPEG that decodes
        if kind == "count":
            assert answer in shapes.NUMBERS[1:shapes.MAX_SHAPES + 1]
        if kind == "presence":
            assert answer in ("yes", "no")


def test_scenes_cover_the_distribution_without_overlaps():
    rng = random.Random(2)
    counts, sides, sizes, aspects = set(), [], [], []
    for _ in range(400):
        scene = shapes.random_scene(rng)
        objects = scene["objects"]
        counts.add(len(objects))
        assert len({o["shape"] for o in objects}) == len(objects)  # one of each kind at most
        short = min(scene["width"], scene["height"])
        sides += [scene["width"], scene["height"]]
        for i, o in enumerate(objects):
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            w, h = (x1 - x0) * scene["width"], (y1 - y0) * scene["height"]
            sizes.append((w * h) ** 0.5 / short)
            aspects.append(w / h)
            for other in objects[:i]:
                a, b = o["box"], other["box"]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert counts == {1, 2, 3, 4}
    assert min(sides) < 224 and max(sides) > 500
    assert min(sizes) < 0.1 and max(sizes) > 0.5
    assert min(aspects) < 0.5 and max(aspects) > 2


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_each_shape_is_drawn_inside_its_box_and_fills_its_middle(shape):
    scene = scene_of(obj(shape, "blue", (0.5, 0.5, 0.9, 0.9)))
    image = raster.draw(scene, 200, 100, np.random.default_rng(0)).astype(int)
    blue = np.abs(image - [0, 0, 255]).sum(axis=2) < 30
    ys, xs = np.nonzero(blue)
    assert xs.min() >= 100 and xs.max() < 180 and ys.min() >= 50 and ys.max() < 90
    assert blue[70, 140]  # the box's middle
    assert not blue[:50].any() and not blue[:, :100].any()


def test_shapes_differ_from_one_another():
    drawn = {s: raster.coverage(s, (0, 0, 1, 1), 40, 40)[2] for s in shapes.SHAPES}
    areas = {s: float(c.mean()) for s, c in drawn.items()}
    assert areas["square"] == pytest.approx(1.0)
    assert areas["circle"] == pytest.approx(np.pi / 4, abs=0.01)
    assert areas["triangle"] == pytest.approx(0.5, abs=0.01)
    assert areas["star"] < 0.5


def test_colors_stay_in_their_hue_ranges():
    import colorsys
    rng = random.Random(4)
    for name, ((low, high), _, _) in shapes.COLOR_RANGES.items():
        for _ in range(50):
            r, g, b = (c / 255 for c in shapes.random_color(name, rng))
            hue = colorsys.rgb_to_hsv(r, g, b)[0] * 360
            hue = hue - 360 if hue > 300 and low < 0 else hue
            assert low - 1 <= hue <= high + 1, (name, hue)


def test_position_answers_follow_the_rules():
    circle = obj("circle", "red", (0.05, 0.4, 0.2, 0.6))      # center (0.125, 0.5)
    square = obj("square", "blue", (0.7, 0.05, 0.9, 0.25))    # center (0.8, 0.15)
    star = obj("star", "green", (0.31, 0.4, 0.39, 0.6))       # center (0.35, 0.5): near the third
    assert shapes.zone(circle) == "left"
    assert shapes.zone(square) == "top right"
    assert shapes.zone(obj("star", "red", (0.45, 0.45, 0.55, 0.55))) == "center"
    assert shapes.zone(star) is None
    assert shapes.position_answer(circle, "is the {shape} on the left or on the right?") == "left"
    assert shapes.position_answer(star, "is the {shape} at the top or at the bottom?") is None
    assert shapes.relation(circle, square, "is the {shape} left or right of the {other}?") == "left"
    assert shapes.relation(square, circle, "is the {shape} above or below the {other}?") == "above"
    # dx 0.675, dy 0.35: less than twice -> no clear "where ... relative to"
    assert shapes.relation(circle, square, "where is the {shape} relative to the {other}?") is None
    assert shapes.relation(circle, star, "where is the {shape} relative to the {other}?") == \
        "left of the star"


def test_position_questions_ask_only_what_has_a_clear_answer():
    rng = random.Random(1)
    scene = scene_of(obj("circle", "red", (0.05, 0.4, 0.2, 0.6)),
                     obj("star", "orange", (0.31, 0.4, 0.39, 0.6)))
    for _ in range(50):
        kind, instruction, answer, named = shapes.question(scene, rng, "position")
        assert "part of" not in instruction or "circle" in instruction  # the star has no zone
        assert answer is not None and named[0] in instruction


def test_captions_list_shapes_in_kind_order():
    scene = scene_of(obj("star", "orange", (0.1, 0.1, 0.2, 0.2)), obj("circle", "red", (0.5, 0.5, 0.6, 0.6)))
    assert shapes.caption(scene) == "a red circle and an orange star"
    assert shapes.question(scene, random.Random(1), "count")[2] == "two"


def test_presence_answers_do_not_follow_from_the_count():
    rng = random.Random(7)
    answers = {1: [], 3: []}
    for _ in range(600):
        scene = shapes.random_scene(rng)
        if len(scene["objects"]) in answers:
            answers[len(scene["objects"])].append(shapes.question(scene, rng, "presence")[2])
    for count, said in answers.items():
        assert 0.4 <= said.count("yes") / len(said) <= 0.6, (count, said.count("yes"), len(said))


def test_patch_labels_mark_the_shapes_patches():
    scene = scene_of(obj("square", "green", (0.5, 0.0, 1.0, 0.5)))
    classes, centers = probes.patch_labels(scene, 4)
    classes, centers = classes.view(4, 4, 2), centers.view(4, 4, 2)
    green, square = shapes.COLOR_NAMES.index("green"), shapes.SHAPES.index("square")
    assert classes[:2, 2:].tolist() == [[[square, green]] * 2] * 2
    assert (classes[2:, :, 0] == probes.BACKGROUND_KIND).all()
    assert (classes[:, :2, 1] == probes.ABSENT_COLOR).all()
    assert centers[:2, 2:].reshape(-1, 2).tolist() == [[0.75, 0.25]] * 4
    assert torch.isnan(centers[2:]).all() and torch.isnan(centers[:, :2]).all()


def test_query_labels_describe_slots_and_named_shapes():
    circle = obj("circle", "red", (0.0, 0.0, 0.2, 0.2))
    star = obj("star", "orange", (0.8, 0.8, 1.0, 1.0))
    scene = scene_of(circle, star)
    labels = probes.SceneLabels()
    slots = labels.add_image(scene)
    labels.add_question(scene, slots, ["star", "circle"])
    labels.add_question(scene, slots, ["square"])
    colors, xy, thirds, relation, count, named_kinds = labels.tensors(2)
    red, orange = shapes.COLOR_NAMES.index("red"), shapes.COLOR_NAMES.index("orange")
    absent = probes.ABSENT_COLOR
    assert colors[0].tolist() == [red, absent, absent, orange, orange, red]
    assert colors[1].tolist()[4:] == [absent, probes.IGNORE]
    assert xy[0, 4].tolist() == pytest.approx([0.9, 0.9])
    assert thirds[0, 0].tolist() == [0, 0] and thirds[0, 3].tolist() == [2, 2]
    assert relation.tolist() == [[1, 1], [probes.IGNORE, probes.IGNORE]]  # star right of, below
    assert count.tolist() == [2, 2]
    star, circle = shapes.SHAPES.index("star"), shapes.SHAPES.index("circle")
    assert named_kinds.tolist() == [[star, circle], [probes.IGNORE, probes.IGNORE]]  # no square


def test_attention_loss_is_low_only_on_the_described_shapes_patches():
    scene = scene_of(obj("square", "green", (0.5, 0.0, 1.0, 0.5)))
    patches = tuple(t[None] for t in probes.patch_labels(scene, 4))
    square = shapes.SHAPES.index("square")
    named = torch.tensor([[square, probes.IGNORE]])
    on_square = torch.zeros(1, 1, 7, 17)
    on_square[..., 1:][..., patches[0][0, :, 0] == square] = 1 / 4
    elsewhere = torch.full((1, 1, 7, 17), 1 / 17)
    assert probes.attention_loss(on_square, patches, named) < 1.5
    assert probes.attention_loss(elsewhere, patches, named) > 2.5


def test_the_untrained_model_is_the_same_in_every_process(tmp_path):
    import subprocess
    import sys
    train.build_checkpoint_files(str(tmp_path), 0)
    script = ("import sys, torch; from iblip_model import hf_config; from iblip_model.demo import train; "
              "m = train.build_model(hf_config.load_config(sys.argv[1]), 0); "
              "print(float(sum(p.double().sum() for p in m.parameters())))")
    sums = [subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]
    assert sums[0] == sums[1] and sums[0]


def test_the_same_command_trains_the_same_checkpoint(tmp_path):
    """Two data-parallel workers, a few steps, twice: identical weights."""
    import subprocess
    import sys
    command = [sys.executable, "-m", "iblip_model.demo.train", "--steps", "3", "--scenes-per-batch", "2",
               "--questions-per-scene", "2", "--eval-count", "0", "--workers", "2"]
    weights = []
    for run in ("a", "b"):
        subprocess.run(command + ["--output", str(tmp_path / run)], check=True, capture_output=True)
        weights.append(torch.load(tmp_path / run / "pytorch_model.bin"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    untrained = train.build_model(train.hf_config.load_config(str(tmp_path / "a")), 0).state_dict()
    assert not all(torch.equal(untrained[k], weights[0][k]) for k in weights[0])  # it did train
