"""What `inspect` reports about a model: format, signature, parameter count, size and the top ops.

For ONNX this touches only the onnx package, never TensorFlow.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.passes.backends.load import load_onnx_model, open_artifact
from mdeploy.passes.backends.runtimes import litert_interpreter, load_keras_model, load_savedmodel
from mdeploy.passes.backends.tf_env import import_tf
from mdeploy.passes.core.artifact import Artifact, path_size


def _onnx_facts(path: Path) -> dict[str, Any]:
    model = load_onnx_model(path)
    # weights only: float and quantized-int initializers, not int64 shape constants
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in (1, 2, 3, 10, 11, 16))
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    ops = Counter(n.op_type for n in model.graph.node)
    return {"parameters": params, "opset": opsets.get("ai.onnx"), "opsets": opsets, "ops": ops,
            "node_count": len(model.graph.node)}


_BIASED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D"}


def _tflite_facts(path: Path) -> dict[str, Any]:

    interp = litert_interpreter(path)
    try:
        op_details = interp._get_ops_details()  # noqa: SLF001 - LiteRT's only per-op listing
    except Exception:  # noqa: BLE001 - op listing is a nicety; the rest of inspect still works
        op_details = []
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


FACTS = {"onnx": _onnx_facts, "tflite": _tflite_facts, "keras": _keras_facts, "savedmodel": _savedmodel_facts}


def describe(model: Path | str, top: int = 15, *, trusted: bool = False) -> dict[str, Any]:
    artifact: Artifact = open_artifact(model, trusted=trusted)
    facts = _keras_facts(artifact.path, trusted) if artifact.format == "keras" else FACTS[artifact.format](artifact.path)
    ops: Counter = facts.pop("ops")
    return {
        "path": str(model),
        "format": artifact.format,
        "size_bytes": path_size(artifact.path),
        "inputs": [t.to_dict() for t in artifact.inputs],
        "outputs": [t.to_dict() for t in artifact.outputs],
        **facts,
        "op_count": sum(ops.values()),
        "top_ops": [{"op": k, "count": v} for k, v in ops.most_common(top)],
    }
