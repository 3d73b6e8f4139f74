"""Quantization passes on real ONNX Runtime and TFLite/LiteRT with the digits sample: every mode, format and method."""
from __future__ import annotations

import pickle
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest

from mdeploy.calibration import DataSpec
from mdeploy.passes.backends import load_runner, open_artifact
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.pipeline import Context, run_pass
from mdeploy.passes.quantize import quantization_quality
from mdeploy.passes.quantize.onnx import QuantizeOnnx
from mdeploy.passes.quantize.tflite import QuantizeTflite


@pytest.fixture(scope="module")
def float_onnx(digits_converted):
    return open_artifact(digits_converted / "onnx" / "model.onnx")


@pytest.fixture(scope="module")
def cal(digits_calibration):
    return DataSpec(str(digits_calibration), take=200)


@pytest.fixture(scope="module")
def val(digits_validation):
    return DataSpec(str(digits_validation))


def ops(path):
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("fmt,method", [("qdq", "minmax"), ("qoperator", "entropy"), ("qdq", "percentile")])
def test_onnx_static_int8_formats_and_methods(float_onnx, cal, val, tmp_path, fmt, method):
    q = run_pass(QuantizeOnnx(format=fmt, method=method, calibration=cal), float_onnx, Context(out_dir=tmp_path), [])
    assert q.name == "onnx-int8" and q.precision == "int8" and q.path.name == "model.int8.onnx"
    found = ops(q.path)
    assert (found["QuantizeLinear"] > 0) if fmt == "qdq" else (found["QLinearConv"] == 2)
    quality = quantization_quality(float_onnx, q, val.open(float_onnx.inputs))
    assert quality["accuracy_drop"] <= 0.005 and quality["size_ratio"] <= 0.30 and quality["samples"] == 300


def test_onnx_exclude_by_op_type_and_node_name(float_onnx, cal, tmp_path):
    q = run_pass(QuantizeOnnx(exclude=("Conv",), calibration=cal), float_onnx, Context(out_dir=tmp_path), [])
    weights = {i.name: i.data_type for i in onnx.load(str(q.path)).graph.initializer}
    assert onnx.TensorProto.INT8 in weights.values()  # the MatMuls are quantized...
    conv_inputs = [n for n in onnx.load(str(q.path)).graph.node if n.op_type == "Conv"]
    assert all(not any(i.endswith("DequantizeLinear") for i in n.input) for n in conv_inputs)  # ...the Convs are not fed by DQ
    with pytest.raises(BadInput, match="--exclude NoSuchOp: no node or op type"):
        QuantizeOnnx(exclude=("NoSuchOp",), calibration=cal, file_name="x.onnx").run(float_onnx, Context(out_dir=tmp_path))


def test_onnx_dynamic_and_fp16(float_onnx, val, tmp_path):
    dyn = run_pass(QuantizeOnnx(mode="dynamic"), float_onnx, Context(out_dir=tmp_path), [])
    assert dyn.precision == "dynamic-int8" and ops(dyn.path)["DynamicQuantizeLinear"] + ops(dyn.path)["MatMulInteger"] > 0
    fp16 = run_pass(QuantizeOnnx(mode="fp16"), float_onnx, Context(out_dir=tmp_path), [])
    assert fp16.precision == "float16" and fp16.inputs[0].dtype == "float32" and fp16.outputs[0].dtype == "float32"
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(fp16.path)).graph.initializer)
    for q in (dyn, fp16):
        quality = quantization_quality(float_onnx, q, val.open(float_onnx.inputs))
        assert quality["top1_agreement"] >= 0.99 and quality["sqnr_db"] > 30


def test_int8_needs_calibration_and_passes_pickle(float_onnx, tmp_path):
    with pytest.raises(BadInput, match="needs calibration data"):
        QuantizeOnnx().run(float_onnx, Context(out_dir=tmp_path))
    with pytest.raises(BadInput, match="unknown calibration method"):
        QuantizeOnnx(method="mse")
    with pytest.raises(BadInput, match="--io int8 needs --mode int8"):
        QuantizeTflite(mode="fp16", io="int8")
    p = QuantizeOnnx(calibration=DataSpec("x.npz", take=3))
    assert pickle.loads(pickle.dumps(p)) == p


def test_tflite_int8_integer_io(digits_model, digits_converted, cal, val, tmp_path):
    source = open_artifact(digits_model)
    q = run_pass(QuantizeTflite(mode="int8", io="int8", calibration=cal), source, Context(out_dir=tmp_path), [])
    assert q.inputs[0].dtype == "int8" and q.outputs[0].dtype == "int8" and q.meta["io"] == "int8"
    parent = open_artifact(digits_converted / "tflite" / "model.tflite")
    quality = quantization_quality(parent, q, val.open(source.inputs))  # the runner (de)quantizes int8 I/O
    assert quality["accuracy_drop"] <= 0.005 and quality["size_ratio"] <= 0.30
    x = np.load(val.spec)["image"][:3]
    out = load_runner("tflite", q.path)({"image": x})
    assert next(iter(out.values())).shape == (3, 10)


def test_onnx_quantization_never_imports_tensorflow(float_onnx, digits_calibration, tmp_path):
    code = ("import sys; from mdeploy.passes.quantize.onnx import QuantizeOnnx; from mdeploy.calibration import DataSpec;"
            "from mdeploy.passes.backends import open_artifact; from mdeploy.passes.core.pipeline import Context, run_pass;"
            f"a = open_artifact({str(float_onnx.path)!r});"
            f"run_pass(QuantizeOnnx(calibration=DataSpec({str(digits_calibration)!r}, take=64)), a, Context(out_dir={str(tmp_path)!r}), []);"
            "print('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
