"""Model zoos: the manifest, deterministic sharding and per-model cache keys.

Running the models is passes/workflows/zoo.py's job (one process each, locally or as Ray tasks); this module is
plain data.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.passes.checks.bounds import BOUND_NAMES, BOUNDS, check_bounds, with_bounds
from mdeploy.passes.core.artifact import content_hash
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import name_from_file, safe_component
from mdeploy.passes.core.limits import parse_size
from mdeploy.passes.workflows.recipe import read_toml, resolve_data_spec

# The gate's bounds (passes/checks/bounds.py), passed to each model's optimize as its flags.
GATE_KEYS = BOUND_NAMES
# What a model reserves when the zoo runs on Ray (--backend ray): scheduling only, so not part of the cache key.
RESOURCE_KEYS = ("num_cpus", "memory")
MAX_NUM_CPUS = 1024
MIN_MEMORY = 64 << 20
MODEL_KEYS = {"name", "path", "calibration", "validation", "recipe", "target", "sparsity", *GATE_KEYS, "strict",
              *RESOURCE_KEYS}
DEFAULT_KEYS = MODEL_KEYS - {"name", "path"}


@dataclass(frozen=True, kw_only=True)
@with_bounds
class ZooModel:
    """One [[model]]: what its `optimize` is given, a field per gate bound included (passes/checks/bounds.py)."""

    name: str
    path: Path
    calibration: str | None = None
    validation: str | None = None
    recipe: Path | None = None
    target: str | None = None
    sparsity: float | None = None
    strict: bool = False
    num_cpus: float | None = None  # Ray CPUs reserved for the model's task (default 1)
    memory: int | None = None  # Ray memory reserved, in bytes (default: estimated from the model's size)

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
                            *((b.flag, getattr(self, b.name)) for b in BOUNDS)):
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


def _resources(entry: dict[str, Any], where: str) -> dict[str, Any]:
    """num_cpus: a number in (0, 1024]; memory: a size ("4GB", "512MiB") or a positive number of bytes."""
    out: dict[str, Any] = {}
    cpus = entry.get("num_cpus")
    if cpus is not None:
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 < cpus <= MAX_NUM_CPUS:
            raise BadInput(f"{where}.num_cpus must be a number of CPUs above 0 (at most {MAX_NUM_CPUS}), got {cpus!r}",
                           "write e.g. num_cpus = 2 (or 0.5 to let two models share a CPU)")
        out["num_cpus"] = float(cpus)
    memory = entry.get("memory")
    if memory is not None:
        if isinstance(memory, float) and memory.is_integer():
            memory = int(memory)
        out["memory"] = parse_size(memory if isinstance(memory, (int, str)) else repr(memory), f"{where}.memory",
                                   'memory = "4GB"')
        if out["memory"] < MIN_MEMORY:  # `memory = 4` meant gigabytes, surely
            raise BadInput(f"{where}.memory {memory!r} is {out['memory']} bytes, less than {MIN_MEMORY >> 20} MB",
                           'write the unit, e.g. memory = "4GB"')
    return out


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
    _resources(defaults, "defaults")
    check_bounds(defaults, "defaults.")
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
        check_bounds(entry, f"model[{i}].")
        merged = {**defaults, **entry}
        # the name becomes OUTDIR/<name>: one plain path component, never '..' or an absolute path
        name = (safe_component(merged["name"], f"model[{i}].name") if "name" in merged
                else name_from_file(merged["path"]))
        if name in seen:
            raise BadInput(f"two models are called '{name}'", "give each [[model]] a unique name")
        seen.add(name)
        merged["name"] = name
        merged.update(_resources(merged, f"model[{i}]"))
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


