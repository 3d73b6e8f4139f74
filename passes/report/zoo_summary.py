"""The zoo summary: one row per model (its best passing artifact per target), as JSON, Markdown and HTML, and shard merging."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import write_text_atomic
from mdeploy.passes.core.pipeline import MDEPLOY_VERSION
from mdeploy.passes.report.model import Report
from mdeploy.passes.report.render import comparison_rows, human_bytes

SUMMARY_NAME = "zoo-summary.json"


def model_summary(name: str, report: dict[str, Any] | None, status: str, seconds: float, reason: str = "",
                  cached: bool = False) -> dict[str, Any]:
    """One zoo row: the best passing artifact per target, as the model's own report marks it."""

    row: dict[str, Any] = {"name": name, "status": status, "seconds": round(seconds, 2), "reason": reason,
                           "cached": cached, "best": {}}
    if report:
        rows = comparison_rows(Report.from_dict(report))
        for target in ("cloud", "edge"):
            best = next((r for r in rows if r["target"] == target and r["best"]), None)
            row["best"][target] = None if best is None else {
                "artifact": best["name"], "format": best["format"], "precision": best["precision"],
                "size_bytes": best["size_bytes"], "size_ratio": best["size_ratio"], "p50_ms": best["latency_ms"],
                "speedup": best["speedup"],
                "accuracy_drop": None if best["accuracy_change"] is None else 0.0 - best["accuracy_change"],
            }
    return row


def write_summary(out_dir: Path, rows: list[dict[str, Any]], shard_spec: tuple[int, int] | None = None) -> Path:
    data = {"mdeploy_version": MDEPLOY_VERSION, "shard": list(shard_spec) if shard_spec else None,
            "models": sorted(rows, key=lambda r: r["name"]),
            "ok": all(r["status"] == "ok" for r in rows)}
    out = Path(out_dir) / SUMMARY_NAME
    write_text_atomic(out, json.dumps(data, indent=2, default=str) + "\n")
    write_text_atomic(out.with_suffix(".md"), summary_markdown(data))
    write_text_atomic(out.with_suffix(".html"), summary_html(data))
    return out


def merge_summaries(paths: list[Path]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for p in paths:
        p = Path(p)
        f = p / SUMMARY_NAME if p.is_dir() else p
        if not f.is_file():
            raise BadInput(f"{p}: no {SUMMARY_NAME}", "pass the output directories of `mdeploy zoo --shard` runs")
        try:
            data = json.loads(f.read_text())
        except ValueError as e:
            raise BadInput(f"{f} is not valid JSON ({e})", "re-run that shard") from e
        for row in data.get("models", []):
            rows[row["name"]] = row
    return list(rows.values())


def _cell(best: dict[str, Any] | None) -> tuple[str, str, str, str]:
    if not best:
        return ("-", "-", "-", "-")

    speed = f"{best['speedup']:.2f}x" if best.get("speedup") else "-"
    drop = f"{0.0 - best['accuracy_drop'] * 100:+.2f} pp" if isinstance(best.get("accuracy_drop"), (int, float)) else "-"
    return (best["artifact"], human_bytes(best.get("size_bytes")), speed, drop)


SUMMARY_COLUMNS = ("model", "status", "cloud best", "size", "speedup", "Δacc", "edge best", "size", "speedup",
                   "Δacc", "time")


def summary_rows(data: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in data["models"]:
        status = r["status"] + (" (cached)" if r.get("cached") else "")
        if r.get("reason"):
            status += f": {r['reason']}"
        out.append([r["name"], status, *_cell(r["best"].get("cloud")), *_cell(r["best"].get("edge")), f"{r['seconds']:.1f}s"])
    return out


def summary_markdown(data: dict[str, Any]) -> str:
    lines = ["# mdeploy zoo summary", "", "| " + " | ".join(SUMMARY_COLUMNS) + " |",
             "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in summary_rows(data)]
    failed = [r for r in data["models"] if r["status"] != "ok"]
    if failed:
        lines += ["", "**Failed:**", ""] + [f"- `{r['name']}`: {r['reason']}" for r in failed]
    return "\n".join(lines) + "\n"


def summary_html(data: dict[str, Any]) -> str:
    import html

    head = "".join(f"<th>{html.escape(c)}</th>" for c in SUMMARY_COLUMNS)
    body = "".join("<tr class='{}'>{}</tr>".format("ok" if r[1].startswith("ok") else "bad",
                                                  "".join(f"<td>{html.escape(c)}</td>" for c in r))
                   for r in summary_rows(data))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>mdeploy zoo summary</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}tr.bad td{background:#fde8e8}"
            "tr.ok td:nth-child(2){color:#176f2c}</style></head><body><h1>mdeploy zoo summary</h1>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n")
