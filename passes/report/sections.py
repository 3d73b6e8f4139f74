"""The typed pieces of report.json: an artifact record and its sections (checks, quality, pruning, validation, bench),
the source, the steps and the run-level summaries.

Every section reads the dict it was written as and writes it back unchanged: keys this version does not know
are kept in `extra`, and a field is written as null only when it was read as null or is always written, so a
report from an older or newer mdeploy round-trips without losing anything.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mdeploy.passes.checks.bounds import with_bounds


@dataclass(kw_only=True)
class Section:
    """Base of every report section: `from_dict`/`to_dict` that round-trip, unknown keys kept in `extra`."""

    extra: dict[str, Any] = field(default_factory=dict)
    _given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    # field name -> Section type of its value (a list of them when the field holds a list)
    NESTED: ClassVar[dict[str, type[Section]]] = {}
    # fields written even when None (the schema has always had them)
    ALWAYS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def known(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_") and f.name != "extra"]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None):
        if d is None:
            return None
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}: expected an object, got {type(d).__name__}")
        known = cls.known()
        kw: dict[str, Any] = {}
        for name in known:
            if name not in d:
                continue
            value, typ = d[name], cls.NESTED.get(name)
            if typ is not None and isinstance(value, list):
                value = [typ.from_dict(v) if isinstance(v, dict) else v for v in value]
            elif typ is not None and isinstance(value, dict):
                value = typ.from_dict(value)
            kw[name] = value
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known}, _given=frozenset(k for k in known if k in d))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.known():
            value = getattr(self, name)
            if value is None and name not in self.ALWAYS and name not in self._given:
                continue
            out[name] = _plain(value)
        out.update(self.extra)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access for renderers that read optional fields by name (known or extra)."""
        if key in self.known():
            value = getattr(self, key)
            return default if value is None else value
        return self.extra.get(key, default)


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(kw_only=True)
class Failure(Section):
    """One broken threshold: candidate, metric (of which output), its value and the bound."""

    candidate: str | None = None
    metric: str | None = None
    value: float | str | None = None
    threshold: float | str | None = None
    output: str | None = None
    ALWAYS: ClassVar[frozenset[str]] = frozenset({"output"})


@dataclass(kw_only=True)
class Checks(Section):
    """convert's parity check of an artifact against its source."""

    max_abs_error: float | str | None = None
    max_rel_error: float | str | None = None
    tolerance: float | None = None
    passed: bool | None = None
    samples: int | None = None
    inputs: str | None = None
    outputs: Any = None


@dataclass(kw_only=True)
class Quality(Section):
    """quantize's comparison of a quantized artifact with its float parent, and its gate."""

    size_ratio: float | None = None
    top1_agreement: float | str | None = None
    max_abs_error: float | str | None = None
    mean_abs_error: float | str | None = None
    sqnr_db: float | str | None = None
    accuracy: float | None = None
    parent_accuracy: float | None = None
    accuracy_drop: float | None = None
    samples: int | None = None
    data: str | None = None
    passed: bool | None = None  # None: not gated (--no-gate, or schema 1)
    failures: list[Failure] | None = None
    gates: dict[str, Any] | None = None  # output -> {task, metrics, why}
    NESTED: ClassVar[dict[str, type[Section]]] = {"failures": Failure}


@dataclass(kw_only=True)
class Pruning(Section):
    """prune's target and achieved sparsity, sizes and accuracy before and after (the rest stays in extra)."""

    target_sparsity: float | None = None
    sparsity: float | None = None
    scope: str | None = None
    pattern: str | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    accuracy_data: str | None = None
    warnings: list[str] | None = None


@dataclass(kw_only=True)
class StructuredPruning(Section):
    """prune --structured: FLOPs, parameters, size, latency and accuracy before/after, per layer and in total, and
    every channel group with its fate (pruned, tied across a merge, or frozen and why)."""

    method: str | None = "structured"
    criterion: str | None = None
    ratio: float | None = None
    requested_ratio: float | None = None
    flops_target: float | None = None
    channel_multiple: int | str | None = None  # an integer, or "auto" (each group's own in groups[].multiple)
    flops_before: int | None = None
    flops_after: int | None = None
    flops_ratio: float | None = None
    params_before: int | None = None
    params_after: int | None = None
    size_bytes_before: int | None = None
    size_bytes_after: int | None = None
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    latency_runtime: str | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    accuracy_data: str | None = None
    fine_tune: dict[str, Any] | None = None
    layers: list[dict[str, Any]] | None = None
    groups: list[dict[str, Any]] | None = None
    warnings: list[str] | None = None


@dataclass(kw_only=True)
class Validation(Section):
    """validate's result for one candidate: the worst value of each metric over outputs, per-output metrics, failures."""

    name: str | None = None
    format: str | None = None
    path: str | None = None
    precision: str | None = None
    passed: bool | None = None
    accuracy: float | None = None
    accuracy_drop: float | None = None
    max_abs_error: float | str | None = None
    mean_abs_error: float | str | None = None
    max_rel_error: float | str | None = None
    cosine_similarity: float | str | None = None
    sqnr_db: float | str | None = None
    top1_agreement: float | str | None = None
    top5_agreement: float | str | None = None
    nan_count: int | None = None
    inf_count: int | None = None
    layout: str | None = None
    outputs: dict[str, Any] | None = None
    failures: list[Failure] | None = None
    gates: dict[str, Any] | None = None  # output -> {task, metrics, why} (schema 2)
    reference: str | None = None
    data: str | None = None
    samples: int | None = None
    thresholds: dict[str, Any] | None = None
    NESTED: ClassVar[dict[str, type[Section]]] = {"failures": Failure}


