"""Validation: run a reference and candidates on the same samples, each on its own runtime, compare, and gate.

Polygraphy's comparator style: runners, data and metrics stay apart, and the result is truthy when it
passed. Metrics come from passes/compare.py; runtimes only through passes/runtimes.load_runner.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mdeploy.calibration import LABELS
from mdeploy.passes.backends import artifact_runner, run_batched
from mdeploy.passes.checks.compare import accuracy, compare_outputs, is_classifier_output, match_outputs, worst
from mdeploy.passes.core.artifact import Artifact, TensorSpec
from mdeploy.passes.core.errors import BadInput, first_line

# Which metrics a threshold bounds, and in which direction. Agreement is top-1 agreement with the reference.
GATED = {
    "max_accuracy_drop": ("accuracy_drop", "max"),
    "min_agreement": ("top1_agreement", "min"),
    "max_abs_error": ("max_abs_error", "max"),
    "min_sqnr": ("sqnr_db", "min"),
}
SUMMARY_METRICS = ("max_abs_error", "mean_abs_error", "max_rel_error", "cosine_similarity", "sqnr_db",
                   "top1_agreement", "top5_agreement", "nan_count", "inf_count")


@dataclass(frozen=True)
class Thresholds:
    """The gate. None switches a bound off. NaN/Inf in a candidate whose reference is finite always fails."""

    max_accuracy_drop: float | None = 0.01
    min_agreement: float | None = 0.99
    max_abs_error: float | None = None
    min_sqnr: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"{k.replace('_', '-')} {v:g}" for k, v in self.to_dict().items() if v is not None]
        return ", ".join(parts) if parts else "none"


@dataclass(frozen=True)
class Failure:
    """One broken threshold: which candidate, which metric (of which output), its value and the bound."""

    candidate: str
    metric: str
    value: float
    threshold: float
    output: str | None = None

    def __str__(self) -> str:
        where = f" [{self.output}]" if self.output else ""
        op = "<" if self.metric in ("top1_agreement", "sqnr_db") else ">"
        bound = "min" if op == "<" else "max"
        return f"{self.candidate}: {self.metric}{where} = {_num(self.value)} {op} {bound} {_num(self.threshold)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CandidateResult:
    name: str
    format: str
    path: str
    precision: str
    outputs: dict[str, dict[str, float | int]]
    accuracy: float | None = None
    accuracy_drop: float | None = None
    layout: str | None = None  # e.g. "inputs NHWC->NCHW" when feeds were transposed for this candidate
    failures: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, float | int]:
        """Each metric's worst value over the outputs (max for errors and counts, min for similarities)."""

        out = {}
        for m in SUMMARY_METRICS:
            v = worst(self.outputs, m)
            if not (isinstance(v, float) and math.isnan(v) and m.startswith("top")):
                out[m] = v
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "path": self.path, "precision": self.precision,
                "passed": self.passed, "accuracy": self.accuracy, "accuracy_drop": self.accuracy_drop,
                **self.summary(), "layout": self.layout, "outputs": self.outputs,
                "failures": [f.to_dict() for f in self.failures]}


@dataclass
class ValidationResult:
    """Truthy when every candidate passed the gate."""

    reference: str
    data: str
    samples: int
    thresholds: Thresholds
    candidates: list[CandidateResult]
    reference_accuracy: float | None = None
    labels: bool = False

    @property
    def failures(self) -> list[Failure]:
        return [f for c in self.candidates for f in c.failures]

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "data": self.data, "samples": self.samples, "labels": self.labels,
                "reference_accuracy": self.reference_accuracy, "thresholds": self.thresholds.to_dict(),
                "passed": self.passed, "failures": [f.to_dict() for f in self.failures],
                "candidates": [c.to_dict() for c in self.candidates]}


def _num(x: float) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


# --------------------------------------------------------------------------- inputs: names and layout

def _is_nchw_of(cand: tuple, ref: tuple) -> bool:
    """cand is (N, C, H, W) where ref is (N, H, W, C), judged on the static dims both sides know."""
    if len(cand) != 4 or len(ref) != 4:
        return False
    perm = (ref[0], ref[3], ref[1], ref[2])
    return all(a is None or b is None or a == b for a, b in zip(cand, perm)) and tuple(cand) != tuple(ref)


def _fits(shape: tuple, arr_shape: tuple) -> bool:
    return len(shape) == len(arr_shape) and all(d is None or d == a for d, a in zip(shape[1:], arr_shape[1:]))


