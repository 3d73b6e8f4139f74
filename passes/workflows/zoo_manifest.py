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
from mdeploy.passes.core.fsio import name_from_file, safe_component
from mdeploy.passes.workflows.recipe import read_toml, resolve_data_spec

# The gate's bounds, passed to each model's optimize as its flags (see passes/checks/gates.py).
GATE_KEYS = ("max_accuracy_drop", "min_agreement", "min_sqnr", "max_abs_error", "max_rel_error")
MODEL_KEYS = {"name", "path", "calibration", "validation", "recipe", "target", "sparsity", *GATE_KEYS, "strict"}
DEFAULT_KEYS = MODEL_KEYS - {"name", "path"}


@dataclass(frozen=True)
class ZooModel:
    name: str
    path: Path
    calibration: str | None = None
    validation: str | None = None
    recipe: Path | None = None
    target: str | None = None
    sparsity: float | None = None
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None
    min_sqnr: float | None = None
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    strict: bool = False

    def cache_key(self, version: str) -> str:
        """Changes when the model, its data, its recipe or mdeploy changes; unreadable inputs never match."""
        parts: dict[str, Any] = {"version": version, "target": self.target, "sparsity": self.sparsity,
                                 "strict": self.strict, **{k: getattr(self, k) for k in GATE_KEYS}}
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

    def optimize_args(self, out_dir: Path, trusted: bool = False) -> list[str]:
        """The child's command line; `trusted` passes the zoo's --unsafe-keras on."""
        args = ["optimize", str(self.path), "-o", str(out_dir), "--json", "--force"]
        if trusted:
            args.insert(0, "--unsafe-keras")
        for flag, value in (("--calibration", self.calibration), ("--validation", self.validation),
                            ("--recipe", self.recipe), ("--target", self.target), ("--sparsity", self.sparsity),
                            *(("--" + k.replace("_", "-"), getattr(self, k)) for k in GATE_KEYS)):
            if value is not None:
                args += [flag, str(value)]
        return args + (["--strict"] if self.strict else [])


@dataclass
class Manifest:
    path: Path
    models: list[ZooModel] = field(default_factory=list)


def _resolve(base: Path, value: Any, key: str) -> Any:
    if key in ("calibration", "validation") and isinstance(value, str):
        return resolve_data_spec(value, base)  # as in a recipe: module:function and `random` stay as written
    if key in ("path", "recipe") and isinstance(value, str):
        p = Path(value)
        return p if p.is_absolute() else (base / p)
    return value


def load_manifest(path: Path) -> Manifest:
    """Read a zoo manifest: [defaults] plus [[model]] tables; relative paths resolve against its folder."""

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
        # the name becomes OUTDIR/<name>: one plain path component, never '..' or an absolute path
        name = (safe_component(merged["name"], f"model[{i}].name") if "name" in merged
                else name_from_file(merged["path"]))
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


