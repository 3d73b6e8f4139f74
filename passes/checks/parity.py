"""Parity: does an artifact compute what its source computes? Run both on the same inputs and compare.

Tolerance is absolute for outputs within [-1, 1] and relative to the output's range beyond it:
a check passes when max_abs_error <= tolerance * max(1, max|reference|).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mdeploy.calibration import LABELS, collect, open_source
from mdeploy.calibration.shapes import DEFAULT_SEQUENCE, SEQUENCE_PROBES, dim_kind, generated_shape
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
        "samples": len(next(iter(feeds.values()))),
        "outputs": per_output,
    }


def runnable_inputs(artifact: Artifact) -> tuple[Artifact, str | None]:
    """The artifact with its dynamic sequence dimensions pinned to the first length in SEQUENCE_PROBES its float
    model runs on, when it refuses the default (an STFT front end needs more than 16 samples), and a note saying
    so; unchanged (and None) when the default runs, nothing is dynamic, or no probed length runs either."""
    kinds = {t.name: [i for i, d in enumerate(t.shape) if d is None and dim_kind(t, i) == "sequence"] for t in artifact.inputs}
    if not any(kinds.values()):
        return artifact, None
    runner = artifact_runner(artifact)
    for length in SEQUENCE_PROBES:
        sizes: dict[str, int] = {}
        feeds = {t.name: np.zeros(generated_shape(t, 1, sizes, sequence=length), dtype=np.dtype(t.dtype))
                 for t in artifact.inputs}
        try:
            runner(feeds)
        except Exception:  # noqa: BLE001, S112 - any refusal: try the next length
            continue
        if length == DEFAULT_SEQUENCE:
            return artifact, None
        pinned = tuple(dataclasses.replace(t, shape=tuple(length if i in kinds[t.name] else d for i, d in enumerate(t.shape)))
                       for t in artifact.inputs)
        note = (f"generated inputs use sequence length {length}: the model does not run on the default "
                f"{DEFAULT_SEQUENCE} (--input-shape sets it)")
        return dataclasses.replace(artifact, inputs=pinned), note
    return artifact, None
