"""The one backend table: every format-specific thing (run, signature, facts, weights, runtime package) goes
through `backend(format)`. One module per runtime: tensorflow.py (keras, savedmodel), onnxruntime.py (onnx),
litert.py (tflite); runner.py holds what they share. Heavy runtimes are imported only when a model is opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.passes.backends.litert import TFLITE
from mdeploy.passes.backends.onnxruntime import ONNX
from mdeploy.passes.backends.runner import Backend, Feeds, Runner, run_batched
from mdeploy.passes.backends.tensorflow import KERAS, SAVEDMODEL
from mdeploy.passes.core.artifact import Artifact, detect_format

BACKENDS: dict[str, Backend] = {b.format: b for b in (KERAS, SAVEDMODEL, ONNX, TFLITE)}

__all__ = ["BACKENDS", "Backend", "Feeds", "Runner", "artifact_runner", "backend", "load_runner", "open_artifact",
           "run_batched", "weight_tensors"]


def backend(format: str) -> Backend:
    return BACKENDS[format]


def load_runner(format: str, path: Path, threads: int | None = None, *, trusted: bool = False) -> Runner:
    """Load `path` on the runtime for `format`. Raises BadInput when the runtime refuses the file.
    `trusted` lets Keras load code from the file (--unsafe-keras)."""
    return BACKENDS[format].runner(Path(path), threads, trusted)


def artifact_runner(artifact: Artifact, threads: int | None = None) -> Runner:
    """The runner for an Artifact, with the trust the user gave its source."""
    return load_runner(artifact.format, artifact.path, threads, trusted=artifact.trusted)


def open_artifact(path: Path | str, *, trusted: bool = False, max_bytes: int | None = None) -> Artifact:
    """An Artifact for a model on disk, with its signature. Raises BadInput for anything unreadable, or larger than
    `max_bytes` (--max-model-bytes; default limits.default_max_model_bytes) once loaded.
    `trusted`: the user allows this model's code to run (--unsafe-keras); artifacts derived from it inherit that.
    An ONNX file is read with the onnx package alone, so nothing about an .onnx imports TensorFlow."""
    fmt, real = detect_format(Path(path), max_bytes)
    inputs, outputs = BACKENDS[fmt].signature(real, trusted, max_bytes)
    return Artifact(format=fmt, path=real, inputs=inputs, outputs=outputs, name="source",
                    meta={"precision": "float32"}, trusted=trusted)


def weight_tensors(artifact: Artifact) -> list[dict[str, Any]] | None:
    """The artifact's weight tensors ({name, shape, dtype, params, zeros, sparsity}), or None for a format without
    a reader (savedmodel)."""
    reader = BACKENDS[artifact.format].weights
    return None if reader is None else reader(Path(artifact.path), artifact.trusted)
