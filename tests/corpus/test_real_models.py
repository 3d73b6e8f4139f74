"""A small sample of benchmarks/real_models.py on the real-model corpus: no run may crash or be wrong.

Slow, and skipped unless the corpus has been fetched (python benchmarks/corpus/fetch.py). Cases that fail
today because of a bug listed in issue 11 are strict xfails naming the bug, so they flip when it is fixed.
`expect="ok"` cases must succeed outright (issue 11: every corpus ONNX simplifies and quantizes
dynamically to a model that runs); the rest may also end in a clean, named error.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("real_models", REPO / "benchmarks" / "real_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_models"] = module
    spec.loader.exec_module(module)
    return module


real_models = _load_benchmark()
CACHE = real_models.corpus_fetch.corpus_dir()


def bug(reason: str):
    return pytest.mark.xfail(strict=True, reason=f"issue 11: {reason}")


NOT_INITIALIZER = bug("quantize needs conv weights as initializers; constant folding first would make them so")
STATE_DIM = bug("generated inputs set a fixed non-batch dim (state [2,?,128]) to 1, so the quantized model's smoke run fails")
NORMALIZATION = bug("Normalization mean/variance become ONNX graph inputs (concrete-function route accepted on load); KeyError in parity")
DYNAMIC_SPATIAL = bug("parity/smoke inputs for (None, None, 3) are 1x1; unexpected InvalidArgumentError")
INSPECT_TFLITE = bug("inspect needs the interpreter; a TFLite model with a custom op is called corrupt")

CASES = [
    ("onnx-squeezenet", "simplify", "ok", None),
    ("onnx-squeezenet", "quantize-dynamic", "ok", NOT_INITIALIZER),
    ("ppocr-cls", "simplify", "ok", None),
    ("ppocr-det", "quantize-dynamic", "ok", NOT_INITIALIZER),
    ("silero-vad-16k-op15", "quantize-dynamic", "ok", STATE_DIM),
    ("magika", "quantize-dynamic", "ok", None),
    ("mp-face-detection-short", "convert", "ok", None),
    ("mp-face-detection-full-sparse", "convert", "no-crash", None),
    ("mp-face-landmark-attention", "inspect", "ok", INSPECT_TFLITE),
    ("keras-regressor", "convert", "ok", None),
    ("keras-normalization", "convert", "no-crash", NORMALIZATION),
    ("keras-dynamic-cnn", "convert", "no-crash", DYNAMIC_SPATIAL),
]


def _model(name: str):
    if name.startswith("keras-"):
        return next(m for m in real_models.keras_models({name}) if m.name == name)
    found = [m for m in real_models.corpus_models(CACHE) if m.name == name]
    if not found:
        pytest.skip(f"real-model corpus not fetched ({CACHE}): run python benchmarks/corpus/fetch.py")
    return found[0]


@pytest.mark.parametrize("name,command,expect", [
    pytest.param(n, c, e, marks=[m] if m else [], id=f"{n}-{c}") for n, c, e, m in CASES])
def test_real_model(name, command, expect, tmp_path):
    if not (CACHE / "manifest.json").exists():
        pytest.skip(f"real-model corpus not fetched ({CACHE}): run python benchmarks/corpus/fetch.py")
    model = _model(name)
    args = dict(real_models.COMMANDS[model.format])[command]
    run = real_models.run_one(model, command, args, timeout=600, workdir=tmp_path)
    assert run.verdict not in ("crash", "wrong"), f"{run.verdict}: {run.reason}"
    if expect == "ok":
        assert run.verdict == "ok", f"{run.verdict}: {run.reason}"
