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
    from mdeploy.cli import run

    def call(*args) -> CliResult:
        capsys.readouterr()
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
    from mdeploy.passes.workflows.convert import convert

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
    from mdeploy.passes.workflows.prune import prune

    out = tmp_path_factory.mktemp("digits_pruned")
    prune(digits_model, 0.5, out, data=str(digits_validation))
    return out


# --------------------------------------------------------------------------- quantization (issue 3)

def _quantized_in_every_mode(tmp_path_factory, to: str, model: Path, calibration: Path, validation: Path) -> Path:
    from mdeploy.passes.workflows.quantize import quantize

    out = tmp_path_factory.mktemp(f"digits_{to}_q")
    for mode in ("int8", "dynamic", "fp16"):
        quantize(model, to, mode, out, calibration=str(calibration), validation=str(validation))
    return out


@pytest.fixture(scope="session")
def digits_onnx_quantized(tmp_path_factory, digits_model, digits_calibration, digits_validation) -> Path:
    """OUTDIR with the digits model quantized for ONNX in every mode (int8 static, dynamic, fp16); read-only."""
    return _quantized_in_every_mode(tmp_path_factory, "onnx", digits_model, digits_calibration, digits_validation)


@pytest.fixture(scope="session")
def digits_tflite_quantized(tmp_path_factory, digits_model, digits_calibration, digits_validation) -> Path:
    """OUTDIR with the digits model quantized for TFLite in every mode (full int8, dynamic-range, fp16); read-only."""
    return _quantized_in_every_mode(tmp_path_factory, "tflite", digits_model, digits_calibration, digits_validation)


@pytest.fixture(scope="session")
def tiny_dynamic_onnx(tmp_path_factory) -> Path:
    """A TensorFlow-free ONNX model with two dynamic dims (batch, seq) and a foldable constant subgraph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(0)
    w = numpy_helper.from_array(r.standard_normal((4, 3)).astype(np.float32), "w")
    a = numpy_helper.from_array(np.full((3,), 0.5, np.float32), "a")
    b = numpy_helper.from_array(np.full((3,), 0.25, np.float32), "b")
    nodes = [helper.make_node("Add", ["a", "b"], ["bias"], name="fold_me"),
             helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "bias"], ["y0"], name="add"),
             helper.make_node("Relu", ["y0"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 3])], [w, a, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("tiny_onnx") / "tiny_dynamic.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def mobilenet_model() -> Path:
    """MobileNetV2 (random weights), built once and cached by sample_models/build_mobilenet.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_mobilenet", SAMPLES / "build_mobilenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


# --------------------------------------------------------------------------- accuracy-aware quantization (issue 15)

@pytest.fixture(scope="session")
def outlier_model(tmp_path_factory) -> Path:
    """A digits classifier with a few huge outlier channels in one hidden layer (tests/benchmarks/outlier_model.py):
    plain int8 collapses, keeping two of its ~20 quantized layers in float recovers it. A directory with
    outlier.keras, outlier_calibration.npz and outlier_validation.npz."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
    try:
        from outlier_model import build
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp("outlier")
    build(out, epochs=8)  # ~84% instead of the benchmark's 94% at 12 epochs, for a third less training time
    return out
