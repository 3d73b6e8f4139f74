"""The ONNX backend: the onnx package reads graphs (no TensorFlow), ONNX Runtime runs them."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.passes.backends.runner import Backend, Feeds, Runner, weight_record, zero_like
from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput, first_line
from mdeploy.passes.core.limits import check_onnx_external_data
from mdeploy.passes.core.logs import is_quiet

_ONNX_ELEM = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
              11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16", 8: "str"}


def load_onnx_model(path: Path, load_external_data: bool = True, max_bytes: int | None = None, *,
                    apply_limit: bool = False):
    """The ModelProto. External data is checked (limits.check_onnx_external_data) before any of it is read;
    `apply_limit` also holds it to `max_bytes` (done where a user's model comes in: opening it)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise BadInput(f"{path} is not a valid ONNX model ({type(e).__name__}: {str(e).strip()[:200] or 'unreadable protobuf'})",
                       "the file is truncated or not ONNX; re-export it") from e
    check_onnx_external_data(model, Path(path), max_bytes, apply_limit=apply_limit)
    if load_external_data:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(Path(path).resolve().parent))
    return model


def onnx_signature(model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    init = {i.name for i in model.graph.initializer}

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        # some exporters (paddle2onnx) write -1 for a dynamic dimension instead of leaving it unset
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)
        names = tuple(d.dim_param or None for d in t.shape.dim)
        return TensorSpec(v.name, dims, _ONNX_ELEM.get(t.elem_type, str(t.elem_type)), names if any(names) else ())

    if not model.graph.node and not model.graph.output:
        raise BadInput("the ONNX file holds no graph", "the file is truncated or not an ONNX model; re-export it")
    return (tuple(spec(v) for v in model.graph.input if v.name not in init), tuple(spec(v) for v in model.graph.output))


_ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


def import_ort():
    """onnxruntime, with its default logger set for this process: when quiet, a kernel's error (which the caller also
    gets as an exception, and mdeploy reports as one `error:` line or handles) is not printed to stderr as well;
    the sessions onnxruntime.quantization makes for calibration use this logger too."""
    import onnxruntime as ort

    ort.set_default_logger_severity(_ort_severity())
    return ort


def _ort_severity() -> int:
    return 4 if is_quiet() else 3  # fatal only / errors too (0 verbose ... 4 fatal)


def onnx_session(path: Path, threads: int | None = None):
    ort = import_ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = _ort_severity()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise BadInput(f"{path}: ONNX Runtime cannot load this model ({first_line(e)})",
                       "check the file is a complete .onnx model; `mdeploy inspect` shows what can be read") from e


def _ort_spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
    return TensorSpec(arg.name, shape, _ONNX_DTYPES.get(arg.type, arg.type))


def _onnx_runner(path: Path, threads: int | None, trusted: bool = False) -> Runner:
    sess = onnx_session(path, threads)
    inputs = tuple(_ort_spec(a) for a in sess.get_inputs())
    outputs = tuple(_ort_spec(a) for a in sess.get_outputs())
    names = [o.name for o in outputs]

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        arrays = {t.name: np.asarray(feeds[t.name], dtype=t.dtype) for t in inputs}
        return dict(zip(names, sess.run(names, arrays)))

    return Runner("onnx", inputs, outputs, run)


def _onnx_facts(path: Path) -> dict[str, Any]:
    model = load_onnx_model(path)
    # weights only: float and quantized-int initializers, not int64 shape constants
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in (1, 2, 3, 10, 11, 16))
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    ops = Counter(n.op_type for n in model.graph.node)
    return {"parameters": params, "opset": opsets.get("ai.onnx"), "opsets": opsets, "ops": ops,
            "node_count": len(model.graph.node)}


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
            records[name] = weight_record(name, values, zero_like(values, zp, axis))
    return list(records.values())


def _onnx_open(path: Path, trusted: bool, max_bytes: int | None = None) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    return onnx_signature(load_onnx_model(path, load_external_data=False, max_bytes=max_bytes, apply_limit=True))


ONNX = Backend("onnx", "onnxruntime", runner=_onnx_runner, signature=_onnx_open,
               facts=lambda path, trusted: _onnx_facts(path), weights=lambda path, trusted: _onnx_tensors(path))