def input_plan(ref_inputs: tuple[TensorSpec, ...], cand_inputs: tuple[TensorSpec, ...], sample: dict[str, np.ndarray],
               candidate: str) -> tuple[dict[str, tuple[str, tuple[int, ...] | None]], str | None]:
    """How to feed a candidate from the reference's feeds: {candidate input: (reference input, transpose or None)}.

    Inputs map by name, or by position when the names differ but the counts agree. A 4-D input whose
    shape is the NCHW permutation of the reference's NHWC (or the reverse) is transposed.
    """
    ref_names = [t.name for t in ref_inputs]
    if {t.name for t in cand_inputs} <= set(ref_names):
        pairs = [(c, c.name) for c in cand_inputs]
    elif len(cand_inputs) == len(ref_inputs):
        pairs = list(zip(cand_inputs, ref_names))
    else:
        raise BadInput(f"{candidate} has inputs {', '.join(t.name for t in cand_inputs)} but the reference has "
                       f"{', '.join(ref_names)}", "compare models with the same inputs")
    plan: dict[str, tuple[str, tuple[int, ...] | None]] = {}
    notes = []
    for spec, ref_name in pairs:
        arr_shape = tuple(np.shape(sample[ref_name]))
        if _fits(spec.shape, arr_shape):
            plan[spec.name] = (ref_name, None)
        elif _is_nchw_of(spec.shape, arr_shape):
            plan[spec.name] = (ref_name, (0, 3, 1, 2))
            notes.append(f"{spec.name} NHWC->NCHW")
        elif len(arr_shape) == 4 and _is_nchw_of(arr_shape, spec.shape):
            plan[spec.name] = (ref_name, (0, 2, 3, 1))
            notes.append(f"{spec.name} NCHW->NHWC")
        else:
            raise BadInput(f"{candidate}: input '{spec.name}' expects shape {spec.shape_str()} but the data has {list(arr_shape)}",
                           "the data must fit the reference and every candidate (a NHWC/NCHW transpose is applied automatically)")
    return plan, ("inputs " + ", ".join(notes)) if notes else None


def _feed(plan: dict[str, tuple[str, tuple[int, ...] | None]], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: (np.ascontiguousarray(np.transpose(feeds[ref], perm)) if perm else feeds[ref])
            for name, (ref, perm) in plan.items()}


