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
            try:
                interp.allocate_tensors()
            except Exception:
                # dynamic dims are 1 until resized, too small for a valid convolution: allocate at the shapes
                # generated inputs would have (every run resizes to its feeds anyway)
                if not _resize_dynamic_inputs(interp):
                    raise
                interp.allocate_tensors()
    except Exception as e:
        raise refusal(path, e) from e
    return interp


def _resize_dynamic_inputs(interp) -> bool:
    from mdeploy.calibration.shapes import generated_shape

    resized = False
    sizes: dict[str, int] = {}
    for d in interp.get_input_details():
        sig = d.get("shape_signature")
        if sig is None or not any(int(x) < 0 for x in sig):
            continue
        spec = TensorSpec(d["name"], tuple(None if int(x) < 0 else int(x) for x in sig), dtype_name(d["dtype"]))
        interp.resize_tensor_input(d["index"], list(generated_shape(spec, 1, sizes)), strict=False)
        resized = True
    return resized


def refusal(path: Path, e: BaseException) -> BadInput:
    """Why LiteRT refused a file, named from its flatbuffer: custom ops, not a flatbuffer, or the runtime's words."""
    try:
        flat = read_flatbuffer(path)
    except BadInput as bad:
        return bad
    custom = sorted({op for op in flat["ops"] if op.startswith("custom:")})
    if custom:
        names = ", ".join(c.split(":", 1)[1] for c in custom)
        return BadInput(f"{path}: LiteRT cannot run this model: it uses custom op(s) {names}, which the stock runtime "
                        "does not provide", "run it where those ops are registered (the app that ships it); "
                        "`mdeploy inspect` still reads it")
    return BadInput(f"{path}: LiteRT cannot load this model ({first_line(e)})",
                    "the flatbuffer reads fine, so the runtime refuses an op or shape in it; `mdeploy inspect` lists them")


def read_flatbuffer(path: Path) -> dict[str, Any]:
    """A .tflite file read with the schema alone (no interpreter): ops (builtin names, `custom:NAME` for custom
    ops), the first subgraph's inputs and outputs, signatures, tensor count, constant parameters, sparse tensors."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        buf = Path(path).read_bytes()
    except OSError as e:
        raise BadInput(f"{path}: cannot read the file ({e.strerror})", "check the path and its permissions") from e
    if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise BadInput(f"{path}: not a TFLite flatbuffer (no TFL3 identifier{', and the file is empty' if not buf else ''})",
                       "the file is truncated or another format; re-export the .tflite model")
    try:
        model = schema.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as e:  # noqa: BLE001 - a damaged flatbuffer raises anything from struct to IndexError
        raise BadInput(f"{path}: a TFLite flatbuffer whose tables cannot be read ({type(e).__name__})",
                       "the file is truncated or damaged; re-export the .tflite model") from e
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = []
    for c in model.operatorCodes or []:
        code = max(c.builtinCode, c.deprecatedBuiltinCode)
        name = builtin.get(code, str(code))
        codes.append(f"custom:{c.customCode.decode(errors='replace')}" if name == "CUSTOM" and c.customCode else name)
    ops: Counter = Counter()
    tensors = params = 0
    sparse: list[str] = []
    buffers = model.buffers or []
    for g in model.subgraphs or []:
        ops.update(codes[op.opcodeIndex] for op in g.operators or [])
        tensors += len(g.tensors or [])
        # int32 constants are shapes, except the bias (third input) of quantized conv/dense layers
        biases = {int(op.inputs[2]) for op in g.operators or []
                  if codes[op.opcodeIndex] in _BIASED_OPS and op.inputs is not None and len(op.inputs) > 2}
        for i, t in enumerate(g.tensors or []):
            b = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
            stored = b is not None and ((b.data is not None and len(b.data)) or b.size)
            kind = types.get(t.type, "")
            if stored and t.shape is not None and len(t.shape) and (
                    kind.startswith(("float", "bfloat")) or kind in ("int8", "uint8") or (kind == "int32" and i in biases)):
                params += int(np.prod(t.shape))
            if t.sparsity is not None:
                sparse.append(_text(t.name))

    def spec(t) -> TensorSpec:
        dims = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
        shape = tuple(None if int(d) < 0 else int(d) for d in (dims if dims is not None else ()))
        return TensorSpec(_text(t.name), shape, _TFLITE_DTYPES.get(types.get(t.type, ""), types.get(t.type, "?")))

    main = (model.subgraphs or [None])[0]
    return {
        "ops": ops,
        "inputs": tuple(spec(main.tensors[i]) for i in main.inputs) if main is not None and main.inputs is not None else (),
        "outputs": tuple(spec(main.tensors[i]) for i in main.outputs) if main is not None and main.outputs is not None else (),
        "signatures": [_text(s.signatureKey) for s in model.signatureDefs or []],
        "subgraphs": len(model.subgraphs or []),
        "tensors": tensors,
        "parameters": params,
        "sparse_tensors": sparse,
    }


_TFLITE_DTYPES = {"float32": "float32", "float16": "float16", "int32": "int32", "uint8": "uint8", "int64": "int64",
                  "string": "str", "bool": "bool", "int16": "int16", "int8": "int8", "float64": "float64"}


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


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
    """Read from the flatbuffer, so a model LiteRT cannot run (custom ops, resizable inputs) is still described;
    `runs_on_litert` says whether the stock runtime loads it."""
    flat = read_flatbuffer(path)
    facts = {"parameters": flat["parameters"], "ops": flat["ops"], "signatures": flat["signatures"],
             "tensors": flat["tensors"], "subgraphs": flat["subgraphs"]}
    custom = sorted(op.split(":", 1)[1] for op in flat["ops"] if op.startswith("custom:"))
    if custom:
        facts["custom_ops"] = custom
    if flat["sparse_tensors"]:
        facts["sparse_tensors"] = len(flat["sparse_tensors"])
    try:
        litert_interpreter(path)
        facts["runs_on_litert"] = True
    except BadInput as e:
        facts["runs_on_litert"] = False
        facts["litert_error"] = e.message
    return facts


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
    """The signature from LiteRT (its signature runner's names), else from the flatbuffer when LiteRT refuses the
    file but the flatbuffer reads (custom ops): what runs it then fails with the reason, not opening it."""
    try:
        _, inputs, outputs = tflite_signature(litert_interpreter(path))
    except BadInput:
        flat = read_flatbuffer(path)  # raises its own BadInput when the file is not a readable flatbuffer
        if not flat["inputs"] and not flat["outputs"]:
            raise
        return flat["inputs"], flat["outputs"]
    return inputs, outputs


TFLITE = Backend("tflite", "ai-edge-litert", runner=_tflite_runner, signature=_tflite_open,
                 facts=lambda path, trusted: _tflite_facts(path), weights=lambda path, trusted: _tflite_tensors(path))
