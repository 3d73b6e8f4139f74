"""report.json: plain data that every command adds to, and its renderings. The library never prints.

Schema (version 1), extended by later commands without breaking earlier readers:
  mdeploy_version, schema_version, source {path, format, sha256, size_bytes, inputs, outputs},
  artifacts [{name, format, path, size_bytes, sha256, precision, sparsity, produced_by, parent,
              inputs, outputs, checks {max_abs_error, max_rel_error, tolerance, passed, ...}, ...}],
  steps [{pass, params, input, output, seconds, cached, status, note}], warnings [...], ok.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import write_text_atomic
from mdeploy.passes.core.pipeline import MDEPLOY_VERSION, Step

SCHEMA_VERSION = 1
REPORT_NAME = "report.json"


def artifact_record(a: Artifact, out_dir: Path) -> dict[str, Any]:
    """The report's view of an artifact: identity, size, hash, lineage."""
    d = a.to_dict(relative_to=out_dir)
    meta = dict(d.pop("meta"))
    return {
        "name": a.name,
        "format": a.format,
        "path": d["path"],
        "size_bytes": a.size_bytes(),
        "sha256": a.sha256(),
        "precision": meta.pop("precision", "float32"),
        "sparsity": meta.pop("sparsity", None),
        "produced_by": meta.pop("produced_by", None),
        "parent": d["parent"],
        "inputs": d["inputs"],
        "outputs": d["outputs"],
        "meta": meta,
        "checks": {},
    }


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
    source: dict[str, Any]
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # sections later commands add (validation, bench, gate)

    @classmethod
    def for_source(cls, source: Artifact) -> Report:
        return cls(source={
            "path": str(source.path), "format": source.format, "sha256": source.sha256(),
            "size_bytes": source.size_bytes(),
            "inputs": [t.to_dict() for t in source.inputs], "outputs": [t.to_dict() for t in source.outputs],
        })

    @property
    def ok(self) -> bool:
        return all(a.get("checks", {}).get("passed", True) is not False and a.get("status") != "rejected"
                   for a in self.artifacts)

    def artifact(self, name: str) -> dict[str, Any] | None:
        return next((a for a in self.artifacts if a["name"] == name), None)

    def add_artifact(self, record: dict[str, Any]) -> None:
        """Add or replace (by name) an artifact record."""
        self.artifacts = [a for a in self.artifacts if a["name"] != record["name"]] + [record]

    def add_steps(self, steps: list[Step]) -> None:
        self.steps.extend(s.to_dict() for s in steps)

    def to_dict(self) -> dict[str, Any]:
        return _clean({"mdeploy_version": MDEPLOY_VERSION, "schema_version": SCHEMA_VERSION, "source": self.source,
                       "artifacts": self.artifacts, "steps": self.steps, "warnings": self.warnings,
                       **self.extra, "ok": self.ok})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        known = {"mdeploy_version", "schema_version", "source", "artifacts", "steps", "warnings", "ok"}
        return cls(source=d.get("source", {}), artifacts=list(d.get("artifacts", [])), steps=list(d.get("steps", [])),
                   warnings=list(d.get("warnings", [])), extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def load(cls, out_dir: Path) -> Report:
        path = Path(out_dir) / REPORT_NAME
        if not path.is_file():
            raise BadInput(f"{out_dir} has no {REPORT_NAME}", "run `mdeploy convert`, `quantize` or `optimize` with -o pointing at this directory first")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except ValueError as e:
            raise BadInput(f"{path} is not valid JSON ({e})", "delete it and re-run the command that wrote it") from e

    @classmethod
    def load_or_new(cls, out_dir: Path, source: Artifact) -> Report:
        """The OUTDIR's report if it describes the same source, else a fresh one."""
        path = Path(out_dir) / REPORT_NAME
        if path.is_file():
            try:
                old = cls.from_dict(json.loads(path.read_text()))
                if old.source.get("sha256") == source.sha256():
                    return old
            except ValueError:
                pass
        return cls.for_source(source)

    def save(self, out_dir: Path) -> Path:
        path = Path(out_dir) / REPORT_NAME
        write_text_atomic(path, self.to_json() + "\n")
        return path
