"""Data sources. A source is re-iterable and yields batches, dict[input name, ndarray], never the whole set at once.

Labels, when the data has them, travel under the reserved key `LABELS` in each batch.
Every batch is checked against the model's input signature before a runtime sees it.
`open_source(spec, inputs, ...)` is the one entry point; `DataSpec` is its picklable, hashable
spelling that passes carry into spawned processes.
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mdeploy.calibration import files, images
from mdeploy.calibration.batches import (
    CALLABLE_SPEC,
    LABEL_KEYS,
    LABELS,
    PICKLE_HINT,
    Batch,
    CalibrationSource,
    batch_size_of,
    check_batch,
)
from mdeploy.calibration.shapes import generated_shape, model_batch_limit
from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput

if TYPE_CHECKING:
    from mdeploy.calibration.images import ImageOptions

@dataclass
class SampleWindow:
    """Samples [skip, skip + take) of another source, still streamed: how calibration and held-out data are split."""

    source: CalibrationSource
    skip: int = 0
    take: int | None = None

    @property
    def has_labels(self) -> bool:
        return self.source.has_labels

    @property
    def description(self) -> str:
        if self.skip == 0 and self.take is None:
            return self.source.description
        end = "" if self.take is None else str(self.skip + self.take)
        return f"{self.source.description}[{self.skip}:{end}]"

    def __len__(self) -> int:
        total = len(self.source)  # type: ignore[arg-type]
        rest = max(0, total - self.skip)
        return rest if self.take is None else min(rest, self.take)

    def __iter__(self) -> Iterator[Batch]:
        pos = 0
        end = None if self.take is None else self.skip + self.take
        for batch in self.source:
            size = batch_size_of(batch)
            lo, hi = max(self.skip - pos, 0), size if end is None else min(size, end - pos)
            pos += size
            if hi > lo:
                yield batch if (lo, hi) == (0, size) else {k: v[lo:hi] for k, v in batch.items()}
            if end is not None and pos >= end:
                return


@dataclass
class RandomSource:
    """Inputs generated from the signature with a fixed seed: uniform [0, 1) floats, small ints.

    Shapes follow calibration/shapes.py (fixed dims kept, batch only where dynamic, scalars stay scalars);
    a model with a fixed batch (or no common batch axis, like a recurrent state) gets batches of that size.
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

    def __len__(self) -> int:
        return self.samples

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng(self.seed)
        limit = model_batch_limit(self.inputs)
        step = max(1, min(self.batch_size, limit) if limit else self.batch_size)
        for start in range(0, self.samples, step):
            n = min(step, self.samples - start)
            batch: Batch = {}
            sizes: dict[str, int] = {}
            for t in self.inputs:
                shape = generated_shape(t, n, sizes)
                dt = np.dtype(t.dtype)
                if dt.kind == "f":
                    batch[t.name] = rng.random(shape, dtype=np.float32).astype(dt)
                elif dt.kind in "iu":
                    batch[t.name] = rng.integers(0, 10, shape).astype(dt)
                else:
                    batch[t.name] = rng.integers(0, 2, shape).astype(dt)
            yield batch


class _NpyMember:
    """One array inside a .npz, read row-range by row-range from the zip stream (np.load would read it whole)."""

    def __init__(self, zf: zipfile.ZipFile, member: str, origin: str):
        self.member = member
        with zf.open(member) as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
            except ValueError as e:
                raise BadInput(f"{origin}: member {member} is not a .npy array ({e})", "re-save the data with numpy.savez") from e
            self.offset = fh.tell()
        if dtype.hasobject:
            raise BadInput(f"{origin}: '{member[:-4]}' is a pickled (object) array, which mdeploy refuses to load", PICKLE_HINT)
        if not shape:
            raise BadInput(f"{origin}: '{member[:-4]}' is a scalar, not an array of samples", "store one row per sample")
        self.shape, self.fortran, self.dtype = tuple(shape), fortran, dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def rows(self, zf: zipfile.ZipFile, start: int, stop: int, step: int) -> Iterator[np.ndarray]:
        if self.fortran:  # column-major cannot be sliced by rows from a stream: rare enough to read whole
            with zf.open(self.member) as fh:
                whole = np.lib.format.read_array(fh, allow_pickle=False)
            for s in range(start, stop, step):
                yield whole[s:min(stop, s + step)]
            return
        with zf.open(self.member) as fh:
            fh.seek(self.offset + start * self.row_bytes)
            for s in range(start, stop, step):
                n = min(stop, s + step) - s
                buf = fh.read(n * self.row_bytes)
                yield np.frombuffer(buf, dtype=self.dtype).reshape((n, *self.shape[1:])).copy()


