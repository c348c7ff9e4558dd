"""The package manifest the exporter writes is what the C++ loader reads."""

import json

import pytest

from iblip_model import package_writer, tiny_random


def test_tiny_package_is_complete_and_deterministic(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    tiny_random.build(str(first))
    tiny_random.build(str(second))
    manifest = json.loads((first / "package.json").read_text())
    assert manifest["format_version"] == package_writer.FORMAT_VERSION
    for name in ["vision.pt", "language_model.pt", "lm_tokenizer.model", "qformer_vocab.txt"]:
        assert (first / name).is_file()
    reference_a = json.loads((first / "reference.json").read_text())
    reference_b = json.loads((second / "reference.json").read_text())
    assert reference_a == reference_b


def test_manifest_refuses_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        package_writer.write_manifest(
            str(tmp_path), model_id="x", lm_family="llama", dtype="fp32", num_query_tokens=1,
            lm_vocab_size=2, qformer_vocab_size=2, max_context_tokens=8, image_size=4,
            lm_tokenizer={"file": "missing.model"}, qformer_tokenizer={"vocab_file": "v.txt"},
            eos_token_ids=[1], modules={"vision": "v.pt", "language_model": "l.pt"})
