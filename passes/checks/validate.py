"""Validation: run a reference and candidates on the same samples, each on its own runtime, compare, and gate.

Polygraphy's comparator style: runners, data and metrics stay apart, and the result is truthy when it
passed. Metrics come from passes/compare.py; runtimes only through passes/runtimes.load_runner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mdeploy.calibration import LABELS
from mdeploy.passes.backends import artifact_runner, run_batched
from mdeploy.passes.checks.compare import accuracy, compare_outputs, is_classifier_output, match_outputs, worst
from mdeploy.passes.checks.gates import (
    CLASSIFICATION,
    CLASSIFIER_UNLABELLED,
    UNLABELLED,
    Failure,
    OutputGate,
    Thresholds,
    apply,
    check_labels,
    label_output,
    output_gate,
    regression_metrics,
)
from mdeploy.passes.core.artifact import Artifact, TensorSpec
from mdeploy.passes.core.errors import BadInput, first_line

SUMMARY_METRICS = ("max_abs_error", "mean_abs_error", "max_rel_error", "cosine_similarity", "sqnr_db",
                   "top1_agreement", "top5_agreement", "nan_count", "inf_count")


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
    gates: dict[str, OutputGate] = field(default_factory=dict)  # output -> the gate it was held to (empty: not gated)

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
                "failures": [f.to_dict() for f in self.failures],
                "gates": {k: g.to_dict() for k, g in self.gates.items()} if self.gates else None}


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


# --------------------------------------------------------------------------- validate

class ReferenceOutputs:
    """The reference's outputs, batch by batch, kept across validate() calls that compare several candidates with
    one reference on the same data one after another (the accuracy search's trials): the reference runs once.
    Holds what one validate() holds anyway (every batch's reference outputs)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, np.ndarray]] = []
        self.inputs: tuple = ()  # the reference runner's input specs
        self.complete = False

    def get(self, i: int, compute) -> dict[str, np.ndarray]:
        if self.complete:
            return self.batches[i]
        out = compute()
        self.batches.append(out)
        return out


def validate(reference: Artifact, candidates: list[Artifact], source, thresholds: Thresholds | None = Thresholds(),
             limit: int | None = None, threads: int | None = None,
             reference_outputs: ReferenceOutputs | None = None) -> ValidationResult:
    """Run `reference` and each candidate on every batch of `source` and compare each candidate with the reference.

    `source` is a calibration source (see calibration.open_source) opened against the reference's inputs,
    so data that does not fit the model raises BadInput on the first batch. Labels, when present, are checked
    (gates.check_labels) and give accuracy and its drop, or the MSE/MAE increase of a regressor. Each output is
    gated by its task (passes/checks/gates.py); `thresholds=None` measures without gating. Raises BadInput when a
    candidate's inputs or outputs do not match the reference's. `reference_outputs` (the same source and `limit`
    every call) runs the reference on the first call only.
    """

    if not candidates:
        raise BadInput("no candidate to validate", "pass at least one CANDIDATE model after the REFERENCE")
    memo = reference_outputs if reference_outputs is not None else ReferenceOutputs()
    ref_runner = None if memo.complete else artifact_runner(reference, threads)
    if ref_runner is not None:
        memo.inputs = ref_runner.inputs
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
        ref_out = memo.get(len(ref_parts), lambda: _run(ref_runner, batch, reference.name))
        ref_parts.append(ref_out)
        for i, (cand, runner) in enumerate(zip(candidates, runners)):
            if plans[i] is None:
                plans[i] = input_plan(memo.inputs, runner.inputs, batch, cand.name)
            out = _run(runner, _feed(plans[i][0], batch), cand.name)
            if not cand_parts[i]:
                _check_outputs(ref_out, out, cand.name)
            cand_parts[i].append(_restore_layout(ref_out, out))
        if y is not None:
            labels.append(np.asarray(y))
        n += len(next(iter(batch.values())))
    if n == 0:
        raise BadInput(f"{source.description}: no samples", "give a data file with at least one sample")
    memo.complete = True

    ref_all = {k: np.concatenate([p[k] for p in ref_parts]) for k in ref_parts[0]}
    if labels and len(labels) != len(ref_parts):
        raise BadInput(f"{source.description}: some batches have labels and some do not", "label every sample or none")
    y_raw = np.concatenate(labels) if labels else None
    label_out = label_output(ref_all, y_raw)
    task, y_all = check_labels(y_raw, ref_all[label_out], n, source.description) if label_out else (None, None)
    ref_acc = accuracy(ref_all[label_out], y_all) if task == CLASSIFICATION else None
    ref_finite = {k: bool(np.all(np.isfinite(v))) for k, v in ref_all.items()}

    results = []
    for cand, parts, plan in zip(candidates, cand_parts, plans):
        cand_all = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        per_output = compare_outputs(ref_all, cand_all)
        acc = drop = None
        if label_out is not None:
            cand_name = dict(match_outputs(ref_all, cand_all))[label_out]
            if task == CLASSIFICATION:
                acc = accuracy(cand_all[cand_name], y_all)
                drop = ref_acc - acc
                per_output[label_out].update(accuracy=acc, accuracy_drop=drop)
            else:
                per_output[label_out].update(regression_metrics(ref_all[label_out], cand_all[cand_name], y_all))
        c = CandidateResult(cand.name, cand.format, str(cand.path), cand.precision, per_output, acc, drop, plan[1])
        if thresholds is not None and thresholds.enabled:
            c.gates = {out: output_gate(_task(out, label_out, task, ref_all[out]), m, thresholds)
                       for out, m in per_output.items()}
            c.failures = apply(c.name, c.gates, per_output, ref_finite)
        results.append(c)
    return ValidationResult(reference.name, source.description, n, thresholds or Thresholds(enabled=False), results,
                            ref_acc, y_all is not None)


def _task(out: str, label_out: str | None, task: str | None, ref: np.ndarray) -> str:
    if out == label_out and task is not None:
        return task
    return CLASSIFIER_UNLABELLED if is_classifier_output(ref) else UNLABELLED


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
