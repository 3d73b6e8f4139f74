"""A batch and what every source shares: the label key, the signature check, counting and collecting.

Kept apart from the concrete sources so that every reader (npz, npy, csv, images, callables) can import it.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput

LABELS = "__labels__"
LABEL_KEYS = ("labels", "y")
Batch = dict[str, np.ndarray]
CALLABLE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
PICKLE_HINT = "save plain numeric arrays (no dtype=object) with numpy.save/numpy.savez; mdeploy never unpickles data"


class CalibrationSource(Protocol):
    """Iterating yields batches; iterating again starts over. `description` names it in reports."""

    description: str
    has_labels: bool

    def __iter__(self) -> Iterator[Batch]: ...


def check_batch(batch: Batch, inputs: Sequence[TensorSpec], origin: str) -> Batch:
    """Check a batch against the input signature (names, rank, static dims, dtype, finiteness) and cast dtypes."""
    out: Batch = {}
    names = [t.name for t in inputs]
    for spec in inputs:
        if spec.name not in batch:
            if len(inputs) == 1 and len([k for k in batch if k != LABELS]) == 1:
                key = next(k for k in batch if k != LABELS)
            else:
                found = ", ".join(k for k in batch if k != LABELS) or "nothing"
                raise BadInput(f"{origin}: no data for input '{spec.name}' (found: {found})",
                               f"key the arrays by the model's input names: {', '.join(names)}")
        else:
            key = spec.name
        arr = np.asarray(batch[key])
        if arr.dtype.hasobject:
            raise BadInput(f"{origin}: input '{spec.name}' holds Python objects, not numbers", PICKLE_HINT)
        expected = spec.shape
        if arr.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected[1:], arr.shape[1:])) or (
            expected and expected[0] is not None and arr.shape[0] != expected[0] and expected[0] != 1
        ):
            raise BadInput(f"{origin}: input '{spec.name}' expects shape {spec.shape_str()} but the data has {list(arr.shape)}",
                           "reshape or preprocess the data to the model's input shape (`mdeploy inspect MODEL` shows it)")
        want = np.dtype(spec.dtype) if spec.dtype not in ("str",) else arr.dtype
        if arr.dtype.kind != want.kind and not (arr.dtype.kind in "iub" and want.kind == "f"):
            raise BadInput(f"{origin}: input '{spec.name}' expects {want.name} but the data is {arr.dtype.name}",
                           f"convert the array to {want.name}")
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise BadInput(f"{origin}: input '{spec.name}' contains NaN or Inf", "clean the data; calibration and validation need finite values")
        out[spec.name] = arr.astype(want, copy=False)
    if LABELS in batch:
        out[LABELS] = np.asarray(batch[LABELS])
    return out


def batch_size_of(batch: Batch) -> int:
    """Samples in a batch: the leading dimension, or 1 for a batch without a common one (scalars, states)."""
    arrays = [np.asarray(v) for k, v in batch.items() if k != LABELS]
    if any(a.ndim == 0 for a in arrays) or len({a.shape[0] for a in arrays}) > 1:
        return 1
    return len(arrays[0])


def collect(source: CalibrationSource, limit: int | None = None) -> Batch:
    """Concatenate up to `limit` samples of a source into one batch (for small held-out sets)."""
    parts: list[Batch] = []
    n = 0
    for batch in source:
        size = batch_size_of(batch)
        if limit is not None and n + size > limit:
            batch = {k: v[: limit - n] for k, v in batch.items()}
            size = limit - n
        parts.append(batch)
        n += size
        if limit is not None and n >= limit:
            break
    if not parts:
        raise BadInput(f"{source.description}: no samples", "give a data file with at least one sample")
    if any(np.asarray(v).ndim == 0 for v in parts[0].values()) or len({np.shape(v)[0] for v in parts[0].values()}) > 1:
        return parts[0]  # no common sample axis (scalars, recurrent state): one batch is one run, not concatenated
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def count_samples(source: CalibrationSource) -> int:
    """How many samples a source holds; sources that cannot say are read through (which also checks every batch)."""
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return sum(batch_size_of(b) for b in source)
