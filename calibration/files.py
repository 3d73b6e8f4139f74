"""Sources beyond .npz: a directory of .npy files, a CSV for tabular models, and a user callable.

Each streams batch by batch and checks every batch against the model's inputs (sources.check_batch).
"""
from __future__ import annotations

import csv
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.calibration.batches import LABEL_KEYS, LABELS, PICKLE_HINT, Batch, check_batch
from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput


def load_npy(path: Path) -> np.ndarray:
    """Memory-map one .npy file, refusing pickles (np.load never gets allow_pickle=True)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise BadInput(f"{path} holds a pickled (object) array, which mdeploy refuses to load", PICKLE_HINT) from e
        raise BadInput(f"{path} is not a readable .npy file ({e})", "re-save it with numpy.save") from e
    except OSError as e:
        raise BadInput(f"{path} is not a .npy file ({e})", "re-save it with numpy.save; pickles are refused") from e


def _rows(arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A file holds one sample (rank of the input minus one) or several (same rank as the input)."""
    return arr[None] if arr.ndim == len(spec.shape) - 1 else arr


@dataclass
class NpyDirSource:
    """A directory of .npy files, read in sorted name order.

    One-input model: DIR/*.npy. Several inputs: DIR/<input name>/*.npy with matching file names.
    Each file holds one sample or a batch of samples. Optional DIR/labels.npy: one label per sample.
    """

    path: Path
    inputs: tuple[TensorSpec, ...]
    batch_size: int = 32

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        label_file = self.path / "labels.npy"
        self._labels = label_file if label_file.is_file() else None
        if len(self.inputs) == 1 and not (self.path / self.inputs[0].name).is_dir():
            self._files = {self.inputs[0].name: sorted(p for p in self.path.glob("*.npy") if p.name != "labels.npy")}
        else:
            self._files = {}
            for t in self.inputs:
                d = self.path / t.name
                if not d.is_dir():
                    raise BadInput(f"{self.path}: no sub-directory for input '{t.name}'",
                                   f"a multi-input model needs one directory per input: {', '.join(x.name for x in self.inputs)}")
                self._files[t.name] = sorted(d.glob("*.npy"))
            counts = {k: len(v) for k, v in self._files.items()}
            if len(set(counts.values())) > 1:
                raise BadInput(f"{self.path}: inputs have different numbers of files ({counts})", "give every input the same file names")

    has_labels = property(lambda self: self._labels is not None)
    description = property(lambda self: f"{self.path.name}/ (.npy files)")

    def __iter__(self) -> Iterator[Batch]:
        labels = load_npy(self._labels) if self._labels else None
        names = list(self._files)
        pending: dict[str, list[np.ndarray]] = {k: [] for k in names}
        held, done = 0, 0
        for group in zip(*(self._files[k] for k in names)):
            for name, file in zip(names, group):
                spec = next(t for t in self.inputs if t.name == name)
                pending[name].append(np.asarray(_rows(load_npy(file), spec)))
            held += len(pending[names[0]][-1])
            if held >= self.batch_size:
                yield self._emit(pending, labels, done, held, group[0])
                done += held
                held = 0
                pending = {k: [] for k in names}
        if held:
            yield self._emit(pending, labels, done, held, self.path)

    def _emit(self, pending: dict[str, list[np.ndarray]], labels, done: int, n: int, where: Path) -> Batch:
        batch: Batch = {}
        for k, parts in pending.items():
            shapes = {p.shape[1:] for p in parts}
            if len(shapes) > 1:
                spec = next(t for t in self.inputs if t.name == k)
                raise BadInput(f"{where}: input '{k}' expects shape {spec.shape_str()} but the files hold "
                               f"{' and '.join(str(list(s)) for s in sorted(shapes))} per sample",
                               "give every file the model's input shape")
            batch[k] = np.concatenate(parts)
        if labels is not None:
            batch[LABELS] = np.asarray(labels[done:done + n])
        return check_batch(batch, self.inputs, f"{self.description} near {Path(where).name}")


