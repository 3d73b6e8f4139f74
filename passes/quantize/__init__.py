"""What the ONNX and TFLite quantization passes share: modes, names, the run-once check, and quality vs the float parent.

Calibration data reaches a pass as a `DataSpec` field (plain values: a spec string and a sample window),
never as an open source, so passes stay picklable and their parameters (and cache keys) name the data.
The passes themselves live in quantize_onnx.py and quantize_tflite.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.calibration.batches import LABELS, CalibrationSource, collect
from mdeploy.calibration.sources import DataSpec, open_source
from mdeploy.passes.backends import load_runner
from mdeploy.passes.checks.validate import Thresholds, validate
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput, PassFailed

MODES = ("int8", "dynamic", "fp16")
PRECISION = {"int8": "int8", "dynamic": "dynamic-int8", "fp16": "float16"}
FILE_TAG = {"int8": "int8", "dynamic": "dynamic", "fp16": "fp16"}


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise BadInput(f"unknown quantization mode '{mode}'", f"choose from {', '.join(MODES)}")


def quantized_file_name(mode: str, suffix: str, stem: str = "model") -> str:
    """model.int8.onnx, model.fp16.tflite, ..."""
    return f"{stem}.{FILE_TAG[mode]}{suffix}"


def require_calibration(calibration: DataSpec | None, pass_name: str) -> DataSpec:
    if calibration is None:
        raise BadInput(f"{pass_name}: int8 (static) quantization needs calibration data",
                       "pass --calibration DATA (a .npz, .csv, directory of .npy files or images, module:function) or `random`")
    return calibration


def run_once(path: Path, fmt: str, artifact: Artifact, calibration: DataSpec | None) -> str | None:
    """Load a freshly written artifact on its runtime and run one sample, before it is published.

    A quantizer that emits a model its runtime cannot load or run is a failed pass (exit 3). When the float
    model itself does not run on the same (generated) sample, the sample is to blame, not the quantizer:
    the smoke run is skipped and the returned note says why (None when the run went fine).
    """
    try:
        runner = load_runner(fmt, path)
    except BadInput as e:
        raise PassFailed(f"the quantized model does not load on its runtime: {e.message}",
                         "try another --mode or --format, or --exclude the op named above") from e
    source = calibration.open(artifact.inputs) if calibration is not None else open_source("random", artifact.inputs, samples=1)
    feeds = collect(source, limit=1)
    feeds.pop(LABELS, None)
    try:
        outputs = runner(feeds)
    except Exception as e:
        cause = f"{type(e).__name__}: {str(e).strip()[:300]}"
        if calibration is None and not _float_runs(artifact, feeds):
            shapes = ", ".join(f"{k} {list(np.shape(v))}" for k, v in feeds.items())
            return (f"not smoke-tested: the float model does not run on generated inputs ({shapes}) either; "
                    "pass --input-shape NAME:D1,D2,... with a size it takes")
        raise PassFailed(f"the quantized model loads but fails to run on its runtime: {cause}",
                         "try another --mode or --format, or --exclude the op named above") from e
    bad = [k for k, v in outputs.items() if np.asarray(v).dtype.kind == "f" and not np.all(np.isfinite(v))]
    if bad:
        raise PassFailed(f"the quantized model produces NaN/Inf in output(s) {', '.join(bad)}",
                         "check the calibration data covers the real input range, or keep those ops in float with --exclude")
    return None


def _float_runs(artifact: Artifact, feeds) -> bool:
    try:
        load_runner(artifact.format, artifact.path, trusted=artifact.trusted)(feeds)
    except Exception:  # noqa: BLE001 - any refusal means the inputs, not the quantizer, are at fault
        return False
    return True


def quantization_quality(parent: Artifact, quantized: Artifact, heldout: CalibrationSource,
                         thresholds: Thresholds | None = None, reference_outputs=None) -> dict[str, Any]:
    """Compare a quantized artifact with its float parent on held-out data: `validate`, gated by `thresholds`
    (task defaults for unset bounds; None measures without a gate).

    Returns size_ratio, top1_agreement (classifier-shaped outputs), max/mean abs error, sqnr_db (the worst output),
    accuracy / parent_accuracy / accuracy_drop (fractions) when the data carries labels, and passed/failures/gates.
    `reference_outputs` (checks.validate.ReferenceOutputs) keeps the parent's outputs between calls on the same data.
    """

    result = validate(parent, [quantized], heldout, thresholds, reference_outputs=reference_outputs)
    c = result.candidates[0]
    worst_of = c.summary()
    return {
        "size_ratio": quantized.size_bytes() / max(parent.size_bytes(), 1),
        "top1_agreement": worst_of.get("top1_agreement"),
        "max_abs_error": worst_of["max_abs_error"],
        "mean_abs_error": worst_of["mean_abs_error"],
        "sqnr_db": worst_of["sqnr_db"],
        "accuracy": c.accuracy, "parent_accuracy": result.reference_accuracy, "accuracy_drop": c.accuracy_drop,
        "samples": result.samples,
        "data": heldout.description,
        "parent": parent.name,
        "outputs": c.outputs,
        "passed": c.passed if c.gates else None,
        "failures": [f.to_dict() for f in c.failures],
        "gates": {k: g.to_dict() for k, g in c.gates.items()} if c.gates else None,
    }


__all__ = ["MODES", "PRECISION", "DataSpec", "check_mode", "quantization_quality", "quantized_file_name", "run_once"]
