"""`inspect`: what a model file is: format, signature, size, parameter count and the top ops.

Every fact comes from the model's backend; for an ONNX file that is the onnx package alone, never TensorFlow.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from mdeploy.passes.backends import backend, open_artifact
from mdeploy.passes.core.artifact import path_size


def describe(model: Path | str, top: int = 15, *, trusted: bool = False, max_bytes: int | None = None) -> dict[str, Any]:
    artifact = open_artifact(model, trusted=trusted, max_bytes=max_bytes)
    facts = backend(artifact.format).facts(Path(artifact.path), trusted)
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


def inspect_model(model: Path, *, trusted: bool = False, max_bytes: int | None = None) -> dict[str, Any]:
    return describe(model, trusted=trusted, max_bytes=max_bytes)