@dataclass
class CsvSource:
    """A CSV for tabular models: one sample per row, numeric columns in the order of the inputs' features.

    A header row is optional. A column named `label`, `labels` or `y` (header needed) becomes the labels.
    With several inputs, columns are split across them by their feature counts, in signature order.
    """

    path: Path
    inputs: tuple[TensorSpec, ...]
    batch_size: int = 32

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise BadInput(f"{self.path}: no such data file", "check the path of --calibration / --validation")
        self._widths = []
        for t in self.inputs:
            if any(d is None for d in t.shape[1:]):
                raise BadInput(f"input '{t.name}' has dynamic feature dimensions {t.shape_str()}: a CSV cannot fill it",
                               "use a .npz or a directory of .npy files for this model")
            self._widths.append(int(np.prod(t.shape[1:], dtype=np.int64)))
        with open(self.path, newline="") as fh:
            first = next(csv.reader(fh), None)
        if first is None:
            raise BadInput(f"{self.path}: no samples (the file is empty)", "give a CSV with at least one row")
        self._header = None if _numeric(first) else [c.strip() for c in first]
        self._label_col = None
        if self._header:
            cols = [i for i, c in enumerate(self._header) if c.lower() in (*LABEL_KEYS, "label")]
            self._label_col = cols[0] if cols else None

    has_labels = property(lambda self: self._label_col is not None)
    description = property(lambda self: self.path.name)

    def __iter__(self) -> Iterator[Batch]:
        want = sum(self._widths) + (1 if self._label_col is not None else 0)
        with open(self.path, newline="") as fh:
            reader = csv.reader(fh)
            if self._header:
                next(reader)
            rows: list[list[float]] = []
            labels: list[float] = []
            for line_no, row in enumerate(reader, start=2 if self._header else 1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != want:
                    raise BadInput(f"{self.path}:{line_no}: {len(row)} columns, expected {want} "
                                   f"(features {'+'.join(str(w) for w in self._widths)}{' + label' if self._label_col is not None else ''})",
                                   "give every row the model's feature count")
                try:
                    values = [float(c) for c in row]
                except ValueError as e:
                    raise BadInput(f"{self.path}:{line_no}: not a number ({e})", "a calibration CSV holds numbers only, besides the header") from e
                if self._label_col is not None:
                    labels.append(values.pop(self._label_col))
                rows.append(values)
                if len(rows) == self.batch_size:
                    yield self._emit(rows, labels, line_no)
                    rows, labels = [], []
            if rows:
                yield self._emit(rows, labels, "end")

    def _emit(self, rows: list[list[float]], labels: list[float], where) -> Batch:
        table = np.asarray(rows, dtype=np.float64)
        batch: Batch = {}
        col = 0
        for t, w in zip(self.inputs, self._widths):
            batch[t.name] = table[:, col:col + w].reshape((len(rows), *t.shape[1:])).astype(np.dtype(t.dtype))
            col += w
        if labels:
            batch[LABELS] = np.asarray(labels).astype(np.int64)
        return check_batch(batch, self.inputs, f"{self.path.name} (rows before line {where})")


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def import_user_module(name: str):
    """Import `name` from sys.path or, like `python -m`, from the working directory, without changing sys.path."""
    top = name.split(".")[0]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != top:
            raise
    spec = importlib.machinery.PathFinder.find_spec(top, [str(Path.cwd())])
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named '{top}' (looked in sys.path and {Path.cwd()})", name=top)
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(top, None)
        raise
    return importlib.import_module(name)


@dataclass
class CallableSource:
    """`package.module:function`: imports the module and calls the function (this RUNS USER CODE).

    The function takes no arguments and returns an iterable (called again for each pass over the data).
    Each item is a dict {input name: array, optionally "labels"} or, for a one-input model, an array;
    an item may be one sample or a batch.
    """

    spec: str
    inputs: tuple[TensorSpec, ...]
    batch_size: int = 32

    def __post_init__(self) -> None:
        module_name, func_name = self.spec.split(":")
        try:
            module = import_user_module(module_name)
        except ImportError as e:
            raise BadInput(f"{self.spec}: cannot import module '{module_name}' ({e})",
                           "check the module is importable from the current directory or PYTHONPATH") from e
        self._func = getattr(module, func_name, None)
        if not callable(self._func):
            raise BadInput(f"{self.spec}: '{module_name}' has no function '{func_name}'", "spell it package.module:function")

    has_labels = False  # unknown until read: batches that carry "labels" still deliver them
    description = property(lambda self: self.spec)

    def __iter__(self) -> Iterator[Batch]:
        try:
            items = iter(self._func())
        except TypeError as e:
            raise BadInput(f"{self.spec} did not return an iterable ({e})", "return a list or a generator of dicts or arrays") from e
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                if len(self.inputs) != 1:
                    raise BadInput(f"{self.spec}: item {i} is a {type(item).__name__}, but a multi-input model needs dicts",
                                   f"yield dicts keyed by {', '.join(t.name for t in self.inputs)}")
                item = {self.inputs[0].name: item}
            batch: Batch = {}
            for k, v in item.items():
                arr = np.asarray(v)
                if k in LABEL_KEYS:
                    batch[LABELS] = np.atleast_1d(arr)
                    continue
                spec = next((t for t in self.inputs if t.name == k), self.inputs[0] if len(self.inputs) == 1 else None)
                batch[k] = arr[None] if spec is not None and arr.ndim == len(spec.shape) - 1 else arr
            yield check_batch(batch, self.inputs, f"{self.spec} item {i}")
