"""report.json as a typed model: the run (Report) holding artifact records and sections, read and written so
that nothing is lost, with the verdict computed from it once. The library never prints.

Schema 2 adds `verdict` (and per-section `gates`); readers accept schema 1 (see tests/report/fixtures).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import move_aside, write_text_atomic
from mdeploy.passes.core.pipeline import MDEPLOY_VERSION, Step
from mdeploy.passes.report.sections import (
    ArtifactRecord,
    Checks,
    Gate,
    SourceMetrics,
    SourceRecord,
    StepRecord,
    Thresholds,
    ValidationSummary,
)
from mdeploy.passes.report.verdict import Verdict, compute_verdict

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
REPORT_NAME = "report.json"
# Written from the verdict, never read back as facts.
DERIVED = ("ok", "verdict")


def artifact_record(a: Artifact, out_dir: Path) -> ArtifactRecord:
    """The report's view of an artifact: identity, size, hash, lineage. Its meta is copied, never shared."""
    d = a.to_dict(relative_to=out_dir)
    meta = json.loads(json.dumps(d.pop("meta"), default=str))
    return ArtifactRecord(name=a.name, format=a.format, path=d["path"], size_bytes=a.size_bytes(), sha256=a.sha256(),
                          precision=meta.pop("precision", "float32"), sparsity=meta.pop("sparsity", None),
                          produced_by=meta.pop("produced_by", None), parent=d["parent"], inputs=d["inputs"],
                          outputs=d["outputs"], meta=meta, checks=Checks())


