"""The one table from format to runtime: each loader returns a Runner, `run({input: array}) -> {output: array}`.

TensorFlow runs keras and savedmodel, ONNX Runtime runs onnx, LiteRT runs tflite (with int8
input/output quantized and dequantized through each tensor's scale and zero point). Validation,
benchmarking and the parity checks all go through `load_runner`; no other module calls a runtime.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.passes.backends.tf_env import import_keras, import_tf, quiet_native_stderr
from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput, first_line

Feeds = Mapping[str, np.ndarray]


@dataclass
class Runner:
    """A loaded model: its signature and a callable that runs one batch."""

    format: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    run: Callable[[Feeds], dict[str, np.ndarray]]

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return self.run(feeds)


def _dtype_name(dt) -> str:
    return np.dtype(dt).name


# --------------------------------------------------------------------------- keras / savedmodel

def load_keras_model(path: Path, *, trusted: bool = False):
    """Load a Keras model with safe_mode on, unless the user vouched for the file's code (`trusted`, --unsafe-keras)."""
    keras = import_keras()
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=not trusted)
    except ValueError as e:
        if "safe_mode" in str(e) or "unsafe" in str(e).lower():
            raise BadInput(f"{path}: the model contains code (a Lambda layer or similar) that Keras safe_mode refuses to load",
                           "if you trust this file, pass --unsafe-keras") from e
        raise BadInput(f"{path}: not a loadable Keras model ({first_line(e)})",
                       "re-save it with model.save() from Keras 3, or check the file is complete") from e
    except Exception as e:  # h5py/zip/json errors all mean the same thing to a user
        raise BadInput(f"{path}: not a loadable Keras model ({first_line(e)})",
                       "re-save it with model.save() from Keras 3, or check the file is complete") from e


def keras_signature(model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    inputs = tuple(TensorSpec(_keras_tensor_name(t, i, "input"), tuple(t.shape), _dtype_name(t.dtype))
                   for i, t in enumerate(model.inputs))
    names = keras_output_names(model)
    outputs = tuple(TensorSpec(n, tuple(t.shape), _dtype_name(t.dtype)) for n, t in zip(names, model.outputs))
    return inputs, outputs


def _keras_tensor_name(t, i: int, kind: str) -> str:
    # A Sequential's input tensor is called keras_tensor_N; its InputLayer carries the real name.
    history = getattr(t, "_keras_history", None)
    name = getattr(getattr(history, "operation", None), "name", None) or getattr(t, "name", None) or f"{kind}_{i}"
    return name.split(":")[0]


def keras_output_names(model) -> list[str]:
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(model.outputs) or len(set(names)) != len(names):
        names = [f"output_{i}" for i in range(len(model.outputs))]
    return names


def _keras_runner(path: Path, threads: int | None, trusted: bool = False) -> Runner:
    _tf_threads(threads)

    tf = import_tf()
    model = load_keras_model(path, trusted=trusted)
    inputs, outputs = keras_signature(model)
    # A graph function traced once for the signature (dynamic batch): how Keras serves, not eager Python.
    signature = [tf.TensorSpec(t.shape, tf.as_dtype(t.dtype)) for t in inputs]

    @tf.function(input_signature=signature)
    def call(*args):
        result = model(list(args) if len(args) > 1 else args[0], training=False)
        return list(result) if isinstance(result, (list, tuple)) else [result]

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        result = call(*[np.asarray(feeds[t.name], dtype=t.dtype) for t in inputs])
        return {o.name: r.numpy() for o, r in zip(outputs, result)}

    return Runner("keras", inputs, outputs, run)


def load_savedmodel(path: Path):

    tf = import_tf()
    try:
        return tf.saved_model.load(str(path))
    except Exception as e:
        raise BadInput(f"{path}: not a loadable SavedModel ({first_line(e)})",
                       "check the directory holds a complete SavedModel (saved_model.pb and variables/)") from e


def savedmodel_signature(loaded) -> tuple[object, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    sigs = getattr(loaded, "signatures", {})
    if "serving_default" not in sigs:
        raise BadInput(f"the SavedModel has no 'serving_default' signature (it has: {', '.join(sigs) or 'none'})",
                       "export it with a serving_default signature, e.g. model.export(path)")
    fn = sigs["serving_default"]
    _, kwargs = fn.structured_input_signature
    inputs = tuple(TensorSpec(k, tuple(s.shape.as_list()), s.dtype.name) for k, s in kwargs.items())
    outputs = tuple(TensorSpec(k, tuple(s.shape.as_list()), s.dtype.name) for k, s in fn.structured_outputs.items())
    return fn, inputs, outputs


def _savedmodel_runner(path: Path, threads: int | None, trusted: bool = False) -> Runner:
    _tf_threads(threads)

    tf = import_tf()
    loaded = load_savedmodel(path)
    fn, inputs, outputs = savedmodel_signature(loaded)

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        result = fn(**{t.name: tf.constant(feeds[t.name], dtype=t.dtype) for t in inputs})
        return {o.name: result[o.name].numpy() for o in outputs}

    run.keepalive = loaded  # the concrete function needs its object graph alive
    return Runner("savedmodel", inputs, outputs, run)


def _tf_threads(threads: int | None) -> None:
    if not threads:
        return

    tf = import_tf()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process; the first setting stands


# --------------------------------------------------------------------------- onnx

_ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


def onnx_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
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


# --------------------------------------------------------------------------- tflite

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


def _tflite_spec(d: dict, name: str | None = None) -> TensorSpec:
    sig = d.get("shape_signature")
    shape = sig if sig is not None and len(sig) else d["shape"]
    return TensorSpec(name or d["name"], tuple(None if int(s) < 0 else int(s) for s in shape), _dtype_name(d["dtype"]))


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


# --------------------------------------------------------------------------- the table

RUNTIMES: dict[str, Callable[[Path, int | None, bool], Runner]] = {
    "keras": _keras_runner,
    "savedmodel": _savedmodel_runner,
    "onnx": _onnx_runner,
    "tflite": _tflite_runner,
}


def load_runner(format: str, path: Path, threads: int | None = None, *, trusted: bool = False) -> Runner:
    """Load `path` on the runtime for `format`. Raises BadInput when the runtime refuses the file.
    `trusted` lets Keras load code from the file (--unsafe-keras)."""
    return RUNTIMES[format](Path(path), threads, trusted)


def artifact_runner(artifact, threads: int | None = None) -> Runner:
    """The runner for an Artifact, with the trust the user gave its source."""
    return load_runner(artifact.format, artifact.path, threads, trusted=artifact.trusted)


def run_batched(runner: Runner, feeds: Feeds, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Run `feeds` through `runner` in batches and stitch the outputs back together.

    A model exported with a static batch dimension gets batches of exactly that size (the tflite runner
    already splits them itself).
    """
    n = len(next(iter(feeds.values())))
    static = {t.shape[0] for t in runner.inputs if t.shape and t.shape[0] is not None}
    if static and runner.format != "tflite":
        batch_size = min(batch_size, min(static))
    batch_size = max(batch_size, 1)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, batch_size):
        parts.append(runner({k: v[start:start + batch_size] for k, v in feeds.items()}))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