@dataclass(kw_only=True)
class Bench(Section):
    """bench's latency, throughput, load time and memory of one model on its runtime."""

    name: str | None = None
    format: str | None = None
    path: str | None = None
    precision: str | None = None
    runtime: str | None = None
    batch: int | None = None
    threads: int | None = None
    warmup: int | None = None
    runs: int | None = None
    latency_ms: dict[str, Any] | None = None
    throughput_per_s: float | None = None
    load_seconds: float | None = None
    peak_rss_bytes: int | None = None
    baseline_rss_bytes: int | None = None
    runtime_rss_bytes: int | None = None  # after importing the runtime, before loading the model
    machine: dict[str, Any] | None = None


@dataclass(kw_only=True)
class LayerErrors(Section):
    """`--debug-layers`: per layer (ONNX node / TFLite op) the error its quantization adds, worst first.

    Each of `layers`: node, op, output, sqnr_db, rel_rmse, scale_rmse (RMSE in quantization steps of the output),
    weight_sqnr_db, weight_rel_rmse, rank, rank_sqnr_db / via (what ranked it), alone_sqnr_db (ONNX: the worst model
    output's SQNR with only this layer in int8)."""

    format: str | None = None
    data: str | None = None
    samples: int | None = None
    method: str | None = None
    seconds: float | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class AccuracySearch(Section):
    """`--accuracy-budget`: what the search tried (each trial: stage, knobs, layers kept in float, score), what it
    chose, whether the budget was met, and how many full evaluations it spent (knob trials counted apart)."""

    budget: float | None = None
    met: bool | None = None
    note: str | None = None
    chosen: dict[str, Any] | None = None
    layers: int | None = None
    kept_float_fraction: float | None = None
    knob_trials: int | None = None
    full_evaluations: int | None = None
    evaluation_bound: float | None = None
    seconds: float | None = None
    data: str | None = None
    calibration: str | None = None
    recipe: str | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class ArtifactRecord(Section):
    """One artifact in report.json: identity, size, hash, lineage, and what each command measured of it."""

    name: str = "?"
    format: str | None = None
    path: str | None = None  # relative to OUTDIR
    size_bytes: int | None = None
    sha256: str | None = None
    precision: str | None = "float32"
    sparsity: float | None = None
    produced_by: dict[str, Any] | None = None
    parent: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    checks: Checks | None = None
    quality: Quality | None = None
    pruning: Pruning | None = None
    structured: StructuredPruning | None = None
    validation: Validation | None = None
    bench: Bench | None = None
    layer_errors: LayerErrors | None = None
    accuracy_search: AccuracySearch | None = None
    target: str | None = None  # cloud | edge (optimize)
    status: str | None = None  # ok | rejected | failed, written from the verdict
    NESTED: ClassVar[dict[str, type[Section]]] = {"checks": Checks, "quality": Quality, "pruning": Pruning,
                                                  "structured": StructuredPruning, "validation": Validation, "bench": Bench,
                                                  "layer_errors": LayerErrors, "accuracy_search": AccuracySearch}
    ALWAYS: ClassVar[frozenset[str]] = frozenset({"sparsity", "produced_by", "parent"})


@dataclass(kw_only=True)
class SourceRecord(Section):
    path: str | None = None
    format: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class StepRecord(Section):
    """One executed pass: `pass`, params, input, output, seconds, cached, status (ok|skipped|failed), note."""

    pass_name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    input: str | None = None
    output: str | None = None
    seconds: float | None = None
    cached: bool | None = None
    status: str | None = None
    note: str | None = None
    exit_code: int | None = None  # of a failed step: 2 input or environment, 3 the pass itself

    @classmethod
    def from_dict(cls, d):
        if d is None:
            return None
        d = dict(d)
        if "pass" in d:
            d["pass_name"] = d.pop("pass")
        return super().from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        return {"pass": d.pop("pass_name", None), **d}


@dataclass(kw_only=True)
@with_bounds
class Thresholds(Section):
    """The gate's bounds as the run used them (None = off), a field per bound in passes/checks/bounds.py."""


@dataclass(kw_only=True)
class ValidationSummary(Section):
    """The last validate run: reference, data, samples, labels, reference accuracy, thresholds, passed, failures."""

    reference: str | None = None
    data: str | None = None
    samples: int | None = None
    labels: bool | None = None
    reference_accuracy: float | None = None
    thresholds: dict[str, Any] | None = None
    passed: bool | None = None
    failures: list[Failure] | None = None
    candidates: list[str] | None = None
    NESTED: ClassVar[dict[str, type[Section]]] = {"failures": Failure}


@dataclass(kw_only=True)
class SourceMetrics(Section):
    """What was measured of the source model itself."""

    accuracy: float | None = None
    bench: Bench | None = None
    validation: Validation | None = None
    NESTED: ClassVar[dict[str, type[Section]]] = {"bench": Bench, "validation": Validation}


@dataclass(kw_only=True)
class Gate(Section):
    """optimize's gate as schema 1 wrote it: the requested targets and whether each has a passing artifact.
    Its targets, failed_steps and ok are written from the verdict; the keys of `targets` are what was requested."""

    max_accuracy_drop: float | None = None
    targets: dict[str, Any] = field(default_factory=dict)
    failed_steps: dict[str, str] = field(default_factory=dict)
    ok: bool | None = None
    strict: bool | None = None  # with strict, a run where nothing could be gated fails
