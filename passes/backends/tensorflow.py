"""The TensorFlow backend (keras and savedmodel): load, signature, run, facts and prunable weights."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.passes.backends.runner import Backend, Feeds, Runner, dtype_name, weight_record
from mdeploy.passes.backends.tf_env import import_keras, import_tf
from mdeploy.passes.core.artifact import TensorSpec, Trust
from mdeploy.passes.core.errors import BadInput, first_line


def load_keras_model(path: Path, *, trusted: bool | Trust = False):
    """Load a Keras model with safe_mode on, unless the user vouched for the file's code (`trusted`, --unsafe-keras);
    with the classes of the --custom-objects modules the Trust carries (importing them runs them)."""
    keras = import_keras()
    custom = custom_objects(trusted.custom_objects) if isinstance(trusted, Trust) else {}
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=not trusted, custom_objects=custom or None)
    except ValueError as e:
        if "safe_mode" in str(e) or "unsafe" in str(e).lower():
            raise BadInput(f"{path}: the model contains code (a Lambda layer or similar) that Keras safe_mode refuses to load",
                           "if you trust this file, pass --unsafe-keras") from e
        raise _load_failure(path, e) from e
    except Exception as e:  # h5py/zip/json errors all mean the same thing to a user
        raise _load_failure(path, e) from e


def _load_failure(path: Path, e: Exception) -> BadInput:
    text = str(e)
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if missing:
        return BadInput(f"{path}: the model uses the custom class '{missing.group(1)}', which Keras cannot find",
                        f"pass --custom-objects MODULE:{missing.group(1)} with the module that defines it "
                        "(importing it runs its code)")
    if "subclass" in text.lower() and "from_config" in text:
        return BadInput(f"{path}: a subclassed Keras model that cannot be rebuilt from its config ({first_line(e)})",
                        "give its class with --custom-objects MODULE:Name (with get_config/from_config), or save a "
                        "functional model or model.export() a SavedModel and pass that")
    return BadInput(f"{path}: not a loadable Keras model ({first_line(e)})",
                    "re-save it with model.save() from Keras 3, or check the file is complete")


def custom_objects(specs: tuple[str, ...]) -> dict[str, Any]:
    """`module[:Name,...]` -> {name: object}: the named attributes, else every Keras class the module defines."""
    import importlib
    import inspect as pyinspect

    from mdeploy.calibration.files import import_user_module

    keras = import_keras()
    found: dict[str, Any] = {}
    for spec in specs:
        module_name, _, names = spec.partition(":")
        try:
            module = import_user_module(module_name)
        except ImportError as e:
            raise BadInput(f"--custom-objects {spec}: cannot import {module_name} ({first_line(e)})",
                           "give an importable module (a .py file in the working directory, or an installed package)") from e
        if names:
            for name in (n.strip() for n in names.split(",") if n.strip()):
                if not hasattr(module, name):
                    raise BadInput(f"--custom-objects {spec}: {module_name} has no '{name}'",
                                   f"names defined there: {', '.join(n for n in dir(module) if not n.startswith('_'))}")
                found[name] = getattr(module, name)
        else:
            for name, obj in vars(module).items():
                if pyinspect.isclass(obj) and issubclass(obj, (keras.layers.Layer, keras.losses.Loss)):
                    found[name] = obj
        importlib.invalidate_caches()
    return found


def keras_signature(model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    if not _has_graph(model):
        return _traced_signature(model)
    inputs = tuple(TensorSpec(_keras_tensor_name(t, i, "input"), tuple(t.shape), dtype_name(t.dtype))
                   for i, t in enumerate(model.inputs))
    names = keras_output_names(model)
    outputs = tuple(TensorSpec(n, tuple(t.shape), dtype_name(t.dtype)) for n, t in zip(names, model.outputs))
    return inputs, outputs


def _has_graph(model) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _traced_signature(model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """A subclassed model has no input tensors: its signature comes from the input shape it was built with (saved in
    the file) and the outputs of one symbolic call."""
    keras = import_keras()
    build = (model.get_build_config() or {}) if hasattr(model, "get_build_config") else {}
    shape = build.get("input_shape")
    if shape is None or not isinstance(shape, (list, tuple)) or (shape and isinstance(shape[0], (list, tuple, dict))):
        raise BadInput("a subclassed Keras model without a single recorded input shape: its inputs cannot be traced",
                       "call the model once on an input before model.save(), or save a functional model or model.export() "
                       "a SavedModel and pass that")
    spec = keras.KerasTensor(tuple(shape), dtype="float32")
    out = model.compute_output_spec(spec)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    inputs = (TensorSpec("input", tuple(shape), "float32"),)
    outputs = tuple(TensorSpec(f"output_{i}" if len(outs) > 1 else "output_0", tuple(o.shape), dtype_name(o.dtype))
                    for i, o in enumerate(outs))
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


def _keras_facts(path: Path, trusted: bool = False) -> dict[str, Any]:
    model = load_keras_model(path, trusted=trusted)
    ops = Counter(type(layer).__name__ for layer in model.layers)
    return {"parameters": int(model.count_params()), "ops": ops}


def _savedmodel_facts(path: Path) -> dict[str, Any]:
    tf = import_tf()
    loaded = load_savedmodel(path)
    params = 0
    try:
        for name, shape in tf.train.list_variables(str(Path(path) / "variables" / "variables")):
            if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH") and "optimizer" not in name.lower():
                params += int(np.prod(shape)) if shape else 1
    except (tf.errors.NotFoundError, ValueError):
        pass
    ops: Counter = Counter()
    fn = loaded.signatures.get("serving_default")
    if fn is not None:
        # The signature body is a call into the function library: count the ops inside it.
        graph_def = fn.graph.as_graph_def()
        nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
        skip = {"Placeholder", "NoOp", "Identity", "ReadVariableOp", "Const", "StatefulPartitionedCall", "PartitionedCall"}
        ops = Counter(n.op for n in nodes if n.op not in skip)
    return {"parameters": params, "ops": ops, "signatures": list(loaded.signatures)}


@dataclass
class KerasWeight:
    """One prunable kernel: its layer's (nested) name, the variable, and the input axis for N:M patterns
    (None where the kernel has no input-channel reduction: depthwise kernels and embedding tables)."""

    layer: str
    kind: str
    variable: Any
    input_axis: int | None

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.variable.name}"


def _kernel_names(layer, keras) -> list[tuple[str, int | None]]:
    L = keras.layers
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        return [("depthwise_kernel", None), ("pointwise_kernel", -2)]
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return [("kernel", None)]
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return [("kernel", -1)]  # (..., out, in)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        return [("kernel", -2)]  # (..., in, out)
    if isinstance(layer, L.Dense):
        return [("kernel", 0)]  # (in, out)
    if isinstance(layer, L.Embedding):
        return [("embeddings", None)]
    return []


def prunable_weights(model) -> list[KerasWeight]:
    """Every float kernel of a prunable layer, in layer order, descending into nested models."""

    keras = import_keras()
    found: list[KerasWeight] = []

    def walk(layers, prefix: str) -> None:
        for layer in layers:
            name = f"{prefix}{layer.name}"
            sub = getattr(layer, "layers", None)
            if isinstance(layer, keras.Model) and sub:
                walk(sub, f"{name}/")
                continue
            for attr, axis in _kernel_names(layer, keras):
                var = next((v for v in layer.weights if v.name == attr), None)
                if var is None or "float" not in str(var.dtype):
                    continue  # unbuilt, or an int8-quantized kernel: nothing to prune by magnitude
                found.append(KerasWeight(name, type(layer).__name__, var, axis))

    walk(model.layers, "")
    return found


def _keras_tensors(path: Path, trusted: bool = False) -> list[dict[str, Any]]:
    model = load_keras_model(path, trusted=trusted)
    return [weight_record(w.name, np.asarray(w.variable.numpy()), 0) for w in prunable_weights(model)]


def _keras_open(path: Path, trusted: bool, max_bytes: int | None = None) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    return keras_signature(load_keras_model(path, trusted=trusted))


def _savedmodel_open(path: Path, trusted: bool, max_bytes: int | None = None) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    _, inputs, outputs = savedmodel_signature(load_savedmodel(path))
    return inputs, outputs


KERAS = Backend("keras", "tensorflow", runner=_keras_runner, signature=_keras_open, facts=_keras_facts,
                weights=_keras_tensors)
SAVEDMODEL = Backend("savedmodel", "tensorflow", runner=_savedmodel_runner, signature=_savedmodel_open,
                     facts=lambda path, trusted: _savedmodel_facts(path))
