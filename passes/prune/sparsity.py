"""Sparsity as measured in files: the per-layer summary both pruners report, compressed size, and
`measure_sparsity`, which reads the weight sparsity of a Keras, ONNX or TFLite artifact (float or int8) so that
quantization can be checked to keep a pruned model's zeros.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.passes.backends.load import load_onnx_model, open_artifact
from mdeploy.passes.backends.runtimes import litert_interpreter, load_keras_model
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.prune.keras import prunable_weights

# --------------------------------------------------------------------------- measuring any artifact

def _zero_like(values: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray | int:
    """The stored value that means 0.0: the zero point (per tensor or per channel along `axis`), else 0."""
    if zero_point is None or np.size(zero_point) == 0:
        return 0
    zp = np.asarray(zero_point)
    if zp.size == 1:
        return zp.reshape(()).astype(values.dtype)
    shape = [1] * values.ndim
    shape[axis % values.ndim] = zp.size
    return zp.reshape(shape).astype(values.dtype)


def _tensor_record(name: str, values: np.ndarray, zero) -> dict[str, Any]:
    params = int(values.size)
    zeros = int(np.count_nonzero(values == zero))
    return {"name": name, "shape": list(values.shape), "dtype": values.dtype.name, "params": params, "zeros": zeros,
            "sparsity": round(zeros / params, 6) if params else 0.0}


def _keras_tensors(path: Path, trusted: bool = False) -> list[dict[str, Any]]:
    model = load_keras_model(path, trusted=trusted)
    return [_tensor_record(w.name, np.asarray(w.variable.numpy()), 0) for w in prunable_weights(model)]


# weight input position and its zero-point input position (None: none) per consuming op
_ONNX_WEIGHT_INPUTS = {"Conv": [(1, None)], "Gemm": [(1, None), (0, None)], "MatMul": [(1, None), (0, None)],
                       "ConvInteger": [(1, 3)], "MatMulInteger": [(1, 3)], "QLinearConv": [(3, 5)],
                       "QLinearMatMul": [(3, 5)]}


def _onnx_tensors(path: Path) -> list[dict[str, Any]]:
    from onnx import numpy_helper


    model = load_onnx_model(path)
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}

    def array(name: str):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    records: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        for w_pos, zp_pos in _ONNX_WEIGHT_INPUTS.get(node.op_type, []):
            if len(node.input) <= w_pos:
                continue
            name = node.input[w_pos]
            zp, axis = None, 0
            if zp_pos is not None and len(node.input) > zp_pos and node.input[zp_pos]:
                zp = array(node.input[zp_pos])
                axis = -1 if node.op_type == "MatMulInteger" else 0
            src = producers.get(name)
            if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in inits:
                # QDQ: the int8 initializer is the stored weight; its zero point maps back to 0.0
                name = src.input[0]
                zp = array(src.input[2]) if len(src.input) > 2 and src.input[2] else None
                axis = next((a.i for a in src.attribute if a.name == "axis"), 1)
            values = array(name)
            if values is None or values.ndim < 2 or name in records:
                continue
            records[name] = _tensor_record(name, values, _zero_like(values, zp, axis))
    return list(records.values())


_TFLITE_WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}


def _tflite_tensors(path: Path) -> list[dict[str, Any]]:

    interp = litert_interpreter(path)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the only public-enough view of the graph LiteRT offers
    produced = {int(o): op for op in ops for o in op["outputs"]}
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    records: dict[int, dict[str, Any]] = {}
    for op in ops:
        if op["op_name"] not in _TFLITE_WEIGHT_OPS or len(op["inputs"]) < 2:
            continue
        idx = int(op["inputs"][1])
        src = produced.get(idx)
        if src is not None and src["op_name"] == "DEQUANTIZE":  # float16 / hybrid weights
            idx = int(src["inputs"][0])
        if idx < 0 or idx in produced or idx in graph_inputs or idx in records:
            continue  # not a constant: an activation
        d = details[idx]
        values = np.asarray(interp.get_tensor(idx))
        if values.ndim < 2:
            continue
        q = d.get("quantization_parameters") or {}
        zp = q.get("zero_points")
        records[idx] = _tensor_record(d["name"], values, _zero_like(values, zp if zp is not None and len(zp) else None,
                                                                     int(q.get("quantized_dimension", 0))))
    return list(records.values())


def measure_sparsity(artifact: Artifact | Path | str) -> dict[str, Any]:
    """Weight sparsity of a model file: {format, sparsity, params, zeros, tensors: [{name, shape, dtype, params,
    zeros, sparsity}]}. Weights are the kernels of Dense/Conv/Embedding (keras) or the weight inputs of
    Conv/Gemm/MatMul and their quantized forms (onnx, tflite). A quantized weight counts as zero when it equals
    its zero point, i.e. when it dequantizes to exactly 0.0 (symmetric int8 weights: the zero point is 0)."""
    if not isinstance(artifact, Artifact):
        artifact = open_artifact(artifact)
    readers = {"keras": _keras_tensors, "onnx": _onnx_tensors, "tflite": _tflite_tensors}
    if artifact.format not in readers:
        raise BadInput(f"measuring sparsity needs a keras, onnx or tflite model, not {artifact.format}",
                       "convert it first with `mdeploy convert --to onnx`")
    path = Path(artifact.path)
    tensors = _keras_tensors(path, artifact.trusted) if artifact.format == "keras" else readers[artifact.format](path)
    params = sum(t["params"] for t in tensors)
    zeros = sum(t["zeros"] for t in tensors)
    return {"format": artifact.format, "path": str(artifact.path), "sparsity": round(zeros / params, 6) if params else 0.0,
            "params": params, "zeros": zeros, "tensors": tensors}


def sparsity_survival(pruned: Artifact | Path | str, quantized: Artifact | Path | str) -> dict[str, Any]:
    """Did the zeros of a pruned model survive its quantization? Compares weight zero counts (the tensors'
    layouts differ between formats, so positions are not matched): survived when the quantized model has at least
    as many zero weights over the same number of weights. Quantization may add zeros (tiny weights round to 0)."""
    before, after = measure_sparsity(pruned), measure_sparsity(quantized)
    return {"sparsity_before": before["sparsity"], "sparsity_after": after["sparsity"], "params": after["params"],
            "zeros_before": before["zeros"], "zeros_after": after["zeros"],
            "survived": after["params"] == before["params"] and after["zeros"] >= before["zeros"]}
