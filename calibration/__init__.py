"""Calibration and validation data: re-iterable sources of {input name: array} batches, checked against a model's inputs."""
from mdeploy.calibration.batches import LABELS, CalibrationSource, check_batch, collect, count_samples
from mdeploy.calibration.sources import DataSpec, NpzSource, RandomSource, SampleWindow, open_source

__all__ = ["LABELS", "CalibrationSource", "DataSpec", "NpzSource", "RandomSource", "SampleWindow", "check_batch", "collect",
           "count_samples", "open_source"]
