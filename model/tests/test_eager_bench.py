"""The eager baseline (iblip_model.eager_bench): its preprocessing is Hugging
Face's, its generate loop streams every token, its command prints what
bench/run reads."""

import io
import json
import os
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from iblip_model.eager_bench import Processor, load_requests, stream
from iblip_model.modeling.instructblip import greedy_generate, load_pretrained
from model_test_support import fixture_path

PYTHON_DIR = os.path.join(os.path.dirname(__file__), "..", "python")


def test_pixels_match_the_hugging_face_processor():
    processor = Processor(fixture_path("checkpoints", "tiny-llama"), "llama")
    index = json.load(open(fixture_path("processor", "index.json")))
    checked = 0
    for case in index["cases"]:
        if case["target"] != 224:
            continue
        jpeg = open(fixture_path("processor", case["image"]), "rb").read()
        expected = np.load(fixture_path("processor", case["pixel_values"]))[0]
        got = processor.pixels(jpeg).numpy()
        # BICUBIC in PIL on 8-bit RGB is exact; float rounding of the
        # normalization differs in the last bits only.
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=case["image"])
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("name,family", [("tiny-llama", "llama"), ("tiny-t5", "t5")])
def test_prompt_ids_match_the_processor_for_plain_text(name, family):
    processor = Processor(fixture_path("checkpoints", name), family)
    cases = json.load(open(fixture_path("tokens", f"{name}.json")))["cases"]
    plain = [c for c in cases if c["text"] and c["text"].isascii() and "  " not in c["text"]
             and "\t" not in c["text"] and "<" not in c["text"] and "[" not in c["text"]]
    assert len(plain) >= 3
    for case in plain:
        assert processor.prompt_ids(case["text"]) == case["input_ids"], case["text"]
        assert processor.qformer_ids(case["text"]) == case["qformer_input_ids"], case["text"]


def _jpeg(color, size=(96, 72)):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_batches_pad_the_prompt_left_and_the_instruction_right():
    processor = Processor(fixture_path("checkpoints", "tiny-llama"), "llama")
    pixels, ids, mask, qids, qmask = processor([(_jpeg((200, 0, 0)), "What is it?", 4),
                                                (_jpeg((0, 0, 200)), "Describe the large photo.", 4)])
    assert pixels.shape == (2, 3, 224, 224)
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and bool(mask[1].all())
    assert qmask[0, 0] == 1 and qmask[0, -1] == 0 and bool(qmask[1].all())
    short = processor.prompt_ids("What is it?")
    assert ids[0, -len(short):].tolist() == short and int(mask[0].sum()) == len(short)
    assert qids[0, :int(qmask[0].sum())].tolist() == processor.qformer_ids("What is it?")


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_stream_times_every_token_of_the_greedy_answer(tiny_checkpoints, family):
    model = load_pretrained(tiny_checkpoints[family])
    processor = Processor(tiny_checkpoints[family], family)
    request = (_jpeg((10, 150, 40)), "What color is it?", 6)
    with torch.inference_mode():
        ttft, preprocessing, gaps = stream(model, processor, request)
        seen = []
        tokens, _ = greedy_generate(model, *processor([request]), 6, [],
                                    on_token=lambda chosen: seen.append(int(chosen[0])))
    assert 0 < preprocessing < ttft
    assert len(gaps) == 5 and all(g > 0 for g in gaps)
    assert seen == tokens[0] and len(seen) == 6


def test_command_reads_a_workload_and_prints_json(tmp_path, tiny_checkpoints):
    lines = []
    for i in range(3):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(_jpeg((60 * i, 100, 200 - 50 * i)))
        lines.append(json.dumps({"image": path.name, "prompt": "Describe it.",
                                 "parameters": {"max_new_tokens": 3 + i}}))
    workload = tmp_path / "w.jsonl"
    workload.write_text("\n".join(lines) + "\n")
    assert [r[2] for r in load_requests(str(workload))] == [3, 4, 5]
    out = subprocess.run(
        ["/usr/bin/python3", "-m", "iblip_model.eager_bench", "--checkpoint",
         tiny_checkpoints["llama"], "--single", str(workload), "--batch", str(workload),
         "--batch-size", "2", "--threads", "1", "--json"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=PYTHON_DIR))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["ttft_ms"]) == 3 and len(result["preprocess_ms"]) == 3
    assert result["decode_steps"] == 2 + 3 + 4
    assert result["batch_output_tokens"] == 12 and result["static_tok_s"] > 0