def _restore_layout(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Transpose a candidate's 4-D output back when it is the NCHW (or NHWC) permutation of the reference's."""
    out = dict(cand)
    for r, c in match_outputs(ref, cand) if len(ref) == len(cand) or set(ref) == set(cand) else []:
        rs, cs = ref[r].shape, cand[c].shape
        if rs == cs or len(rs) != 4 or len(cs) != 4:
            continue
        if cs == (rs[0], rs[3], rs[1], rs[2]):
            out[c] = np.transpose(cand[c], (0, 2, 3, 1))
        elif rs == (cs[0], cs[3], cs[1], cs[2]):
            out[c] = np.transpose(cand[c], (0, 3, 1, 2))
    return out


def _run(runner, feeds: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    """One batch through run_batched (which honours a static batch size); runtime refusals become BadInput."""

    try:
        return run_batched(runner, feeds, batch_size=len(next(iter(feeds.values()))))
    except BadInput:
        raise
    except Exception as e:
        raise BadInput(f"{name}: the runtime refused the data ({first_line(e)})",
                       "the data does not match the model's inputs; `mdeploy inspect MODEL` shows them") from e


# --------------------------------------------------------------------------- the gate

def gate(c: CandidateResult, ref_outputs: dict[str, np.ndarray], thresholds: Thresholds) -> list[Failure]:
    failures: list[Failure] = []
    multi = len(c.outputs) > 1
    for out_name, metrics in c.outputs.items():
        where = out_name if multi else None
        ref_finite = bool(np.all(np.isfinite(ref_outputs[out_name])))
        for count in ("nan_count", "inf_count"):
            if ref_finite and metrics.get(count, 0) > 0:
                failures.append(Failure(c.name, count, metrics[count], 0, where))
        for key in ("min_agreement", "max_abs_error", "min_sqnr"):
            bound = getattr(thresholds, key)
            metric, kind = GATED[key]
            if bound is None or metric not in metrics:
                continue
            v = float(metrics[metric])
            if math.isnan(v) or (v > bound if kind == "max" else v < bound):
                failures.append(Failure(c.name, metric, v, bound, where))
    if thresholds.max_accuracy_drop is not None and c.accuracy_drop is not None:
        if c.accuracy_drop > thresholds.max_accuracy_drop:
            failures.append(Failure(c.name, "accuracy_drop", c.accuracy_drop, thresholds.max_accuracy_drop))
    return failures


def _label_output(outputs: dict[str, np.ndarray]) -> str | None:
    """The output labels are scored against: the first classifier-shaped one."""
    return next((k for k, v in outputs.items() if is_classifier_output(v)), None)


# --------------------------------------------------------------------------- validate

def validate(reference: Artifact, candidates: list[Artifact], source, thresholds: Thresholds = Thresholds(),
             limit: int | None = None, threads: int | None = None) -> ValidationResult:
    """Run `reference` and each candidate on every batch of `source` and compare each candidate with the reference.

    `source` is a calibration source (see calibration.open_source) opened against the reference's inputs,
    so data that does not fit the model raises BadInput on the first batch. Labels, when present, give
    accuracy and its drop. Raises BadInput when a candidate's inputs or outputs do not match the reference's.
    """

    if not candidates:
        raise BadInput("no candidate to validate", "pass at least one CANDIDATE model after the REFERENCE")
    ref_runner = artifact_runner(reference, threads)
    runners = [artifact_runner(c, threads) for c in candidates]
    plans: list = [None] * len(candidates)
    ref_parts: list[dict[str, np.ndarray]] = []
    cand_parts: list[list[dict[str, np.ndarray]]] = [[] for _ in candidates]
    labels: list[np.ndarray] = []
    n = 0
    for batch in source:
        batch = dict(batch)
        y = batch.pop(LABELS, None)
        if limit is not None and n >= limit:
            break
        if limit is not None and n + len(next(iter(batch.values()))) > limit:
            keep = limit - n
            batch = {k: v[:keep] for k, v in batch.items()}
            y = None if y is None else y[:keep]
        ref_out = _run(ref_runner, batch, reference.name)
        ref_parts.append(ref_out)
        for i, (cand, runner) in enumerate(zip(candidates, runners)):
            if plans[i] is None:
                plans[i] = input_plan(ref_runner.inputs, runner.inputs, batch, cand.name)
            out = _run(runner, _feed(plans[i][0], batch), cand.name)
            if not cand_parts[i]:
                _check_outputs(ref_out, out, cand.name)
            cand_parts[i].append(_restore_layout(ref_out, out))
        if y is not None:
            labels.append(np.asarray(y))
        n += len(next(iter(batch.values())))
    if n == 0:
        raise BadInput(f"{source.description}: no samples", "give a data file with at least one sample")

    ref_all = {k: np.concatenate([p[k] for p in ref_parts]) for k in ref_parts[0]}
    y_all = np.concatenate(labels) if labels and len(labels) == len(ref_parts) else None
    label_out = _label_output(ref_all) if y_all is not None else None
    ref_acc = accuracy(ref_all[label_out], y_all) if label_out else None

    results = []
    for cand, parts, plan in zip(candidates, cand_parts, plans):
        cand_all = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        per_output = compare_outputs(ref_all, cand_all)
        acc = drop = None
        if label_out is not None:
            cand_name = dict(match_outputs(ref_all, cand_all))[label_out]
            acc = accuracy(cand_all[cand_name], y_all)
            drop = ref_acc - acc
        c = CandidateResult(cand.name, cand.format, str(cand.path), cand.precision, per_output, acc, drop, plan[1])
        c.failures = gate(c, ref_all, thresholds)
        results.append(c)
    return ValidationResult(reference.name, source.description, n, thresholds, results, ref_acc, y_all is not None)


def _check_outputs(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], name: str) -> None:
    """Different output shapes mean different models: say so before computing anything."""
    try:
        pairs = match_outputs(ref, cand)
    except BadInput as e:
        raise BadInput(f"{name}: {e.message}", e.hint) from e
    for r, c in pairs:
        rs, cs = ref[r].shape, cand[c].shape
        if rs != cs and not (len(rs) == 4 and sorted(rs) == sorted(cs)):
            raise BadInput(f"{name}: output '{c}' has shape {list(cs)} but the reference's '{r}' has {list(rs)}",
                           "the models do not compute the same thing; check you passed the right files")
