"""Shared fixtures: the real sample models and tiny models built once per session, and a CLI runner."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def mdeploy(capsys):
    """Run the real CLI entry point in-process: mdeploy("convert", path, "-o", out) -> CliResult."""
    from mdeploy.cli import _common, run

    def call(*args) -> CliResult:
        capsys.readouterr()
        _common.state.update(debug=False, verbose=False)
        code = run([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return call


@pytest.fixture(scope="session")
def digits_model() -> Path:
    return SAMPLES / "digits.keras"


@pytest.fixture(scope="session")
def digits_calibration() -> Path:
    return SAMPLES / "digits_calibration.npz"


@pytest.fixture(scope="session")
def digits_validation() -> Path:
    return SAMPLES / "digits_validation.npz"


@pytest.fixture(scope="session")
def digits_converted(tmp_path_factory, digits_model) -> Path:
    """The digits sample converted to all three formats once per session (read-only for tests)."""
    from mdeploy.cli.convert import convert

    out = tmp_path_factory.mktemp("digits_converted")
    report = convert(digits_model, ["savedmodel", "onnx", "tflite"], out)
    assert report.ok
    return out


@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory) -> Path:
    """A two-input, two-output functional model: the awkward shape that breaks naive converters."""
    import keras

    keras.utils.set_random_seed(0)
    a = keras.Input((6,), name="features")
    b = keras.Input((4,), name="extra")
    h = keras.layers.Dense(8, activation="relu", name="hidden")(keras.layers.Concatenate()([a, b]))
    logits = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    model = keras.Model([a, b], [logits, reg])
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def digits_train_npz(tmp_path_factory) -> Path:
    """The digits training split (1,497 labelled samples) as an .npz, for fine-tuning tests."""
    import sys

    sys.path.insert(0, str(SAMPLES))
    try:
        from build_digits import INPUT_NAME, load_splits
    finally:
        sys.path.remove(str(SAMPLES))
    (x, y), _, _ = load_splits()
    path = tmp_path_factory.mktemp("digits_train") / "digits_train.npz"
    np.savez(path, **{INPUT_NAME: x, "labels": y})
    return path


@pytest.fixture(scope="session")
def digits_pruned(tmp_path_factory, digits_model, digits_validation) -> Path:
    """OUTDIR holding the digits sample pruned one-shot to 50% (keras/model.pruned.keras), with accuracy measured."""
    from mdeploy.cli.prune import prune

    out = tmp_path_factory.mktemp("digits_pruned")
    prune(digits_model, 0.5, out, data=str(digits_validation))
    return out
