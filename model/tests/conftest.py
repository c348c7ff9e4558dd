"""Shared fixtures for the model/ (Python) tests."""

import pytest

from iblip_model import random_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Generated random checkpoints in the Hugging Face layout, per family."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: random_checkpoint.generate(f"tiny-{family}", str(root / family), seed=3)
            for family in ("llama", "t5")}
