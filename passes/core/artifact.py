"""Artifact: an immutable handle on one model file (format, path, meta), and how to recognise one on disk.

Passes never change an Artifact; they derive a new one with `derive` (a `dataclasses.replace`),
which is what makes lineage, caching and the report plain data.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.limits import check_keras_archive, check_model_bytes

FORMATS = ("keras", "savedmodel", "onnx", "tflite")
# Where an artifact of each format is deployed: the gate asks for a passing artifact per requested target.
DEPLOYMENT_TARGET = {"onnx": "cloud", "savedmodel": "cloud", "tflite": "edge"}
_H5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. `shape` uses None for a dynamic dimension; `dim_names` keeps what a format calls
    its dynamic dimensions (ONNX dim_param, e.g. "batch"), which is how generated inputs give shared dims one value."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    dim_names: tuple[str | None, ...] = field(default=(), compare=False)

    def shape_str(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if any(self.dim_names):
            out["dim_names"] = list(self.dim_names)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"], tuple(d.get("dim_names", ())))


@dataclass(frozen=True)
class Trust:
    """What the user allows a model's own code to do, as it travels with the Artifact: `unsafe_keras` turns Keras
    safe_mode off (Lambda layers); `custom_objects` are modules (`module[:Name,...]`) imported, which runs them,
    to give Keras a file's custom classes. Truthy exactly when safe_mode is off, like the bool it extends."""

    unsafe_keras: bool = False
    custom_objects: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.unsafe_keras


def trust_to_json(trusted: bool | Trust) -> bool | dict[str, Any]:
    """A Trust as plain JSON (for a spawned process's job), a bool as itself."""
    if isinstance(trusted, Trust):
        return {"unsafe_keras": trusted.unsafe_keras, "custom_objects": list(trusted.custom_objects)}
    return bool(trusted)


def trust_from_json(value: Any) -> bool | Trust:
    if isinstance(value, dict):
        return Trust(bool(value.get("unsafe_keras")), tuple(value.get("custom_objects") or ()))
    return bool(value)


@dataclass(frozen=True)
class Artifact:
    """A model in one format at one path. `meta` is free-form but its known keys are:

    precision (float32|float16|int8|dynamic-int8), sparsity (float), produced_by
    ({"pass": name, "params": {...}}), plus any pass-specific facts.
    """

    format: str
    path: Path
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    name: str = "source"
    parent: Artifact | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # The user vouched for this model's code (--unsafe-keras): Keras may load it with safe_mode off. The permission
    # travels with the artifact and everything derived from it, never through a module global.
    trusted: bool | Trust = field(default=False, compare=False)

    def __post_init__(self) -> None:
        # No two artifacts (nor a report record) ever share a mutable meta dict.
        object.__setattr__(self, "meta", copy.deepcopy(dict(self.meta)))

    def derive(self, *, format: str, path: Path, name: str, produced_by: dict[str, Any], **meta: Any) -> Artifact:
        """A new artifact made from this one by a pass; meta not overridden is inherited (as a copy)."""
        merged = {**self.meta, **meta, "produced_by": produced_by}
        return dataclasses.replace(self, format=format, path=Path(path), name=name, parent=self, meta=merged)

    @property
    def precision(self) -> str:
        return self.meta.get("precision", "float32")

    def size_bytes(self) -> int:
        return path_size(self.path)

    def sha256(self) -> str:
        return content_hash(self.path)

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        path = self.path
        if relative_to is not None:
            try:
                path = Path(os.path.relpath(self.path, relative_to))
            except ValueError:
                pass
        return {
            "name": self.name,
            "format": self.format,
            "path": str(path),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "parent": self.parent.name if self.parent else None,
            "meta": copy.deepcopy(self.meta),
        }


def path_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def content_hash(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def resolve_savedmodel_dir(path: Path) -> Path | None:
    """The SavedModel directory at `path`, accepting a TF Serving model root (NAME/<version>/)."""
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        return path
    versions = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()]
    if versions:
        return max(versions, key=lambda p: int(p.name))
    return None


def detect_format(path: Path, max_bytes: int | None = None) -> tuple[str, Path]:
    """Recognise a model by its extension and its bytes. Returns (format, path to load).

    Raises BadInput, naming what was wrong, for anything that is not a readable model or that would take more than
    `max_bytes` (default: limits.default_max_model_bytes) to hold; ONNX external data is checked when it is loaded.
    """
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file or directory", "check the path; model files are .keras, .h5, .onnx, .tflite or a SavedModel directory")
    if path.is_dir():
        sm = resolve_savedmodel_dir(path)
        if sm is None:
            raise BadInput(f"{path} is a directory but not a SavedModel (no saved_model.pb)",
                           "pass a SavedModel directory, a TF Serving model root (NAME/1/saved_model.pb) or a model file")
        return "savedmodel", sm
    suffix = path.suffix.lower()
    size = path.stat().st_size
    if size == 0:
        raise BadInput(f"{path} is empty (0 bytes)", "the file was probably truncated while copying; re-export or re-download it")
    check_model_bytes(path, size, max_bytes)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise BadInput(f"{path} is not a Keras v3 archive (a .keras file is a zip)",
                           "re-save the model with model.save('model.keras'), or pass the right file")
        check_keras_archive(path, max_bytes)
        return "keras", path
    if suffix in (".h5", ".hdf5"):
        if not head.startswith(_H5_MAGIC):
            raise BadInput(f"{path} is not an HDF5 file", "re-save the model with model.save('model.h5') or use the .keras format")
        return "keras", path
    if suffix == ".tflite":
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise BadInput(f"{path} is not a TFLite flatbuffer (missing the TFL3 identifier)",
                           "the file is corrupt or not a .tflite model; re-convert it")
        return "tflite", path
    if suffix == ".onnx":
        return "onnx", path
    raise BadInput(f"{path}: unknown model type '{suffix or path.name}'",
                   "supported: .keras, .h5, .onnx, .tflite, or a SavedModel directory")
