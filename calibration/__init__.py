"""Calibration and validation data: re-iterable sources of {input name: array} batches, checked against a model's inputs."""
from mdeploy.calibration.sources import (
    LABELS,
    CalibrationSource,
    NpzSource,
    RandomSource,
    check_batch,
    collect,
    open_source,
)

__all__ = ["LABELS", "CalibrationSource", "NpzSource", "RandomSource", "check_batch", "collect", "open_source"]
