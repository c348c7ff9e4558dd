"""The synthetic visual-question generator behind the demo model."""

import io
import random

from PIL import Image

from iblip_model.demo import shapes


def test_examples_are_deterministic_and_consistent():
    first = list(shapes.examples(5, 40))
    assert first == list(shapes.examples(5, 40))
    assert first != list(shapes.examples(6, 40))
    kinds = {kind for _, kind, _, _ in first}
    assert kinds == set(shapes.TYPES)
    for image, kind, instruction, answer in first:
        Image.open(io.BytesIO(image)).verify()  # PNG or JPEG that decodes
        if kind == "count":
            assert answer in shapes.NUMBERS[1:]
        if kind in ("presence",):
            assert answer in ("yes", "no")
        if kind == "position":
            assert answer in ("left", "right")


def test_answers_follow_the_scene():
    rng = random.Random(1)
    scene = [{"shape": "circle", "color": "red", "column": 0},
             {"shape": "star", "color": "blue", "column": 3}]
    assert shapes.caption(scene) == "a red circle and a blue star"
    assert shapes.question(scene, rng, "count")[2] == "two"
    for _ in range(10):
        kind, instruction, answer = shapes.question(scene, rng, "position")
        assert answer == ("left" if "circle" in instruction else "right")
