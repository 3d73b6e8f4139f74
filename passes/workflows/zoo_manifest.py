"""Model zoos: the manifest, deterministic sharding, per-model cache keys and the zoo summary.

Running the models (one process each) is the CLI's job (cli/zoo.py); this module is plain data.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.passes.core.artifact import content_hash
from mdeploy.passes.core.errors import BadInput

MODEL_KEYS = {"name", "path", "calibration", "validation", "recipe", "target", "sparsity"}
DEFAULT_KEYS = MODEL_KEYS - {"name", "path"}
SUMMARY_NAME = "zoo-summary.json"


@dataclass(frozen=True)
class ZooModel:
    name: str
    path: Path
    calibration: str | None = None
    validation: str | None = None
    recipe: Path | None = None
    target: str | None = None
    sparsity: float | None = None

    def cache_key(self, version: str) -> str:
        """Changes when the model, its data, its recipe or mdeploy changes; unreadable inputs never match."""
        parts: dict[str, Any] = {"version": version, "target": self.target, "sparsity": self.sparsity}
        for label, p in (("model", self.path), ("calibration", self.calibration), ("validation", self.validation),
                         ("recipe", self.recipe)):
            if p is None or p == "random":
                parts[label] = p
                continue
            try:
                parts[label] = content_hash(Path(p))
            except OSError:
                parts[label] = f"unreadable:{p}"
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def optimize_args(self, out_dir: Path) -> list[str]:
        args = ["optimize", str(self.path), "-o", str(out_dir), "--json", "--force"]
        for flag, value in (("--calibration", self.calibration), ("--validation", self.validation),
                            ("--recipe", self.recipe), ("--target", self.target), ("--sparsity", self.sparsity)):
            if value is not None:
                args += [flag, str(value)]
        return args


@dataclass
class Manifest:
    path: Path
    models: list[ZooModel] = field(default_factory=list)


def _resolve(base: Path, value: Any, key: str) -> Any:
    if key in ("path", "calibration", "validation", "recipe") and isinstance(value, str) and value != "random":
        p = Path(value)
        return p if p.is_absolute() else (base / p)
    return value


def load_manifest(path: Path) -> Manifest:
    """Read a zoo manifest: [defaults] plus [[model]] tables; relative paths resolve against its folder."""
    from mdeploy.passes.workflows.recipe import read_toml

    path = Path(path)
    data = read_toml(path, "manifest", "pass a TOML manifest with [[model]] entries")
    unknown = set(data) - {"defaults", "model"}
    if unknown:
        raise BadInput(f"unknown manifest key '{sorted(unknown)[0]}'", "a manifest holds [defaults] and [[model]] tables")
    defaults = data.get("defaults", {})
    bad = set(defaults) - DEFAULT_KEYS
    if bad:
        raise BadInput(f"unknown key 'defaults.{sorted(bad)[0]}'", f"known keys: {', '.join(sorted(DEFAULT_KEYS))}")
    entries = data.get("model", [])
    if not isinstance(entries, list) or not entries:
        raise BadInput(f"{path} lists no models", "add [[model]] tables with at least a path")
    base = path.parent.resolve()
    models: list[ZooModel] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        bad = set(entry) - MODEL_KEYS
        if bad:
            raise BadInput(f"unknown key 'model[{i}].{sorted(bad)[0]}'", f"known keys: {', '.join(sorted(MODEL_KEYS))}")
        if "path" not in entry:
            raise BadInput(f"model[{i}] has no path", "give every [[model]] a path")
        merged = {**defaults, **entry}
        name = str(merged.get("name") or Path(merged["path"]).stem)
        if name in seen:
            raise BadInput(f"two models are called '{name}'", "give each [[model]] a unique name")
        seen.add(name)
        merged["name"] = name
        models.append(ZooModel(**{k: _resolve(base, v, k) for k, v in merged.items()}))
    return Manifest(path=path, models=models)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise BadInput(f"--shard must look like I/N (e.g. 1/4), got '{text}'", "I counts from 1 to N") from None
    if not 1 <= i <= n:
        raise BadInput(f"--shard {text}: I must be between 1 and N", "for a 4-machine matrix use 1/4 .. 4/4")
    return i, n


def shard(models: list[ZooModel], spec: tuple[int, int] | None) -> list[ZooModel]:
    """A deterministic subset: a model belongs to shard (hash(name) mod N) + 1, stable when models are added."""
    if spec is None:
        return list(models)
    i, n = spec
    return [m for m in models if int(hashlib.sha256(m.name.encode()).hexdigest(), 16) % n == i - 1]


# --------------------------------------------------------------------------- summary

def model_summary(name: str, report: dict[str, Any] | None, status: str, seconds: float, reason: str = "",
                  cached: bool = False) -> dict[str, Any]:
    """One zoo row: the best passing artifact per target, as the model's own report marks it."""
    from mdeploy.passes.report.model import Report
    from mdeploy.passes.report.render import comparison_rows

    row: dict[str, Any] = {"name": name, "status": status, "seconds": round(seconds, 2), "reason": reason,
                           "cached": cached, "best": {}}
    if report:
        rows = comparison_rows(Report.from_dict(report))
        for target in ("cloud", "edge"):
            best = next((r for r in rows if r["target"] == target and r["best"]), None)
            row["best"][target] = None if best is None else {
                "artifact": best["name"], "format": best["format"], "precision": best["precision"],
                "size_bytes": best["size_bytes"], "size_ratio": best["size_ratio"], "p50_ms": best["latency_ms"],
                "speedup": best["speedup"], "accuracy_drop": best["accuracy_drop"],
            }
    return row


def write_summary(out_dir: Path, rows: list[dict[str, Any]], shard_spec: tuple[int, int] | None = None) -> Path:
    from mdeploy.passes.core.fsio import write_text_atomic
    from mdeploy.passes.core.pipeline import MDEPLOY_VERSION

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
    from mdeploy.passes.report.render import human_bytes

    speed = f"{best['speedup']:.2f}x" if best.get("speedup") else "-"
    drop = f"{best['accuracy_drop'] * 100:.2f} pp" if isinstance(best.get("accuracy_drop"), (int, float)) else "-"
    return (best["artifact"], human_bytes(best.get("size_bytes")), speed, drop)


SUMMARY_COLUMNS = ("model", "status", "cloud best", "size", "speedup", "acc drop", "edge best", "size", "speedup",
                   "acc drop", "time")


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
