"""What `inspect` reports about a model: format, signature, parameter count, size and the top ops.

For ONNX this touches only the onnx package, never TensorFlow.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.passes.artifact import Artifact, path_size
from mdeploy.passes.load import load_onnx_model, open_artifact


def _onnx_facts(path: Path) -> dict[str, Any]:
    model = load_onnx_model(path)
    # weights only: float and quantized-int initializers, not int64 shape constants
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in (1, 2, 3, 10, 11, 16))
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    ops = Counter(n.op_type for n in model.graph.node)
    return {"parameters": params, "opset": opsets.get("ai.onnx"), "opsets": opsets, "ops": ops,
            "node_count": len(model.graph.node)}


def _tflite_facts(path: Path) -> dict[str, Any]:
    from mdeploy.passes.runtimes import litert_interpreter

    interp = litert_interpreter(path)
    ops = Counter()
    try:
        for op in interp._get_ops_details():  # noqa: SLF001 - LiteRT's only per-op listing
            ops[op["op_name"]] += 1
    except Exception:  # noqa: BLE001 - op listing is a nicety; the rest of inspect still works
        pass
    # Constant tensors are the weights: count every element of tensors no op produces.
    produced = set()
    try:
        for op in interp._get_ops_details():  # noqa: SLF001
            produced.update(int(i) for i in op["outputs"])
    except Exception:  # noqa: BLE001
        pass
    inputs = {d["index"] for d in interp.get_input_details()}
    params = 0
    for t in interp.get_tensor_details():
        if t["index"] in produced or t["index"] in inputs:
            continue
        shape = t.get("shape")
        if shape is not None and len(shape) and np.dtype(t["dtype"]).kind in "fiu":
            params += int(np.prod(shape))
    return {"parameters": params, "ops": ops, "signatures": list(interp.get_signature_list())}


def _keras_facts(path: Path) -> dict[str, Any]:
    from mdeploy.passes.runtimes import load_keras_model

    model = load_keras_model(path)
    ops = Counter(type(layer).__name__ for layer in model.layers)
    return {"parameters": int(model.count_params()), "ops": ops}


def _savedmodel_facts(path: Path) -> dict[str, Any]:
    from mdeploy.passes.runtimes import load_savedmodel

    from mdeploy.passes.tf_env import import_tf

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


def describe(model: Path | str, top: int = 15) -> dict[str, Any]:
    artifact: Artifact = open_artifact(model)
    facts = FACTS[artifact.format](artifact.path)
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
