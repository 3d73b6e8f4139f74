"""How validate and bench add their numbers to an OUTDIR's report.json, next to what convert/quantize/prune wrote.

Fields added (all optional to readers; report_render tolerates any being missing):
  artifact record["validation"]: the candidate's result from passes/validate.py: passed, accuracy, accuracy_drop,
      max_abs_error, mean_abs_error, max_rel_error, cosine_similarity, sqnr_db, top1_agreement, top5_agreement,
      nan_count, inf_count (each the worst over outputs), layout, outputs {name: metrics}, failures
      [{candidate, metric, value, threshold, output}], plus reference, data, samples and thresholds.
  artifact record["bench"]: passes/bench.bench's dict (latency_ms {p50, p90, p99, mean, min, max},
      throughput_per_s, load_seconds, peak_rss_bytes, baseline_rss_bytes, batch, threads, warmup, runs,
      runtime, machine).
  extra["validation"]: {reference, data, samples, labels, reference_accuracy, thresholds, passed, failures,
      candidates: [names]} of the last validate run.
  extra["validation_thresholds"]: {max_accuracy_drop, min_agreement, max_abs_error, min_sqnr} (None = off).
  extra["source_metrics"]: {"accuracy": the source's accuracy on the validation data, "bench": its bench dict}.
  extra["bench_machine"]: the machine of the last bench run.
  extra["unlisted"]: {"validation": {path: result}, "bench": {path: result}} for models that are not in the report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.passes.core.artifact import content_hash
from mdeploy.passes.report.model import Report

SOURCE = "source"


def find_record(report: Report, out_dir: Path, path: Path) -> str | dict[str, Any] | None:
    """The report entry a model file is: SOURCE, an artifact record, or None. By path, then by content hash."""
    target = Path(path).resolve()

    def resolved(p: str) -> Path:
        q = Path(p)
        return (q if q.is_absolute() else Path(out_dir) / q).resolve()

    if report.source.get("path") and resolved(report.source["path"]) == target:
        return SOURCE
    for a in report.artifacts:
        if a.get("path") and resolved(a["path"]) == target:
            return a
    try:
        digest = content_hash(target)
    except OSError:
        return None
    if report.source.get("sha256") == digest:
        return SOURCE
    return next((a for a in report.artifacts if a.get("sha256") == digest), None)


def record_name(report: Report, out_dir: Path, path: Path) -> str | None:
    entry = find_record(report, out_dir, path)
    return SOURCE if entry == SOURCE else (entry["name"] if entry else None)


def add_validation(report: Report, out_dir: Path, result: Any, paths: dict[str, Path], reference_path: Path) -> None:
    """Attach a ValidationResult: per-candidate records, the thresholds, the run summary, the source's accuracy."""
    d = result.to_dict()
    common = {"reference": d["reference"], "data": d["data"], "samples": d["samples"], "thresholds": d["thresholds"]}
    extra = report.extra
    extra["validation_thresholds"] = d["thresholds"]
    extra["validation"] = {k: v for k, v in d.items() if k != "candidates"} | {"candidates": [c["name"] for c in d["candidates"]]}
    if find_record(report, out_dir, reference_path) == SOURCE and d["reference_accuracy"] is not None:
        extra.setdefault("source_metrics", {})["accuracy"] = d["reference_accuracy"]
    for c in d["candidates"]:
        entry = find_record(report, out_dir, paths[c["name"]])
        if isinstance(entry, dict):
            entry["validation"] = {**c, **common}
        elif entry == SOURCE:
            extra.setdefault("source_metrics", {})["validation"] = {**c, **common}
        else:
            extra.setdefault("unlisted", {}).setdefault("validation", {})[str(paths[c["name"]])] = {**c, **common}


def add_bench(report: Report, out_dir: Path, result: dict[str, Any]) -> None:
    entry = find_record(report, out_dir, Path(result["path"]))
    report.extra["bench_machine"] = result["machine"]
    if entry == SOURCE:
        report.extra.setdefault("source_metrics", {})["bench"] = result
    elif isinstance(entry, dict):
        entry["bench"] = result
    else:
        report.extra.setdefault("unlisted", {}).setdefault("bench", {})[result["path"]] = result
