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
    return pytest.mark.xfail(strict=True, reason=f"issue 11: {reason}")  # none left today; kept for the next one


CASES = [
    ("onnx-squeezenet", "simplify", "ok", None),
    ("onnx-squeezenet", "quantize-dynamic", "ok", None),  # weights behind nodes: folded to initializers first
    ("ppocr-cls", "simplify", "ok", None),
    ("ppocr-det", "quantize-dynamic", "ok", None),  # weights in Constant nodes
    ("silero-vad-16k-op15", "quantize-dynamic", "ok", None),  # state [2, batch, 128], scalar sr, sequence probed
    ("magika", "quantize-dynamic", "ok", None),
    ("magika", "quantize-int8", "ok", None),  # per-channel bias crash inside onnxruntime: retried, said so
    ("mp-face-detection-short", "convert", "ok", None),
    ("mp-face-detection-full-sparse", "convert", "no-crash", None),  # sparse weights named as the cause
    ("mp-face-landmark-attention", "inspect", "ok", None),  # custom ops read from the flatbuffer
    ("keras-regressor", "convert", "ok", None),
    ("keras-normalization", "convert", "ok", None),
    ("keras-dynamic-cnn", "convert", "ok", None),  # (None, None, 3): generated inputs are 224x224
    ("keras-lstm", "convert", "ok", None),  # TFLite through the fixed-batch route
    ("keras-subclassed", "convert", "ok", None),  # --custom-objects, signature traced from the build shape
    ("silero-vad-16k-op15", "debug-layers", "ok", None),  # scalar sr beside the state: feeds run whole; ORT kept quiet
    ("onnx-squeezenet", "debug-layers", "ok", None),  # a fixed batch of 1: the probe runs one sample at a time
    ("keras-multi-io", "debug-layers", "ok", None),  # TFLite lists meta before image: fed by name, not position
    ("keras-gru", "debug-layers", "no-crash", None),  # TFLite int8 of recurrent layers: named, with the way out
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
    assert run.verdict not in ("crash", "wrong", "noisy"), f"{run.verdict}: {run.reason}"
    if expect == "ok":
        assert run.verdict == "ok", f"{run.verdict}: {run.reason}"
