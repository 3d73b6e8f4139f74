"""The TFLite backend: LiteRT loads and runs flatbuffers, with int8 input/output (de)quantized per tensor."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.passes.backends.runner import Backend, Feeds, Runner, dtype_name, weight_record, zero_like
from mdeploy.passes.backends.tf_env import quiet_native_stderr
from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput, first_line


def litert_interpreter(path: Path, threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter


    try:
        with quiet_native_stderr():  # LiteRT announces its XNNPACK delegate on fd 2
            interp = Interpreter(model_path=str(path), num_threads=threads or None)
            interp.allocate_tensors()
    except Exception as e:
        raise BadInput(f"{path}: LiteRT cannot load this model ({first_line(e)})",
                       "the file is corrupt or not a .tflite model; re-convert it") from e
    return interp


def litert_ops(interp) -> list[dict[str, Any]]:
    """The interpreter's ops (name, input and output tensor indices): LiteRT's only per-op listing is private."""
    try:
        return list(interp._get_ops_details())  # noqa: SLF001
    except Exception:  # noqa: BLE001 - an op listing is a nicety; callers work with none
        return []


def _tflite_spec(d: dict, name: str | None = None) -> TensorSpec:
    sig = d.get("shape_signature")
    shape = sig if sig is not None and len(sig) else d["shape"]
    return TensorSpec(name or d["name"], tuple(None if int(s) < 0 else int(s) for s in shape), dtype_name(d["dtype"]))


def _quant(d: dict) -> tuple[float, int]:
    scale, zp = d.get("quantization", (0.0, 0))
    return float(scale), int(zp)


def _to_input(x: np.ndarray, d: dict) -> np.ndarray:
    """Quantize a float feed for an integer input tensor; cast anything else."""
    dtype = np.dtype(d["dtype"])
    x = np.asarray(x)
    scale, zp = _quant(d)
    if dtype.kind in "iu" and scale and x.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _from_output(y: np.ndarray, d: dict) -> np.ndarray:
    scale, zp = _quant(d)
    if np.dtype(d["dtype"]).kind in "iu" and scale:
        return (y.astype(np.float32) - zp) * np.float32(scale)
    return y


def tflite_signature(interp) -> tuple[str | None, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    sigs = interp.get_signature_list()
    if sigs:
        key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
        runner = interp.get_signature_runner(key)
        ins = runner.get_input_details()
        outs = runner.get_output_details()
        inputs = tuple(_tflite_spec(d, n) for n, d in ins.items())
        outputs = tuple(_tflite_spec(d, n) for n, d in outs.items())
        return key, inputs, outputs
    inputs = tuple(_tflite_spec(d) for d in interp.get_input_details())
    outputs = tuple(_tflite_spec(d) for d in interp.get_output_details())
    return None, inputs, outputs


def _tflite_runner(path: Path, threads: int | None, trusted: bool = False) -> Runner:
    interp = litert_interpreter(path, threads)
    key, inputs, outputs = tflite_signature(interp)
    if key is not None:
        with quiet_native_stderr():
            sig = interp.get_signature_runner(key)
        in_details = sig.get_input_details()
        out_details = sig.get_output_details()

        def run_once(feeds: Feeds) -> dict[str, np.ndarray]:
            result = sig(**{t.name: _to_input(feeds[t.name], in_details[t.name]) for t in inputs})
            return {o.name: _from_output(result[o.name], out_details[o.name]) for o in outputs}
    else:
        in_details = interp.get_input_details()
        out_details = interp.get_output_details()
        state = {"shapes": None}

        def run_once(feeds: Feeds) -> dict[str, np.ndarray]:
            arrays = [_to_input(feeds[t.name], d) for t, d in zip(inputs, in_details)]
            shapes = [a.shape for a in arrays]
            if shapes != state["shapes"]:
                for a, d in zip(arrays, in_details):
                    interp.resize_tensor_input(d["index"], a.shape, strict=False)
                interp.allocate_tensors()
                state["shapes"] = shapes
            for a, d in zip(arrays, in_details):
                interp.set_tensor(d["index"], a)
            interp.invoke()
            return {o.name: _from_output(interp.get_tensor(d["index"]), d) for o, d in zip(outputs, out_details)}

    fixed_batch = any(t.shape and t.shape[0] is not None for t in inputs)

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        n = len(next(iter(feeds.values()))) if feeds else 0
        if not fixed_batch or n <= 1:
            return run_once(feeds)
        # A model converted with a static batch of 1 cannot always be resized: run row by row.
        rows = [run_once({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    return Runner("tflite", inputs, outputs, run)


_BIASED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D"}


def _tflite_facts(path: Path) -> dict[str, Any]:
    interp = litert_interpreter(path)
    op_details = litert_ops(interp)
    ops = Counter(op["op_name"] for op in op_details)
    produced = {int(i) for op in op_details for i in op["outputs"]}
    # int32 constants are shapes, except the bias (third input) of quantized conv/dense layers.
    biases = {int(op["inputs"][2]) for op in op_details
              if op["op_name"] in _BIASED_OPS and len(op["inputs"]) > 2 and int(op["inputs"][2]) >= 0}
    inputs = {d["index"] for d in interp.get_input_details()}
    params = 0
    for t in interp.get_tensor_details():
        if t["index"] in produced or t["index"] in inputs:
            continue
        shape, kind = t.get("shape"), np.dtype(t["dtype"])
        if shape is None or not len(shape):
            continue
        if kind.kind == "f" or kind in (np.int8, np.uint8) or (kind == np.int32 and t["index"] in biases):
            params += int(np.prod(shape))
    return {"parameters": params, "ops": ops, "signatures": list(interp.get_signature_list())}


_TFLITE_WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}


def _tflite_tensors(path: Path) -> list[dict[str, Any]]:
    interp = litert_interpreter(path)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    ops = litert_ops(interp)
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
        records[idx] = weight_record(d["name"], values, zero_like(values, zp if zp is not None and len(zp) else None,
                                                                     int(q.get("quantized_dimension", 0))))
    return list(records.values())


def _tflite_open(path: Path, trusted: bool, max_bytes: int | None = None) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    _, inputs, outputs = tflite_signature(litert_interpreter(path))
    return inputs, outputs


TFLITE = Backend("tflite", "ai-edge-litert", runner=_tflite_runner, signature=_tflite_open,
                 facts=lambda path, trusted: _tflite_facts(path), weights=lambda path, trusted: _tflite_tensors(path))
