"""Adapters from a calibration source to what each quantizer wants: ONNX Runtime's CalibrationDataReader and
TFLite's representative_dataset generator. Both stream: neither holds more than one batch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from mdeploy.calibration.batches import LABELS, Batch, CalibrationSource, batch_size_of, count_samples


class OrtCalibrationReader:
    """Feeds batches to onnxruntime.quantization.quantize_static (its CalibrationDataReader protocol: get_next,
    iteration), without importing onnxruntime until a quantizer runs.

    It implements `__len__` and `set_range` so quantize_static can calibrate in strides
    (extra_options CalibStridedMinMax): ORT's calibrators otherwise keep every batch's
    intermediate outputs until the end, which is what makes memory grow with --samples.
    """

    def __init__(self, source: CalibrationSource, batch_count: int | None = None):
        self.source = source
        self.batch_count = batch_count if batch_count is not None else sum(1 for _ in source)
        self._iter: Iterator[Batch] | None = None
        self._pos = 0
        self._end = self.batch_count
        self.samples_read = 0

    def __len__(self) -> int:
        return self.batch_count

    def set_range(self, start_index: int, end_index: int) -> None:
        if self._iter is None or start_index < self._pos:
            self._iter, self._pos = iter(self.source), 0
        while self._pos < start_index:  # skip forward without keeping anything
            next(self._iter)
            self._pos += 1
        self._end = end_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter, self._pos = iter(self.source), 0
        if self._pos >= self._end:
            return None
        batch = next(self._iter, None)
        if batch is None:
            return None
        self._pos += 1
        self.samples_read += batch_size_of(batch)
        return {k: v for k, v in batch.items() if k != LABELS}

    def __iter__(self) -> OrtCalibrationReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch

    def rewind(self) -> None:
        self._iter, self._pos, self._end = None, 0, self.batch_count


def calibration_stride(batch_count: int, most: int = 4) -> int:
    """The largest stride <= `most` that divides the batch count (quantize_static requires it to divide)."""
    return next(s for s in range(min(most, max(batch_count, 1)), 0, -1) if batch_count % s == 0)


def representative_dataset(source: CalibrationSource, input_dtypes: dict[str, str] | None = None) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """A TFLite representative_dataset: yields one sample at a time ({input name: array with batch 1}),
    which is what the converter's calibrator expects for models with a dynamic batch dimension."""

    def generate() -> Iterator[dict[str, np.ndarray]]:
        for batch in source:
            feeds = {k: v for k, v in batch.items() if k != LABELS}
            for i in range(batch_size_of(batch)):
                yield {k: np.asarray(v[i:i + 1], dtype=(input_dtypes or {}).get(k, v.dtype)) for k, v in feeds.items()}

    return generate


__all__ = ["OrtCalibrationReader", "calibration_stride", "count_samples", "representative_dataset"]
