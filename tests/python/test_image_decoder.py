"""The image decoder over files, through iblip-decode-image.

- The same bytes give the same pixels, or the same refusal, whatever the
  heap held before (glibc's MALLOC_PERTURB_ fills every new and freed block):
  for every seed of the image fuzzer and for cuts of each, since a partly
  decoded image is where uninitialised memory would show.
- Against Pillow itself (/usr/bin/python3's, the reference processor's
  library): where both decode a cut or bit-flipped test image, the pixels are
  Pillow's exactly; every cut is refused exactly where Pillow refuses it. Bit
  flips are damage: refusing one Pillow decodes is allowed (JPEG entropy
  data, PNG CRCs Pillow does not check, TIFF directories), and so, for TIFF
  only, is decoding one Pillow's stricter directory parser refuses (libtiff
  accepts some mistyped tags); both stay rare.
"""

import importlib.util
import os
import random
import subprocess
import warnings

import pytest

from server_harness import BUILD_DIR

TOOL = os.path.join(BUILD_DIR, "model", "iblip-decode-image")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
IMAGE_CASES = os.path.join(ROOT, "tests", "data", "images")
FUZZ_SEEDS = [os.path.join(ROOT, "tests", "fuzz", "corpus", "image_fuzzer"), IMAGE_CASES]


def make_cases():
    spec = importlib.util.spec_from_file_location(
        "make_cases", os.path.join(IMAGE_CASES, "make_cases.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode(paths, env=None):
    """{path: (verdict, detail)}: ("ok", "WxH sha256") or ("refused", message)."""
    out = subprocess.run([TOOL, *paths], capture_output=True, text=True, check=True,
                         env=env, timeout=600).stdout
    results = {}
    for line in out.splitlines():
        path, verdict, *rest = line.split("\t")
        results[path] = (verdict, " ".join(rest))
    assert len(results) == len(paths)
    return results


def seed_files():
    files = []
    for directory in FUZZ_SEEDS:
        for name in sorted(os.listdir(directory)):
            if not name.endswith((".py", ".json")):
                files.append(os.path.join(directory, name))
    return files


def test_same_pixels_or_refusal_whatever_the_heap_held(tmp_path):
    paths = []
    for i, path in enumerate(seed_files()):
        with open(path, "rb") as f:
            data = f.read()
        paths.append(path)
        for k in range(1, 8):  # cuts at eighths: partial frames, rows, strips
            cut = tmp_path / f"{i}-{os.path.basename(path)}.cut{k}"
            cut.write_bytes(data[:len(data) * k // 8])
            paths.append(str(cut))
    assert len(paths) > 800
    runs = []
    for perturb in (None, "85", "170", "255"):
        env = dict(os.environ)
        env.pop("MALLOC_PERTURB_", None)
        if perturb:
            env["MALLOC_PERTURB_"] = perturb
        runs.append(decode(paths, env))
    for run in runs[1:]:
        different = [p for p in paths if run[p] != runs[0][p]]
        assert not different, [(p, runs[0][p], run[p]) for p in different[:5]]
    decoded = sum(1 for p in paths if runs[0][p][0] == "ok")
    assert 100 < decoded < len(paths)  # both outcomes really occur


def variants(cases):
    """(name, bytes): every cut near the ends, a cut every 1/40th, and twelve
    single-bit flips of each valid case."""
    rng = random.Random(20)
    for name, data in cases.valid_cases():
        n = len(data)
        cuts = sorted(set(n * k // 40 for k in range(1, 40)) | set(range(max(1, n - 24), n)))
        for cut in cuts:
            yield f"{name}.cut{cut}", data[:cut]
        for k in range(12):
            flipped = bytearray(data)
            at, bit = rng.randrange(n), rng.randrange(8)
            flipped[at] ^= 1 << bit
            yield f"{name}.flip{at}.{bit}.{k}", bytes(flipped)


def test_refuses_what_pillow_refuses_and_decodes_as_pillow_does(tmp_path):
    cases = make_cases()
    files = {}
    for name, data in variants(cases):
        path = tmp_path / name
        path.write_bytes(data)
        files[str(path)] = data
    ours = decode(list(files))
    counts = {}
    problems = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd TIFF tags
        for path, data in files.items():
            name = os.path.basename(path)
            flipped = ".flip" in name
            pillow_ok, result = cases.pillow_decode(data)
            verdict, detail = ours[path]
            if pillow_ok and verdict == "ok":
                expected = f"{result.size[0]}x{result.size[1]} {cases.rgb_sha256(result)}"
                outcome = "same pixels" if detail == expected else "DIFFERENT PIXELS"
            elif not pillow_ok and verdict == "refused":
                outcome = "both refuse"
            elif pillow_ok:
                outcome = "flip refused, Pillow decodes" if flipped else "CUT REFUSED, PILLOW DECODES"
            else:
                allowed = flipped and ".tiff." in name
                outcome = "tiff flip decoded, Pillow refuses" if allowed else "DECODES WHAT PILLOW REFUSES"
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome.isupper():
                problems.append((outcome, name, detail, None if pillow_ok else result))
    print(counts)
    assert not problems, problems
    assert counts["same pixels"] > 500 and counts["both refuse"] > 2500
    flips = sum(1 for p in files if ".flip" in p)
    assert counts.get("flip refused, Pillow decodes", 0) < 0.1 * flips
    assert counts.get("tiff flip decoded, Pillow refuses", 0) < 0.01 * flips
