"""The synthetic visual-question generator behind the demo model, and the
trainer's auxiliary labels."""

import io
import random

from PIL import Image

from iblip_model.demo import shapes, train


def test_examples_are_deterministic_and_consistent():
    first = list(shapes.examples(5, 60))
    assert first == list(shapes.examples(5, 60))
    assert first != list(shapes.examples(6, 60))
    kinds = {kind for _, kind, _, _ in first}
    assert kinds == set(shapes.TYPES)
    for image, kind, instruction, answer in first:
        Image.open(io.BytesIO(image)).verify()  # PNG or JPEG that decodes
        if kind == "count":
            assert answer in shapes.NUMBERS[1:shapes.MAX_SHAPES + 1]
        if kind == "presence":
            assert answer in ("yes", "no")
        if kind == "position":
            assert answer in shapes.QUARTERS + ["left", "right", "top", "bottom"]


def test_answers_follow_the_scene():
    rng = random.Random(1)
    scene = [{"shape": "circle", "color": "red", "quarter": 0},
             {"shape": "star", "color": "orange", "quarter": 3}]
    assert shapes.caption(scene) == "a red circle and an orange star"
    assert shapes.question(scene, rng, "count")[2] == "two"
    for _ in range(20):
        kind, instruction, answer = shapes.question(scene, rng, "position")
        circle = "circle" in instruction
        if "left or" in instruction:
            assert answer == ("left" if circle else "right")
        elif "top or" in instruction:
            assert answer == ("top" if circle else "bottom")
        else:
            assert answer == ("top left" if circle else "bottom right")


def test_shapes_are_drawn_in_their_quarter():
    scene = [{"shape": "square", "color": "blue", "quarter": 1}]
    image = shapes.render(scene, random.Random(3), encode=False).convert("RGB")
    w, h = image.size
    blue = shapes.COLORS["blue"]
    assert image.getpixel((3 * w // 4, h // 4)) == blue      # top right: the square
    assert image.getpixel((w // 4, 3 * h // 4)) != blue      # bottom left: background


def test_quarter_labels_mark_empty_quarters():
    labels = train.quarter_labels([{"shape": "star", "color": "green", "quarter": 2}])
    assert labels.tolist() == [[4, 6], [4, 6], [shapes.SHAPES.index("star"),
                                                list(shapes.COLORS).index("green")], [4, 6]]


def test_presence_answers_do_not_follow_from_the_count():
    rng = random.Random(7)
    answers = {1: [], 3: []}
    for _ in range(400):
        scene = shapes.random_scene(rng)
        if len(scene) in answers:
            answers[len(scene)].append(shapes.question(scene, rng, "presence")[2])
    for count, said in answers.items():
        assert 0.4 <= said.count("yes") / len(said) <= 0.6, (count, said.count("yes"), len(said))


def test_named_labels_point_at_the_asked_shape():
    scene = [{"shape": "circle", "color": "red", "quarter": 0},
             {"shape": "star", "color": "orange", "quarter": 3}]
    orange = list(shapes.COLORS).index("orange")
    assert train.named_labels(scene, "what color is the star?").tolist() == [3, orange]
    assert train.named_labels(scene, "is there a square?").tolist() == [4, len(shapes.COLORS)]
    assert train.named_labels(scene, "how many shapes are there?").tolist() == [-100, -100]


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
