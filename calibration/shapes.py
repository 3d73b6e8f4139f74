"""The shape of a generated input, and `--input-shape NAME:D1,D2,...` (with `?` for a dimension left dynamic).

Generated inputs keep every fixed dimension. A dynamic dimension gets, in order: the batch size when it is
the batch (the leading dimension, or a dimension the format names like the batch, e.g. ONNX `batch`);
DEFAULT_SPATIAL when it is an image's height or width (named so, or beside a 1/3/4 channel dimension in a
rank-4 input); else DEFAULT_SEQUENCE. Dimensions that share a name (ONNX dim_param) share a value, so a
recurrent state [2, batch, 128] follows its audio input [batch, sequence]. Rank-0 inputs stay scalars.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput

DEFAULT_SPATIAL = 224
DEFAULT_SEQUENCE = 16
SEQUENCE_PROBES = (DEFAULT_SEQUENCE, 128, 512, 2048)  # what shape_probe tries when a model refuses the default
_BATCH_NAMES = re.compile(r"^(n|b|batch|batch_?size|bs|num_?samples|unk__\d+)$", re.IGNORECASE)
_SPATIAL_NAMES = re.compile(r"(height|width|^h$|^w$|^y$|^x$)", re.IGNORECASE)
_CHANNELS = (1, 3, 4)
InputShapes = tuple[tuple[str, tuple[int | None, ...]], ...]


def parse_input_shapes(values: Sequence[str] | None) -> InputShapes:
    """`NAME:1,3,224,224` or `NAME:?,3,?,?` (repeatable) -> ((NAME, (1, 3, 224, 224)), ...); `?` is None."""
    shapes = []
    for text in values or []:
        name, _, dims = str(text).rpartition(":")
        try:
            parsed = tuple(None if d.strip() == "?" else int(d) for d in dims.split(",")) if dims.strip() else ()
        except ValueError:
            parsed = ()
        if not name or (dims.strip() and not parsed) or any(d is not None and d <= 0 for d in parsed):
            raise BadInput(f"--input-shape '{text}' is not NAME:D1,D2,... (positive sizes, or ? to keep one dynamic)",
                           "for example --input-shape image:?,224,224,3 (an empty list, NAME:, means a scalar)")
        shapes.append((name, parsed))
    return tuple(shapes)


def pin_input_shapes(inputs: tuple[TensorSpec, ...], shapes: InputShapes) -> tuple[TensorSpec, ...]:
    """The signature with the given shapes pinned: names and ranks must match, a fixed dimension cannot change."""
    if not shapes:
        return inputs
    by_name = {t.name: t for t in inputs}
    pinned = dict(shapes)
    unknown = [n for n in pinned if n not in by_name]
    if unknown:
        raise BadInput(f"--input-shape names '{unknown[0]}', which is not an input (inputs: {', '.join(by_name)})",
                       "spell it NAME:D1,D2,... with a name from `mdeploy inspect MODEL`")
    out = []
    for t in inputs:
        if t.name not in pinned:
            out.append(t)
            continue
        dims = pinned[t.name]
        if len(dims) != len(t.shape):
            raise BadInput(f"--input-shape {t.name}:{_spell(dims)} has rank {len(dims)}, the input has {t.shape_str()}",
                           f"give {len(t.shape)} dimension(s), ? for those to keep dynamic")
        clash = [i for i, (m, u) in enumerate(zip(t.shape, dims)) if m is not None and u is not None and m != u]
        if clash:
            raise BadInput(f"--input-shape {t.name}:{_spell(dims)} changes fixed dimension {clash[0]} of {t.shape_str()}",
                           "only dynamic (?) dimensions can be set")
        merged = tuple(u if u is not None else m for m, u in zip(t.shape, dims))
        out.append(dataclasses.replace(t, shape=merged))
    return tuple(out)


def _spell(dims) -> str:
    return ",".join("?" if d is None else str(d) for d in dims)


def dim_kind(spec: TensorSpec, axis: int) -> str:
    """batch | spatial | sequence, for a dynamic dimension of `spec`."""
    names = spec.dim_names or ()
    name = names[axis] if axis < len(names) else None
    if name:
        if _BATCH_NAMES.match(name):
            return "batch"
        if _SPATIAL_NAMES.search(name):
            return "spatial"
        if re.search(r"seq|len|time|token|sample|step", name, re.IGNORECASE):
            return "sequence"
    if axis == 0:
        return "batch"
    shape = spec.shape
    if len(shape) == 4 and (shape[1] in _CHANNELS and axis in (2, 3) or shape[3] in _CHANNELS and axis in (1, 2)):
        return "spatial"
    if len(shape) == 4 and shape[1] is None and shape[3] is None and axis in (1, 2):  # NHWC with dynamic channels
        return "spatial"
    if shape[0] is not None and shape[0] != 1 and all(d is not None for d in shape[:axis]) and len(shape) == 3:
        return "batch"  # a recurrent state [layers, batch, hidden]: the first dynamic dimension is the batch
    return "sequence"


def generated_shape(spec: TensorSpec, batch: int, sizes: dict[str, int] | None = None,
                    sequence: int = DEFAULT_SEQUENCE) -> tuple[int, ...]:
    """The concrete shape of a generated input; `sizes` carries values of named dims across inputs (updated)."""
    sizes = {} if sizes is None else sizes
    names = spec.dim_names or ()
    out = []
    for axis, d in enumerate(spec.shape):
        if d is not None and d > 0:
            out.append(int(d))
            continue
        name = names[axis] if axis < len(names) else None
        if name and name in sizes:
            out.append(sizes[name])
            continue
        kind = dim_kind(spec, axis)
        value = batch if kind == "batch" else DEFAULT_SPATIAL if kind == "spatial" else sequence
        if name:
            sizes[name] = value
        out.append(value)
    return tuple(out)


def batched_axis0(inputs: Sequence[TensorSpec]) -> bool:
    """Whether every input is batched along its leading dimension (so batches can be sliced and concatenated)."""
    for t in inputs:
        if not t.shape:
            return False
        if t.shape[0] is not None and t.shape[0] != 1:
            return False
        if t.shape[0] is None and dim_kind(t, 0) != "batch":
            return False
    return True


def is_unbatched(batch: dict[str, np.ndarray]) -> bool:
    """A batch whose arrays do not share a leading sample dimension (scalars, states): run and compared whole."""
    arrays = [np.asarray(v) for v in batch.values()]
    if any(a.ndim == 0 for a in arrays):
        return True
    return len({a.shape[0] for a in arrays}) > 1


def model_batch_limit(inputs: Sequence[TensorSpec]) -> int | None:
    """The most samples one run of the model takes: its fixed batch (1 for unbatched models), None when dynamic."""
    if not batched_axis0(inputs):
        return 1
    fixed = [t.shape[0] for t in inputs if t.shape and t.shape[0] is not None]
    return min(fixed) if fixed else None


def with_input_shapes(artifact, shapes: InputShapes):
    """The artifact with `--input-shape` pinned into its input signature (what every check generates inputs from)."""
    if not shapes:
        return artifact
    return dataclasses.replace(artifact, inputs=pin_input_shapes(artifact.inputs, shapes))
