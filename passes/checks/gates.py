"""Task-aware gates: which bounds a candidate's outputs are held to, decided per output from its shape and the labels.

- classification with labels (a (batch, classes) output, integer or one-hot labels): the accuracy drop;
- regression with labels (float labels the size of the output): the relative increase of MSE and MAE over the
  reference's, against the labels;
- no labels: top-1 agreement with the reference and SQNR for a classifier, SQNR and the range-relative max abs
  error for anything else.
A bound given explicitly applies to every output that has the metric; the task's default fills the rest.
Labels are checked like inputs: a label that cannot be right is BadInput naming the data and the first bad value.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mdeploy.passes.checks.bounds import BOUNDS, bounds_of, with_bounds
from mdeploy.passes.checks.compare import is_classifier_output
from mdeploy.passes.core.errors import BadInput

# Which metric each bound limits, and in which direction.
GATED = {b.name: (b.metric, b.direction) for b in BOUNDS}
CLASSIFICATION, REGRESSION = "classification", "regression"
CLASSIFIER_UNLABELLED, UNLABELLED = "classifier without labels", "output without labels"
# The bounds each task gets unless the user set them. Measured on the digits CNN and a diabetes MLP (tests/checks):
# good int8 keeps accuracy within 1 point, agreement above 99%, SQNR above 20 dB and MSE within 5%.
TASK_DEFAULTS: dict[str, dict[str, float]] = {
    CLASSIFICATION: {"max_accuracy_drop": 0.01},
    REGRESSION: {"max_rel_error": 0.05},
    CLASSIFIER_UNLABELLED: {"min_agreement": 0.99, "min_sqnr": 10.0},
    UNLABELLED: {"min_sqnr": 20.0},
}
# What a bound limits for each task: a regression's relative error is its MSE/MAE increase over the reference.
TASK_METRICS = {REGRESSION: {"max_rel_error": ("mse_increase", "mae_increase")}}


@dataclass(frozen=True)
@with_bounds
class Thresholds:
    """Bounds set by the user (a field per bound in passes/checks/bounds.py); None takes the task's default.
    `enabled=False` measures without gating."""

    enabled: bool = True

    def to_dict(self) -> dict[str, float | None]:
        return bounds_of(self)

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        parts = [f"{k.replace('_', '-')} {v:g}" for k, v in self.to_dict().items() if v is not None]
        return ", ".join(parts) + " (task defaults for the rest)" if parts else "task defaults"


@dataclass(frozen=True)
class Failure:
    """One broken bound: which candidate, which metric (of which output), its value and the bound."""

    candidate: str
    metric: str
    value: float
    threshold: float
    output: str | None = None

    def __str__(self) -> str:
        where = f" [{self.output}]" if self.output else ""
        low = self.metric in ("top1_agreement", "sqnr_db")
        return f"{self.candidate}: {self.metric}{where} = {self.value:.6g} {'<' if low else '>'} {'min' if low else 'max'} {self.threshold:.6g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OutputGate:
    task: str
    bounds: dict[str, float]  # metric -> bound (direction from GATED)
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "metrics": self.bounds, "why": self.why}


def check_labels(labels: np.ndarray, output: np.ndarray, n: int, data: str) -> tuple[str, np.ndarray]:
    """(task, labels as the metric wants them): class indices for classification, floats for regression.

    BadInput, naming `data` and the first bad value, for strings, NaN, the wrong length, a class out of range,
    non-integer classes, or a shape that fits the output in neither way.
    """
    y = np.asarray(labels)
    hint = ("labels must be integer class indices 0..C-1 (or one-hot rows) for a classifier, "
            "or float targets shaped like the output for a regressor")
    if y.dtype.kind in "USO":
        raise BadInput(f"{data}: labels are {'strings' if y.dtype.kind != 'O' else 'objects'} "
                       f"(first: {y.reshape(-1)[0].item()!r})", hint)
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if len(y) != n:
        raise BadInput(f"{data}: {len(y)} labels for {n} samples", "give one label per sample")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise BadInput(f"{data}: labels contain NaN/Inf (first at index {int(np.argmin(np.isfinite(y).reshape(len(y), -1).all(1)))})", hint)
    if is_classifier_output(output):
        classes = output.shape[1]
        if y.ndim == 2 and y.shape[1] == classes and np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1):
            return CLASSIFICATION, np.argmax(y, axis=1)  # one-hot
        flat = y.reshape(len(y), -1)
        if flat.shape[1] != 1:
            raise BadInput(f"{data}: labels have shape {list(y.shape)} but the output has {classes} classes", hint)
        flat = flat[:, 0]
        if y.dtype.kind == "f" and not np.all(flat == np.round(flat)):
            bad = flat[flat != np.round(flat)][0].item()
            raise BadInput(f"{data}: label {bad!r} is not a class index (the output has {classes} classes)", hint)
        bad = (flat < 0) | (flat >= classes)
        if np.any(bad):
            raise BadInput(f"{data}: label {flat[bad][0].item()!r} (sample {int(np.argmax(bad))}) is outside 0..{classes - 1}, "
                           f"the output's {classes} classes", hint)
        return CLASSIFICATION, flat.astype(np.int64)
    if output.dtype.kind != "f":
        raise BadInput(f"{data}: labels given but the output is {output.dtype} with shape {list(output.shape)}", hint)
    per_sample = int(np.prod(output.shape[1:])) if output.ndim > 1 else 1
    if int(np.prod(y.shape[1:])) != per_sample:
        raise BadInput(f"{data}: labels have shape {list(y.shape)} but the output has {list(output.shape)}", hint)
    return REGRESSION, y.astype(np.float64).reshape(len(y), -1)


def label_output(outputs: dict[str, np.ndarray], labels: np.ndarray | None) -> str | None:
    """The output labels are scored against: the first classifier-shaped one, else the first whose size they fit."""
    if labels is None:
        return None
    for name, v in outputs.items():
        if is_classifier_output(v):
            return name
    per_sample = int(np.prod(np.shape(labels)[1:]))
    return next((k for k, v in outputs.items() if int(np.prod(v.shape[1:])) == per_sample), next(iter(outputs)))


def regression_metrics(ref: np.ndarray, cand: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MSE and MAE of both models against the labels, and the candidate's relative increase of each."""
    r = ref.astype(np.float64).reshape(len(y), -1)
    c = cand.astype(np.float64).reshape(len(y), -1)
    out = {}
    for name, err in (("mse", lambda a: float(np.mean((a - y) ** 2))), ("mae", lambda a: float(np.mean(np.abs(a - y))))):
        er, ec = err(r), err(c)
        out[f"reference_{name}"], out[name] = er, ec
        out[f"{name}_increase"] = (ec - er) / er if er > 0 else (0.0 if ec == 0 else math.inf)
    return out


