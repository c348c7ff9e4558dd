"""Our PyTorch InstructBLIP and its exported TorchScript modules against the
outputs of Hugging Face transformers itself (../shared/fixtures)."""

import json
import os

import numpy as np
import pytest
import torch

from model_test_support import fixture_path
from iblip_model.export import export
from iblip_model.format_quality import reference_tokens
from iblip_model.modeling.instructblip import greedy_generate, load_pretrained
from iblip_model.package_runner import PackageRunner

TOLERANCE = 1e-4  # the bound for Q-Former output and logits
CASES = [(checkpoint, case) for checkpoint in ("tiny-llama", "tiny-t5")
         for case in ("batch2", "gradient", "gray_noise", "rgba_shapes", "shapes")]


@pytest.fixture(scope="module")
def models():
    return {name: load_pretrained(fixture_path("checkpoints", name))
            for name in ("tiny-llama", "tiny-t5")}


def load_case(checkpoint, case):
    directory = fixture_path("cases", checkpoint, case)
    with open(os.path.join(directory, "reference.json"), encoding="utf-8") as f:
        reference = json.load(f)
    arrays = {name[:-4]: torch.from_numpy(np.load(os.path.join(directory, name)))
              for name in os.listdir(directory) if name.endswith(".npy")}
    return reference, arrays


def inputs(reference, arrays):
    return (arrays["pixel_values"], torch.tensor(reference["input_ids"]),
            torch.tensor(reference["attention_mask"]), torch.tensor(reference["qformer_input_ids"]),
            torch.tensor(reference["qformer_attention_mask"]))


def max_diff(a, b):
    return (a.to(torch.float32) - b.to(torch.float32)).abs().max().item()


@pytest.mark.parametrize("checkpoint,case", CASES)
@torch.no_grad()
def test_eager_model_matches_reference(models, checkpoint, case):
    model = models[checkpoint]
    reference, arrays = load_case(checkpoint, case)
    pixels, ids, mask, qids, qmask = inputs(reference, arrays)
    queries = model.config.num_query_tokens
    assert max_diff(model.vision_model(pixels), arrays["vision_last_hidden_state"]) <= TOLERANCE
    qformer = model.query_output(pixels, qids, qmask)
    assert max_diff(qformer, arrays["qformer_last_hidden_state"]) <= TOLERANCE
    soft = model.language_projection(qformer[:, :queries])
    assert max_diff(soft, arrays["language_model_inputs"]) <= TOLERANCE

    embeds = torch.cat([soft, model.embed(ids)], dim=1)
    full_mask = torch.cat([torch.ones(ids.shape[0], queries, dtype=mask.dtype), mask], dim=1)
    lm = model.language_model
    if checkpoint == "tiny-llama":
        # model(**inputs) without position_ids: positions 0..L-1.
        positions = torch.arange(full_mask.shape[1])[None].expand(ids.shape[0], -1)
        hidden, _, _ = lm.forward_cached(embeds, full_mask, positions, None, None)
        logits = lm.logits(hidden)
        keep = full_mask.bool()
        assert max_diff(logits[keep], arrays["logits_forward"][keep]) <= TOLERANCE
    else:
        encoded = lm.encode(embeds, full_mask)
        assert max_diff(encoded, arrays["t5_encoder_last_hidden_state"]) <= TOLERANCE

    expected, eos, pad = reference_tokens(reference)
    tokens, step_logits = greedy_generate(model, pixels, ids, mask, qids, qmask, 20, [eos], pad)
    assert tokens == expected
    for step in range(step_logits.shape[0]):
        for row, row_tokens in enumerate(tokens):
            if step < len(row_tokens):  # rows that were still running
                assert max_diff(step_logits[step, row], arrays["greedy_step_logits"][step, row]) <= TOLERANCE


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    return {name: export(fixture_path("checkpoints", name), str(root / name), log=lambda _: None)
            and str(root / name) for name in ("tiny-llama", "tiny-t5")}


@pytest.mark.parametrize("checkpoint,case", CASES)
@torch.no_grad()
def test_exported_torchscript_matches_reference(exported, checkpoint, case):
    runner = PackageRunner(exported[checkpoint])
    reference, arrays = load_case(checkpoint, case)
    pixels, ids, mask, qids, qmask = inputs(reference, arrays)
    soft = runner.soft_prompt(pixels, qids, qmask)
    assert max_diff(soft, arrays["language_model_inputs"]) <= TOLERANCE
    expected, eos, _ = reference_tokens(reference)
    for row in range(ids.shape[0]):
        prompt = ids[row][mask[row].bool()][None]
        tokens, logits = runner.generate(soft[row:row + 1], prompt, 20, eos)
        assert tokens == expected[row]
        for step in range(len(tokens)):
            assert max_diff(logits[step], arrays["greedy_step_logits"][step, row]) <= TOLERANCE