def _clean(o: Any) -> Any:
    """JSON has no inf/nan: write them as strings so report.json stays strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return "inf" if o > 0 else ("-inf" if o < 0 else "nan")
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


@dataclass
class Report:
    """One OUTDIR's run: the source, its artifacts, the steps, and the run-level sections."""

    source: SourceRecord
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    recipe: dict[str, Any] | None = None
    validation_thresholds: Thresholds | None = None
    validation: ValidationSummary | None = None
    source_metrics: SourceMetrics | None = None
    bench_machine: dict[str, Any] | None = None
    unlisted: dict[str, Any] | None = None  # {"validation"|"bench": {path: result}} for models not in the report
    gate: Gate | None = None  # set by optimize: which targets must have a passing artifact
    seconds: float | None = None
    mdeploy_version: str = field(default=MDEPLOY_VERSION, compare=False)  # as read: of the mdeploy that wrote it
    schema_version: int = field(default=SCHEMA_VERSION, compare=False)  # as read
    extra: dict[str, Any] = field(default_factory=dict)  # top-level keys this version does not know

    @classmethod
    def for_source(cls, source: Artifact) -> Report:
        return cls(source=SourceRecord(
            path=str(source.path), format=source.format, sha256=source.sha256(), size_bytes=source.size_bytes(),
            inputs=[t.to_dict() for t in source.inputs], outputs=[t.to_dict() for t in source.outputs]))

    # ------------------------------------------------------------------ the verdict
    @property
    def verdict(self) -> Verdict:
        gate = self.gate
        return compute_verdict(self.artifacts, dict(gate.failed_steps) if gate else self.unresolved_failures(),
                               list(gate.targets) if gate else None, bool(gate and gate.strict))

    def unresolved_failures(self) -> dict[str, str]:
        """Passes (outside optimize's gate) whose latest run failed: a later successful run of the same pass
        resolves an earlier failure, so a convert that failed once and then succeeded reads as passed."""
        latest: dict[str, StepRecord] = {}
        for step in self.steps:
            if step.pass_name:
                latest[step.pass_name] = step
        return {name: step.note or "failed" for name, step in latest.items() if step.status == "failed"}

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    # ------------------------------------------------------------------ records
    def artifact(self, name: str) -> ArtifactRecord | None:
        return next((a for a in self.artifacts if a.name == name), None)

    def add_artifact(self, record: ArtifactRecord) -> None:
        """Add or replace (by name) an artifact record."""
        self.artifacts = [a for a in self.artifacts if a.name != record.name] + [record]

    def add_steps(self, steps: list[Step]) -> None:
        self.steps.extend(StepRecord.from_dict(s.to_dict()) for s in steps)

    def metrics(self) -> SourceMetrics:
        if self.source_metrics is None:
            self.source_metrics = SourceMetrics()
        return self.source_metrics

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        verdict = self.verdict
        artifacts = []
        for a in self.artifacts:
            d = a.to_dict()
            if self.gate is not None:
                d["status"] = verdict.artifacts[a.name].status
            artifacts.append(d)
        out: dict[str, Any] = {"mdeploy_version": MDEPLOY_VERSION, "schema_version": SCHEMA_VERSION,
                               "source": self.source.to_dict(), "artifacts": artifacts,
                               "steps": [s.to_dict() for s in self.steps], "warnings": list(self.warnings)}
        for key in ("recipe", "validation_thresholds", "validation", "source_metrics", "bench_machine", "unlisted"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_dict() if hasattr(value, "to_dict") else value
        if self.gate is not None:
            gate = self.gate.to_dict()
            gate.update(targets=verdict.targets, failed_steps=verdict.failed_steps, ok=verdict.ok)
            out["gate"] = gate
        if self.seconds is not None:
            out["seconds"] = self.seconds
        out.update(self.extra)
        out["verdict"] = verdict.to_dict()
        out["ok"] = verdict.ok
        return _clean(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        """Read schema 1 or 2; unknown keys are kept and written back."""
        if not isinstance(d, dict):
            raise ValueError("a report is a JSON object")
        version = d.get("schema_version", 1)
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"schema_version {version!r}")
        known = {"mdeploy_version", "schema_version", "source", "artifacts", "steps", "warnings", "recipe",
                 "validation_thresholds", "validation", "source_metrics", "bench_machine", "unlisted", "gate", "seconds",
                 *DERIVED}
        return cls(
            source=SourceRecord.from_dict(d.get("source") or {}),
            artifacts=[ArtifactRecord.from_dict(a) for a in d.get("artifacts", [])],
            steps=[StepRecord.from_dict(s) for s in d.get("steps", [])],
            warnings=list(d.get("warnings", [])), recipe=d.get("recipe"),
            validation_thresholds=Thresholds.from_dict(d.get("validation_thresholds")),
            validation=ValidationSummary.from_dict(d.get("validation")),
            source_metrics=SourceMetrics.from_dict(d.get("source_metrics")),
            bench_machine=d.get("bench_machine"), unlisted=d.get("unlisted"), gate=Gate.from_dict(d.get("gate")),
            seconds=d.get("seconds"), mdeploy_version=d.get("mdeploy_version", "?"), schema_version=version,
            extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, out_dir: Path) -> Report:
        path = Path(out_dir) / REPORT_NAME
        if not path.is_file():
            raise BadInput(f"{out_dir} has no {REPORT_NAME}", "run `mdeploy convert`, `quantize` or `optimize` with -o pointing at this directory first")
        try:
            return cls.from_json(path.read_text())
        except (ValueError, TypeError) as e:
            raise BadInput(f"{path} is not a readable report ({e})", "delete it and re-run the command that wrote it") from e

    @classmethod
    def load_or_new(cls, out_dir: Path, source: Artifact) -> Report:
        """The OUTDIR's report if it describes the same source, else a fresh one."""
        path = Path(out_dir) / REPORT_NAME
        if path.is_file():
            try:
                old = cls.from_json(path.read_text())
                if old.source.sha256 == source.sha256():
                    return old
            except (ValueError, TypeError):
                fresh = cls.replacing_unreadable(path, cls.for_source(source).source)
                fresh.save(out_dir)
                return fresh
        return cls.for_source(source)

    @classmethod
    def replacing_unreadable(cls, path: Path, source: SourceRecord) -> Report:
        """A fresh report for an unreadable report.json, which is kept beside it (never silently replaced); the
        fresh report's warning says where."""
        aside = move_aside(path, "unreadable", hidden=False)
        return cls(source=copy.deepcopy(source), warnings=[f"{path} could not be read: kept as {aside.name}; a new report.json was started"])

    def save(self, out_dir: Path) -> Path:
        path = Path(out_dir) / REPORT_NAME
        write_text_atomic(path, self.to_json() + "\n")
        return path
