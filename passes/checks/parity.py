"""Parity: does an artifact compute what its source computes? Run both on the same inputs and compare.

Tolerance is absolute for outputs within [-1, 1] and relative to the output's range beyond it:
a check passes when max_abs_error <= tolerance * max(1, max|reference|).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mdeploy.calibration import LABELS, collect, open_source
from mdeploy.passes.backends import artifact_runner, run_batched
from mdeploy.passes.checks.compare import compare_outputs, worst
from mdeploy.passes.core.artifact import Artifact

PARITY_TOLERANCE = 1e-4
PARITY_SAMPLES = 8


def parity_feeds(source: Artifact, data: str | None, seed: int = 0, samples: int = PARITY_SAMPLES) -> tuple[dict[str, np.ndarray], str]:
    """The inputs parity runs on: `data` when given, else generated from the signature with a fixed seed."""

    source_spec = data if data else "random"
    src = open_source(source_spec, source.inputs, samples=samples, seed=seed)
    feeds = collect(src, limit=samples)
    feeds.pop(LABELS, None)
    return feeds, src.description


def parity_check(reference: dict[str, np.ndarray], artifact: Artifact, feeds: dict[str, np.ndarray],
                 tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """Run `artifact` on its runtime and compare it with the reference outputs."""
    outputs = run_batched(artifact_runner(artifact), feeds)
    per_output = compare_outputs(reference, outputs)
    max_abs = worst(per_output, "max_abs_error")
    scale = max(1.0, max(float(np.max(np.abs(v))) for v in reference.values()))
    return {
        "max_abs_error": max_abs,
        "max_rel_error": worst(per_output, "max_rel_error"),
        "tolerance": tolerance,
        "passed": bool(max_abs <= tolerance * scale),
        "samples": int(len(next(iter(feeds.values())))),
        "outputs": per_output,
    }
