"""How validate and bench add their numbers to an OUTDIR's report, next to what convert/quantize/prune wrote.

A candidate's result goes into its artifact record's `validation` (the source's into `source_metrics`), the run
into `validation` and `validation_thresholds`; a bench result into the record's `bench`. Models that are not in
the report go under `unlisted`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.passes.core.artifact import content_hash
from mdeploy.passes.report.model import Report
from mdeploy.passes.report.sections import ArtifactRecord, Bench, Thresholds, Validation, ValidationSummary

SOURCE = "source"


def find_record(report: Report, out_dir: Path, path: Path) -> str | ArtifactRecord | None:
    """The report entry a model file is: SOURCE, an artifact record, or None. By path, then by content hash."""
    target = Path(path).resolve()

    def resolved(p: str) -> Path:
        q = Path(p)
        return (q if q.is_absolute() else Path(out_dir) / q).resolve()

    if report.source.path and resolved(report.source.path) == target:
        return SOURCE
    for a in report.artifacts:
        if a.path and resolved(a.path) == target:
            return a
    try:
        digest = content_hash(target)
    except OSError:
        return None
    if report.source.sha256 == digest:
        return SOURCE
    return next((a for a in report.artifacts if a.sha256 == digest), None)


def record_name(report: Report, out_dir: Path, path: Path) -> str | None:
    entry = find_record(report, out_dir, path)
    return SOURCE if entry == SOURCE else (entry.name if entry else None)


def add_validation(report: Report, out_dir: Path, result: dict[str, Any], paths: dict[str, Path], reference_path: Path) -> None:
    """Attach a ValidationResult's dict: per-candidate records, the thresholds, the run summary, the source's accuracy."""
    d = result
    common = {"reference": d["reference"], "data": d["data"], "samples": d["samples"], "thresholds": d["thresholds"]}
    report.validation_thresholds = Thresholds.from_dict(d["thresholds"])
    report.validation = ValidationSummary.from_dict({k: v for k, v in d.items() if k != "candidates"}
                                                    | {"candidates": [c["name"] for c in d["candidates"]]})
    if find_record(report, out_dir, reference_path) == SOURCE and d["reference_accuracy"] is not None:
        report.metrics().accuracy = d["reference_accuracy"]
    for c in d["candidates"]:
        entry = find_record(report, out_dir, paths[c["name"]])
        section = Validation.from_dict({**c, **common})
        if isinstance(entry, ArtifactRecord):
            entry.validation = section
        elif entry == SOURCE:
            report.metrics().validation = section
        else:
            report.unlisted = report.unlisted or {}
            report.unlisted.setdefault("validation", {})[str(paths[c["name"]])] = section.to_dict()


def add_bench(report: Report, out_dir: Path, result: dict[str, Any]) -> None:
    entry = find_record(report, out_dir, Path(result["path"]))
    report.bench_machine = result["machine"]
    if entry == SOURCE:
        report.metrics().bench = Bench.from_dict(result)
    elif isinstance(entry, ArtifactRecord):
        entry.bench = Bench.from_dict(result)
    else:
        report.unlisted = report.unlisted or {}
        report.unlisted.setdefault("bench", {})[result["path"]] = result
