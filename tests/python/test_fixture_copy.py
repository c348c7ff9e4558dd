"""The repository's copy of the Hugging Face reference fixtures (tests/fixtures)
against its checksums and against ../shared/fixtures when that exists.

When the shared fixtures gain or change files, this fails and lists them. Take
them in with:

    cp -r ../shared/fixtures/. tests/fixtures/ && chmod -R u+w tests/fixtures
    cd tests/fixtures && find . -type f ! -name SHA256SUMS ! -name COPY.md \\
        | sed 's#^\\./##' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS
"""

import hashlib
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
COPY = os.path.join(ROOT, "tests", "fixtures")
SHARED = os.environ.get("IBLIP_SHARED_FIXTURES_DIR", os.path.join(ROOT, "..", "shared", "fixtures"))
OWN_FILES = {"SHA256SUMS", "COPY.md"}  # ours, not copied


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listed():
    sums = {}
    with open(os.path.join(COPY, "SHA256SUMS"), encoding="utf-8") as f:
        for line in f:
            digest, name = line.rstrip("\n").split("  ", 1)
            sums[name] = digest
    return sums


def files_under(directory):
    found = set()
    for parent, _, names in os.walk(directory):
        for name in names:
            found.add(os.path.relpath(os.path.join(parent, name), directory))
    return found


def differences(directory, sums):
    present = files_under(directory) - OWN_FILES
    new = sorted(present - sums.keys())
    missing = sorted(sums.keys() - present)
    changed = sorted(n for n in present & sums.keys() if sha256(os.path.join(directory, n)) != sums[n])
    return new, missing, changed


def test_the_copy_matches_its_checksums():
    sums = listed()
    assert len(sums) >= 200, "SHA256SUMS lists too few files"
    assert differences(COPY, sums) == ([], [], [])


def test_the_copy_has_every_checkpoint_and_case_the_suite_reads():
    for checkpoint in ("tiny-llama", "tiny-t5", "tiny-llama-eos232", "tiny-t5-eos156"):
        assert os.path.isfile(os.path.join(COPY, "checkpoints", checkpoint, "pytorch_model.bin"))
        assert os.listdir(os.path.join(COPY, "cases", checkpoint))
    assert os.path.isfile(os.path.join(COPY, "processor", "index.json"))


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="no ../shared/fixtures beside the checkout")
def test_the_shared_fixtures_have_nothing_the_copy_lacks():
    new, missing, changed = differences(SHARED, listed())
    assert (new, missing, changed) == ([], [], []), (
        f"../shared/fixtures differs from tests/fixtures: new {new}, gone {missing}, changed {changed}; "
        "take them in (see this module's docstring)")
