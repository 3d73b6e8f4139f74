"""What every backend shares: a loaded model as a Runner, batched running, and weight records."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.passes.core.artifact import TensorSpec

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


def dtype_name(dt) -> str:
    return np.dtype(dt).name


def run_batched(runner: Runner, feeds: Feeds, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Run `feeds` through `runner` in batches and stitch the outputs back together.

    A model exported with a static batch dimension gets batches of exactly that size (the tflite runner
    already splits them itself).
    """
    arrays = [np.asarray(v) for v in feeds.values()]
    if any(a.ndim == 0 for a in arrays) or len({a.shape[0] for a in arrays}) > 1:
        return runner(feeds)  # no common sample axis (scalars, a recurrent state): one run, never sliced
    n = len(arrays[0])
    static = {t.shape[0] for t in runner.inputs if t.shape and t.shape[0] is not None}
    if static and runner.format != "tflite":
        batch_size = min(batch_size, min(static))
    batch_size = max(batch_size, 1)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, batch_size):
        parts.append(runner({k: v[start:start + batch_size] for k, v in feeds.items()}))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def zero_like(values: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray | int:
    """The stored value that means 0.0: the zero point (per tensor or per channel along `axis`), else 0."""
    if zero_point is None or np.size(zero_point) == 0:
        return 0
    zp = np.asarray(zero_point)
    if zp.size == 1:
        return zp.reshape(()).astype(values.dtype)
    shape = [1] * values.ndim
    shape[axis % values.ndim] = zp.size
    return zp.reshape(shape).astype(values.dtype)


def weight_record(name: str, values: np.ndarray, zero) -> dict[str, Any]:
    params = int(values.size)
    zeros = int(np.count_nonzero(values == zero))
    return {"name": name, "shape": list(values.shape), "dtype": values.dtype.name, "params": params, "zeros": zeros,
            "sparsity": round(zeros / params, 6) if params else 0.0}


@dataclass(frozen=True)
class Backend:
    """Everything format-specific about one model format, in one place: how to run it, read its signature, describe
    it and read its weight tensors. `passes/backends/__init__.py` holds the one table of them."""

    format: str
    package: str  # the runtime package whose version bench reports
    runner: Callable[[Path, int | None, bool], Runner]  # (path, threads, trusted)
    # (path, trusted, max_bytes): max_bytes is --max-model-bytes, for what detect_format cannot see (ONNX external data)
    signature: Callable[[Path, bool, int | None], tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]]
    facts: Callable[[Path, bool], dict[str, Any]]  # parameters, ops (a Counter), and format-specific facts
    weights: Callable[[Path, bool], list[dict[str, Any]]] | None = None  # weight tensors, for sparsity