@dataclass
class NpzSource:
    """A .npz file: arrays keyed by input name (or one array for a one-input model), optional `labels`/`y`.

    Each member is streamed from the archive a batch at a time; nothing is ever unpickled.
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
            raise BadInput(f"{self.path} is not a .npz archive (it may be a pickle)",
                           "save the data with numpy.savez(path, **{input_name: array})")
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = [n for n in zf.namelist() if n.endswith(".npy")]
                self._members = {n[:-4]: _NpyMember(zf, n, str(self.path)) for n in names}
        except (zipfile.BadZipFile, OSError) as e:
            raise BadInput(f"{self.path} is not a readable .npz file ({e})", "re-save it with numpy.savez") from e
        self._keys = list(self._members)
        label_keys = [k for k in self._keys if k in LABEL_KEYS]
        self._label_key = label_keys[0] if label_keys else None
        data_keys = [k for k in self._keys if k not in LABEL_KEYS]
        if not data_keys:
            raise BadInput(f"{self.path} holds no input arrays", "save at least one array keyed by the input name")
        counts = {self._members[k].shape[0] for k in data_keys + ([self._label_key] if self._label_key else [])}
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

    def __iter__(self) -> Iterator[Batch]:
        stop = self.total if self.stop is None else min(self.stop, self.total)
        keys = [k for k in self._keys if k not in LABEL_KEYS] + ([self._label_key] if self._label_key else [])
        with zipfile.ZipFile(self.path) as zf:
            streams = [self._members[k].rows(zf, self.start, stop, self.batch_size) for k in keys]
            for arrays in zip(*streams):
                batch = dict(zip(keys, arrays))
                if self._label_key:
                    batch[LABELS] = batch.pop(self._label_key)
                yield check_batch(batch, self.inputs, self.description)


@dataclass(frozen=True)
class DataSpec:
    """A data source as plain, picklable values: what a pass carries to find its calibration data.

    `skip`/`take` select a window of samples, which is how calibration data and its held-out slice are split.
    """

    spec: str
    skip: int = 0
    take: int | None = None
    batch_size: int = 32
    seed: int = 0
    image: ImageOptions | None = None

    def open(self, inputs: tuple[TensorSpec, ...]) -> CalibrationSource:
        samples = None if self.take is None else self.skip + self.take
        source = open_source(self.spec, inputs, batch_size=self.batch_size, samples=samples, seed=self.seed, image=self.image)
        if self.skip == 0 and self.take is None:
            return source
        return SampleWindow(source, self.skip, self.take)


def open_source(spec: str, inputs: tuple[TensorSpec, ...], *, batch_size: int = 32, samples: int | None = None,
                seed: int = 0, image: ImageOptions | None = None) -> CalibrationSource:
    """Open a data source from its command-line spelling.

    `random` (only by name); a .npz; a directory of .npy files; a directory of PNG/JPEG images (preprocessed
    per `image`); a .csv; or `package.module:function`, which imports and runs user code.
    """

    spec = str(spec)
    if spec == "random":
        return RandomSource(inputs, samples=samples or 100, batch_size=batch_size, seed=seed)
    path = Path(spec)
    if path.is_dir():
        if any(p.suffix.lower() in images.IMAGE_SUFFIXES for p in path.rglob("*") if p.is_file()):
            return images.ImageDirSource(path, inputs, options=image, batch_size=batch_size)
        return files.NpyDirSource(path, inputs, batch_size=batch_size)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return files.CsvSource(path, inputs, batch_size=batch_size)
    if suffix == ".npy":
        raise BadInput(f"{spec}: a single .npy file is not a data source",
                       "put the .npy files in a directory, or save the arrays with numpy.savez into a .npz")
    if suffix == ".npz" or path.is_file():
        return NpzSource(path, inputs, batch_size=batch_size)
    if CALLABLE_SPEC.match(spec):
        return files.CallableSource(spec, inputs, batch_size=batch_size)
    if not path.exists() and (suffix or "/" in spec):
        raise BadInput(f"{spec}: no such data file or directory", "check the path of --data / --calibration / --validation")
    raise BadInput(f"{spec}: unrecognised data source",
                   "pass a .npz, a .csv, a directory of .npy files or images, `package.module:function`, or the word `random`")
