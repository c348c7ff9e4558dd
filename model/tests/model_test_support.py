"""Helpers for the model/ (Python) tests."""

import os

import pytest

FIXTURES_DIR = os.environ.get(
    "IBLIP_FIXTURES_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures"))


def fixture_path(*parts):
    path = os.path.join(FIXTURES_DIR, *parts)
    if not os.path.exists(path):
        pytest.fail(f"reference fixtures missing: {path}")
    return path