def output_gate(task: str, metrics: dict[str, Any], thresholds: Thresholds) -> OutputGate:
    """The bounds one output is held to: the user's wherever its metric exists, the task's defaults for the rest."""
    defaults = TASK_DEFAULTS[task]
    bounds: dict[str, float] = {}
    chosen = []
    for key in GATED:
        user, default = getattr(thresholds, key), defaults.get(key)
        bound = user if user is not None else default
        if bound is None:
            continue
        for metric in TASK_METRICS.get(task, {}).get(key, (GATED[key][0],)):
            if metric in metrics:
                bounds[metric] = bound
                chosen.append(f"{metric} {'>=' if GATED[key][1] == 'min' else '<='} {bound:g}"
                              + ("" if user is not None else " (default)"))
    why = {CLASSIFICATION: "classification with labels", REGRESSION: "regression with labels",
           CLASSIFIER_UNLABELLED: "classifier without labels", UNLABELLED: "no labels, not a classifier"}[task]
    return OutputGate(task, bounds, f"{why}: " + (", ".join(chosen) if chosen else "no bound applies"))


def apply(candidate: str, gates: dict[str, OutputGate], outputs: dict[str, dict[str, Any]], ref_finite: dict[str, bool]) -> list[Failure]:
    """Every bound an output breaks (NaN/Inf where the reference is finite always breaks)."""
    failures: list[Failure] = []
    multi = len(outputs) > 1
    for out, metrics in outputs.items():
        where = out if multi else None
        if ref_finite[out]:
            for count in ("nan_count", "inf_count"):
                if metrics.get(count, 0) > 0:
                    failures.append(Failure(candidate, count, metrics[count], 0, where))
        for metric, bound in gates[out].bounds.items():
            v = float(metrics[metric])
            low = metric in ("top1_agreement", "sqnr_db")
            if math.isnan(v) or (v < bound if low else v > bound):
                failures.append(Failure(candidate, metric, v, bound, where))
    return failures
