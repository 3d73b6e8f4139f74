"""--debug-layers and --accuracy-budget on the input layouts real models have, found by running them on the corpus:
a fixed batch of 1 (the ONNX model zoo's SqueezeNet), a scalar input beside a recurrent state (silero-vad), two
inputs of different ranks that the TFLite converter lists in another order (the corpus' multi-io model), and
recurrent layers whose TFLite conversion needs a fixed batch (Keras LSTM/GRU)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest


def _save_onnx(model, path: Path) -> Path:
    import onnx

    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _dense_graph(x_shape, extra_inputs=(), extra_nodes=(), first_input="x"):
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(0)
    w1 = numpy_helper.from_array(r.standard_normal((8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(r.standard_normal((16, 4)).astype(np.float32), "w2")
    nodes = [*extra_nodes,
             helper.make_node("MatMul", [first_input, "w1"], ["h0"], name="mm1"),
             helper.make_node("Relu", ["h0"], ["h"], name="relu"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape), *extra_inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x_shape[0], 4])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _layers(out: Path, name: str) -> list[dict]:
    report = json.loads((out / "report.json").read_text())
    record = next(a for a in report["artifacts"] if a["name"] == name)
    return record["layer_errors"]["layers"]


def test_onnx_debug_layers_on_a_fixed_batch_of_one(mdeploy, tmp_path):
    """The ranking ran its probe on sub-batches of many samples: a model that takes exactly one failed (SqueezeNet)."""
    model = _save_onnx(_dense_graph([1, 8]), tmp_path / "fixed.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((24, 8)).astype(np.float32))
    out = tmp_path / "o"
    r = mdeploy("quantize", model, "--to", "onnx", "--calibration", data, "--validation", data, "--debug-layers", "-o", out)
    assert r.exit_code in (0, 1), r.stderr  # 1: the gate measured and said no; the ranking ran either way
    assert "unexpected" not in r.stderr and "Traceback" not in r.stderr
    mm1 = next(x for x in _layers(out, "onnx-int8") if x["node"] == "mm1")  # the MatMul whose output is quantized
    assert math.isfinite(float(mm1["sqnr_db"])) and math.isfinite(float(mm1["alone_sqnr_db"]))


def test_onnx_debug_layers_with_a_scalar_input(mdeploy, tmp_path):
    """A scalar input (silero-vad's sample rate) has no sample axis: the feeds run whole, never sliced."""
    from onnx import TensorProto, helper

    scale = helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])
    model = _save_onnx(_dense_graph(["batch", 8], [scale], [helper.make_node("Mul", ["x", "scale"], ["xs"], name="mul")],
                                    first_input="xs"), tmp_path / "scalar.onnx")
    out = tmp_path / "o"  # random data: a data file holds arrays of samples, so a scalar input is generated
    r = mdeploy("quantize", model, "--to", "onnx", "--calibration", "random", "--debug-layers", "-o", out)
    assert r.exit_code in (0, 1), r.stderr
    assert "unexpected" not in r.stderr and "Traceback" not in r.stderr
    mm1 = next(x for x in _layers(out, "onnx-int8") if x["node"] == "mm1")
    assert math.isfinite(float(mm1["sqnr_db"])) and math.isfinite(float(mm1["alone_sqnr_db"]))


@pytest.fixture(scope="module")
def image_and_meta(tmp_path_factory) -> tuple[Path, Path]:
    """Two inputs of different ranks (the corpus' multi-io model): the TFLite converter lists `meta` first."""
    import keras

    keras.utils.set_random_seed(0)
    image, meta = keras.Input((8, 8, 1), name="image"), keras.Input((4,), name="meta")
    h = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(image))
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([h, meta]))
    model = keras.Model([image, meta], keras.layers.Dense(10, activation="softmax", name="digit")(h))
    d = tmp_path_factory.mktemp("image_and_meta")
    model.save(d / "model.keras")
    r = np.random.default_rng(3)
    np.savez(d / "data.npz", image=r.random((32, 8, 8, 1), dtype=np.float32), meta=r.random((32, 4), dtype=np.float32))
    return d / "model.keras", d / "data.npz"


def test_tflite_debug_layers_feeds_each_input_by_name(mdeploy, image_and_meta, tmp_path):
    """TensorFlow's QuantizationDebugger feeds inputs by position, in the converted model's order."""
    model, data = image_and_meta
    out = tmp_path / "o"
    r = mdeploy("quantize", model, "--to", "tflite", "--calibration", data, "--validation", data, "--debug-layers",
                "-o", out)
    assert r.exit_code in (0, 1), r.stderr
    assert "unexpected" not in r.stderr
    layers = _layers(out, "tflite-int8")
    assert {x["op"] for x in layers} >= {"CONV_2D", "FULLY_CONNECTED"}


@pytest.fixture(scope="module")
def tiny_lstm(tmp_path_factory) -> tuple[Path, Path]:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10, 4), name="series"), keras.layers.LSTM(8), keras.layers.Dense(1, name="y")])
    d = tmp_path_factory.mktemp("lstm")
    model.save(d / "lstm.keras")
    np.savez(d / "data.npz", series=np.random.default_rng(4).standard_normal((16, 10, 4)).astype(np.float32))
    return d / "lstm.keras", d / "data.npz"


def test_tflite_dynamic_range_of_a_recurrent_model_takes_the_fixed_batch_route(mdeploy, tiny_lstm, tmp_path):
    """`convert` makes the float TFLite of an LSTM with a fixed batch of 1; `quantize --mode dynamic` must too."""
    model, data = tiny_lstm
    out = tmp_path / "o"
    r = mdeploy("quantize", model, "--to", "tflite", "--mode", "dynamic", "--validation", data, "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    record = next(a for a in report["artifacts"] if a["name"] == "tflite-dynamic")
    assert record["meta"]["tflite_route"] == "fixed-batch-1" and record["quality"]["passed"]
    assert any(w.startswith("quantize.tflite: converted with a fixed batch of 1") for w in report["warnings"])


@pytest.mark.parametrize("flags", [[], ["--debug-layers"], ["--accuracy-budget", "0.01"]])
def test_tflite_int8_of_a_recurrent_model_is_a_clean_error_with_the_way_out(mdeploy, tiny_lstm, tmp_path, flags):
    """TensorFlow's int8 calibrator dies with SIGSEGV on the fixed-batch LSTM: mdeploy never tries it, and says what
    works instead; with --debug-layers or a budget the same cause is named, not a ranking's failure."""
    model, data = tiny_lstm
    out = tmp_path / "o"
    r = mdeploy("quantize", model, "--to", "tflite", "--calibration", data, "--validation", data, *flags, "-o", out)
    assert r.exit_code == 3, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    hints = [line for line in r.stderr.splitlines() if line.startswith("hint:")]
    assert len(errors) == 1 and "recurrent layers" in errors[0], r.stderr
    assert len(hints) == 1 and "--mode dynamic" in hints[0] and "--to onnx" in hints[0]
    assert not list(out.glob("tflite/*int8*"))  # the float parent (model.tflite) is kept: it converted fine
