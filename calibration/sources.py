"""Data sources. A source is re-iterable and yields batches, dict[input name, ndarray], never the whole set at once.

Labels, when the data has them, travel under the reserved key `LABELS` in each batch.
Every batch is checked against the model's input signature before a runtime sees it.
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mdeploy.passes.artifact import TensorSpec
from mdeploy.passes.errors import BadInput

LABELS = "__labels__"
LABEL_KEYS = ("labels", "y")
Batch = dict[str, np.ndarray]


class CalibrationSource(Protocol):
    """Iterating yields batches; iterating again starts over. `description` names it in reports."""

    description: str
    has_labels: bool

    def __iter__(self) -> Iterator[Batch]: ...


def check_batch(batch: Batch, inputs: Sequence[TensorSpec], origin: str) -> Batch:
    """Check a batch against the input signature (names, rank, static dims, finiteness) and cast dtypes."""
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
        expected = spec.shape
        if arr.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected[1:], arr.shape[1:])) or (
            expected and expected[0] is not None and arr.shape[0] != expected[0] and expected[0] != 1
        ):
            raise BadInput(f"{origin}: input '{spec.name}' expects shape {spec.shape_str()} but the data has {list(arr.shape)}",
                           "reshape or preprocess the data to the model's input shape (`mdeploy inspect MODEL` shows it)")
        want = np.dtype(spec.dtype) if spec.dtype not in ("str",) else arr.dtype
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise BadInput(f"{origin}: input '{spec.name}' contains NaN or Inf", "clean the data; calibration and validation need finite values")
        if arr.dtype.kind != want.kind and not (arr.dtype.kind in "iub" and want.kind == "f"):
            raise BadInput(f"{origin}: input '{spec.name}' expects {want.name} but the data is {arr.dtype.name}",
                           f"convert the array to {want.name}")
        out[spec.name] = arr.astype(want, copy=False)
    if LABELS in batch:
        out[LABELS] = np.asarray(batch[LABELS])
    return out


def collect(source: CalibrationSource, limit: int | None = None) -> Batch:
    """Concatenate up to `limit` samples of a source into one batch (for small held-out sets)."""
    parts: list[Batch] = []
    n = 0
    for batch in source:
        size = len(next(iter(batch.values())))
        if limit is not None and n + size > limit:
            batch = {k: v[: limit - n] for k, v in batch.items()}
            size = limit - n
        parts.append(batch)
        n += size
        if limit is not None and n >= limit:
            break
    if not parts:
        raise BadInput(f"{source.description}: no samples", "give a data file with at least one sample")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclass
class RandomSource:
    """Inputs generated from the signature with a fixed seed: uniform [0, 1) floats, small ints.

    Only used when asked for by name (`random`) or for parity checks; it validates nothing about accuracy.
    """

    inputs: tuple[TensorSpec, ...]
    samples: int = 8
    batch_size: int = 8
    seed: int = 0
    has_labels: bool = False

    @property
    def description(self) -> str:
        return f"random(seed={self.seed}, samples={self.samples})"

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.samples, self.batch_size):
            n = min(self.batch_size, self.samples - start)
            batch: Batch = {}
            for t in self.inputs:
                shape = (n, *[d if d is not None else 1 for d in t.shape[1:]])
                dt = np.dtype(t.dtype)
                if dt.kind == "f":
                    batch[t.name] = rng.random(shape, dtype=np.float32).astype(dt)
                elif dt.kind in "iu":
                    batch[t.name] = rng.integers(0, 10, shape).astype(dt)
                else:
                    batch[t.name] = rng.integers(0, 2, shape).astype(dt)
            yield batch


@dataclass
class NpzSource:
    """A .npz file: arrays keyed by input name (or one array for a one-input model), optional `labels`/`y`.

    np.load is memory-mapped per member and never unpickles; batches are sliced lazily.
    """

    path: Path
    inputs: tuple[TensorSpec, ...]
    batch_size: int = 32
    start: int = 0
    stop: int | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise BadInput(f"{self.path}: no such data file", "check the path of --data / --calibration / --validation")
        if not zipfile.is_zipfile(self.path):
            raise BadInput(f"{self.path} is not a .npz archive", "save the data with numpy.savez(path, **{input_name: array})")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                self._keys = list(z.files)
                arrays = {k: z[k] for k in self._keys}
        except ValueError as e:
            raise BadInput(f"{self.path} holds pickled (object) arrays, which mdeploy refuses to load",
                           "save plain numeric arrays (no dtype=object) with numpy.savez") from e
        except Exception as e:
            raise BadInput(f"{self.path} is not a readable .npz file ({e})", "re-save it with numpy.savez") from e
        self._arrays = arrays
        label_keys = [k for k in self._keys if k in LABEL_KEYS]
        self._label_key = label_keys[0] if label_keys else None
        data_keys = [k for k in self._keys if k not in LABEL_KEYS]
        if not data_keys:
            raise BadInput(f"{self.path} holds no input arrays", "save at least one array keyed by the input name")
        counts = {len(arrays[k]) for k in data_keys + ([self._label_key] if self._label_key else [])}
        if len(counts) != 1:
            raise BadInput(f"{self.path}: arrays have different numbers of samples ({sorted(counts)})",
                           "every array (and labels) needs the same first dimension")
        self.total = counts.pop()

    @property
    def has_labels(self) -> bool:
        return self._label_key is not None

    @property
    def description(self) -> str:
        rng = "" if (self.start == 0 and self.stop is None) else f"[{self.start}:{'' if self.stop is None else self.stop}]"
        return f"{self.path.name}{rng}"

    def __len__(self) -> int:
        stop = self.total if self.stop is None else min(self.stop, self.total)
        return max(0, stop - self.start)

    def slice(self, start: int, stop: int | None) -> NpzSource:
        """A sub-range of the same file (used to hold calibration samples out for validation)."""
        sub = NpzSource.__new__(NpzSource)
        sub.__dict__.update(self.__dict__)
        base_stop = self.total if self.stop is None else self.stop
        sub.start = self.start + start
        sub.stop = base_stop if stop is None else min(base_stop, self.start + stop)
        return sub

    def __iter__(self) -> Iterator[Batch]:
        stop = self.total if self.stop is None else min(self.stop, self.total)
        data_keys = [k for k in self._keys if k not in LABEL_KEYS]
        for s in range(self.start, stop, self.batch_size):
            e = min(stop, s + self.batch_size)
            batch = {k: self._arrays[k][s:e] for k in data_keys}
            if self._label_key:
                batch[LABELS] = self._arrays[self._label_key][s:e]
            yield check_batch(batch, self.inputs, self.description)


def open_source(spec: str, inputs: tuple[TensorSpec, ...], *, batch_size: int = 32, samples: int | None = None,
                seed: int = 0) -> CalibrationSource:
    """Open a data source from its command-line spelling: a .npz path, or `random`."""
    if spec == "random":
        return RandomSource(inputs, samples=samples or 100, batch_size=batch_size, seed=seed)
    path = Path(spec)
    if path.suffix.lower() == ".npz" or path.is_file():
        return NpzSource(path, inputs, batch_size=batch_size)
    raise BadInput(f"{spec}: unrecognised data source", "pass a .npz file or the word `random`")
