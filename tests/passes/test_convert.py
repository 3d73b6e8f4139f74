"""Conversion passes on real models: names, dynamic batch, parity, and the TF Serving layout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mdeploy.passes.backends import load_runner, open_artifact


def test_digits_converts_with_parity(digits_converted):
    report = json.loads((digits_converted / "report.json").read_text())
    assert report["ok"] is True and report["schema_version"] == 2
    assert {a["name"] for a in report["artifacts"]} == {"savedmodel", "onnx", "tflite"}
    for a in report["artifacts"]:
        assert a["checks"]["passed"] and a["checks"]["max_abs_error"] <= 1e-4
        assert (digits_converted / a["path"]).exists()
        assert a["size_bytes"] > 100_000  # weights really are inside (guards the weightless-TFLite trap)
        assert len(a["sha256"]) == 64 and a["produced_by"]["pass"].startswith("convert.")
        assert a["parent"] == "source"
    assert report["source"]["format"] == "keras" and report["source"]["inputs"][0]["name"] == "image"
    assert [s["pass"] for s in report["steps"]] == ["convert.savedmodel", "convert.onnx", "convert.tflite"]


def test_savedmodel_serves_with_tf(digits_converted, digits_model):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(digits_converted / "savedmodel" / "digits" / "1"))
    fn = loaded.signatures["serving_default"]
    assert list(fn.structured_input_signature[1]) == ["image"]
    x = np.random.default_rng(1).random((5, 8, 8, 1), dtype=np.float32)
    keras_out = load_runner("keras", digits_model)({"image": x})["probs"]
    served = fn(image=tf.constant(x))["probs"].numpy()
    assert np.argmax(served, 1).tolist() == np.argmax(keras_out, 1).tolist()
    assert np.abs(served - keras_out).max() <= 1e-5


def test_onnx_batch_dimension_stays_dynamic(digits_converted):
    onnx_art = open_artifact(digits_converted / "onnx" / "model.onnx")
    assert onnx_art.inputs[0].shape == (None, 8, 8, 1)
    runner = load_runner("onnx", onnx_art.path)
    for n in (1, 7):
        assert runner({"image": np.zeros((n, 8, 8, 1), np.float32)})["probs"].shape == (n, 10)


def test_multi_input_multi_output_model_keeps_names(tiny_keras, tmp_path):
    from mdeploy.passes.workflows.convert import convert

    report = convert(tiny_keras, ["savedmodel", "onnx", "tflite"], tmp_path / "out")
    assert report.ok
    for a in report.artifacts:
        assert {t["name"] for t in a.inputs} == {"features", "extra"}
        art = open_artifact(tmp_path / "out" / a.path)
        assert {t.name for t in art.inputs} == {"features", "extra"}
        assert {t.name for t in art.outputs} == {"cls", "reg"}


def test_tflite_converts_to_onnx(digits_converted, tmp_path):
    from mdeploy.passes.workflows.convert import convert

    report = convert(digits_converted / "tflite" / "model.tflite", ["onnx"], tmp_path / "out")
    assert report.ok and report.artifacts[0].format == "onnx"
    assert report.artifacts[0].checks.max_abs_error <= 1e-4


def test_onnx_source_has_nothing_to_convert(digits_converted, tmp_path):
    from mdeploy.passes.core.errors import BadInput
    from mdeploy.passes.workflows.convert import convert

    with pytest.raises(BadInput, match="already ONNX"):
        convert(digits_converted / "onnx" / "model.onnx", ["tflite"], tmp_path / "out")


def test_normalization_layer_keeps_its_statistics_in_onnx(tmp_path):
    """A Keras Normalization layer's adapted mean and variance must stay constants: a route whose graph asks for
    them as inputs (tf2onnx's concrete-function route does) is refused, and the next route is taken."""
    import keras

    from mdeploy.passes.workflows.convert import convert

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 8)).astype("float32")
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(x)
    inp = keras.Input((8,), name="features")
    out = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.Dense(16, activation="relu")(norm(inp)))
    path = tmp_path / "norm.keras"
    keras.Model(inp, out).save(path)

    report = convert(path, ["onnx", "tflite"], tmp_path / "out")
    assert report.ok
    onnx_art = open_artifact(tmp_path / "out" / "onnx" / "model.onnx")
    assert [t.name for t in onnx_art.inputs] == ["features"]
    feeds = {"features": x[:16]}
    ref = load_runner("keras", path)(feeds)["probs"]
    for fmt, file in (("onnx", "onnx/model.onnx"), ("tflite", "tflite/model.tflite")):
        got = load_runner(fmt, tmp_path / "out" / file)(feeds)["probs"]
        assert np.abs(got - ref).max() <= 1e-4


def test_grouped_convolution_converts_to_onnx(tmp_path):
    """Keras 3 runs a grouped Conv2D (ConvNeXt's depthwise convs) as a jit-compiled tf.function that tf2onnx leaves as
    an unconvertible StatefulPartitionedCall on every route; mdeploy lets grappler inline it (raw tf2onnx fails)."""
    import keras

    from mdeploy.passes.workflows.convert import convert

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 8), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", groups=8, name="grouped")(inp)
    h = keras.layers.Conv2D(8, 1, groups=2, name="grouped2")(h)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.GlobalAveragePooling2D()(h))
    path = tmp_path / "grouped.keras"
    keras.Model(inp, out).save(path)

    report = convert(path, ["onnx"], tmp_path / "out")
    assert report.ok
    import onnx

    model = onnx.load(str(tmp_path / "out" / "onnx" / "model.onnx"))
    assert not {n.op_type for n in model.graph.node} & {"StatefulPartitionedCall", "PartitionedCall"}
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 8)).astype("float32")
    ref = load_runner("keras", path)({"image": x})["probs"]
    got = load_runner("onnx", tmp_path / "out" / "onnx" / "model.onnx")({"image": x})["probs"]
    assert np.abs(got - ref).max() <= 1e-5
