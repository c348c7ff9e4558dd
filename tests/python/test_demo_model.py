"""The trained demo model (build/demo-model) through the real gRPC server:
greedy answers to held-out synthetic questions must be right as often as
the README says, per question type; the questions come from a seed the
trainer neither trains on nor evaluates on (its own evaluation uses
EVAL_SEED, so a checkpoint chosen by it could not be tuned to this test).
And the instruction must reach both the Q-Former and the LM: different
questions about one image get different, correct answers."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from server_harness import BUILD_DIR, start_server, stop_server
from iblip_model.demo import shapes
from iblip_model.demo.train import EVAL_SEED

TEST_SEED = 20261201  # neither training (seed * 1000 + rank) nor EVAL_SEED

DEMO_PACKAGE = os.path.join(BUILD_DIR, "demo-model")
QUESTIONS = 400  # ~80 per type: one flipped answer moves a type's score ~1%


@pytest.fixture(scope="module")
def demo():
    from iblip_client import Client
    assert os.path.exists(os.path.join(DEMO_PACKAGE, "manifest.json")), \
        "the build exports model/demo-checkpoint to build/demo-model"
    running = start_server(package_dir=DEMO_PACKAGE)
    try:
        with Client(running.address, timeout=60) as client:
            yield client
    finally:
        assert stop_server(running) == 0, "".join(running.log)


def answer(client, image, question):
    response = client.generate_unary(image, question, max_new_tokens=24)
    return response.sequences[0].text.strip()


def test_the_test_seed_is_none_the_trainer_uses():
    training_seeds = {seed * 1000 + rank for seed in range(16) for rank in range(16)}
    assert TEST_SEED != EVAL_SEED and TEST_SEED not in training_seeds


def test_held_out_accuracy_per_question_type(demo):
    examples = list(shapes.examples(TEST_SEED, QUESTIONS))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda e: answer(demo, e[0], e[2]), examples))
    right, total = {}, {}
    for (_, kind, _, expected), got in zip(examples, answers):
        total[kind] = total.get(kind, 0) + 1
        right[kind] = right.get(kind, 0) + (got == expected)
    accuracy = {kind: right[kind] / total[kind] for kind in total}
    overall = sum(right.values()) / len(examples)
    print(f"held-out accuracy {overall:.3f}: " +
          ", ".join(f"{k} {v:.3f} ({total[k]})" for k, v in sorted(accuracy.items())))
    assert set(total) == set(shapes.TYPES)
    assert overall >= 0.90, accuracy
    assert all(v >= 0.80 for v in accuracy.values()), accuracy


def test_different_questions_about_one_image_get_different_right_answers(demo):
    import random
    rng = random.Random(TEST_SEED + 1)
    scene = [{"shape": "circle", "color": "red", "quarter": 0},
             {"shape": "square", "color": "blue", "quarter": 3}]
    image = shapes.render(scene, rng)
    asked = {
        "what color is the circle?": "red",
        "what color is the square?": "blue",
        "how many shapes are there?": "two",
        "is there a star?": "no",
        "where is the square?": "bottom right",
        "describe the image.": "a red circle and a blue square",
    }
    answers = {q: answer(demo, image, q) for q in asked}
    assert answers == asked
