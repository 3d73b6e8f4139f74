"""The pass pipeline: chain passes, refuse format mismatches, record each step, cache, and run branches in parallel.

A pass is a small frozen dataclass whose fields are its parameters, with `name`, `accepts` and
`run(artifact, ctx) -> Artifact`. The runner is the only place that knows about caching and timing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, Protocol

from mdeploy.passes.core.artifact import Artifact, TensorSpec, content_hash
from mdeploy.passes.core.errors import (
    BadInput,
    EnvironmentProblem,
    MdeployError,
    PassFailed,
    environment_error,
    last_meaningful_line,
)
from mdeploy.passes.core.fsio import contained, move_aside, remove_path, write_text_atomic
from mdeploy.passes.core.logs import configure_logging
from mdeploy.passes.core.processes import ignore_interrupts_in_worker, run_in_worker

try:
    MDEPLOY_VERSION = version("mdeploy")
except PackageNotFoundError:  # running from a source tree
    MDEPLOY_VERSION = "0.0.0+source"


class Pass(Protocol):
    """A small frozen dataclass whose fields are its parameters. `run` returns the new artifact, or a PassResult
    when it has more to tell the runner (a step it skipped, and why)."""

    name: ClassVar[str]
    accepts: ClassVar[tuple[str, ...]]

    def run(self, artifact: Artifact, ctx: Context) -> Artifact | PassResult: ...


@dataclass(frozen=True)
class PassResult:
    """How a pass went: its output and the step's status. `skipped` hands on an artifact it did not change."""

    artifact: Artifact
    status: str = "ok"  # ok | skipped
    note: str = ""


def pass_params(p: Any) -> dict[str, Any]:
    """A pass's parameters: its dataclass fields, JSON-ready."""
    return json.loads(json.dumps(dataclasses.asdict(p), default=str))


@dataclass
class Context:
    """What every pass may read: where to write, whether to overwrite, and the data to check against."""

    out_dir: Path
    force: bool = False
    name: str = "model"
    seed: int = 0
    parity_data: str | None = None  # a data spec (see calibration.open_source); None = generated inputs
    cache_dir: Path | None = None
    verbose: bool = False  # spawned branch processes configure their logging from it
    # A directory where int8 passes keep calibration ranges keyed by everything that decides them, so runs that
    # differ only in what they quantize (the accuracy search's trials) calibrate once. None: calibrate every run.
    calibration_cache: Path | None = None
    on_stage: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    warnings: list[str] = field(default_factory=list)
    # Files this OUTDIR's report.json lists ({resolved path: sha256}): a pass may replace them without --force,
    # since they are mdeploy's own; one whose bytes no longer match is moved aside first, with a warning.
    replaceable: dict[str, str] = field(default_factory=dict)
    # Called with each artifact as soon as it is under its final name (a picklable object, so spawned branches
    # can call it too): the workflow lists it in report.json at once, so a killed run leaves no unlisted artifact.
    on_publish: Callable[[Artifact], None] | None = field(default=None, repr=False, compare=False)

    def stage(self, text: str) -> None:
        if self.on_stage is not None:
            self.on_stage(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)


@dataclass
class Step:
    """One executed pass, as it goes into report.json."""

    pass_name: str
    params: dict[str, Any]
    input: str
    output: str
    seconds: float
    cached: bool = False
    status: str = "ok"  # ok | skipped | failed
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"pass": self.pass_name, "params": self.params, "input": self.input, "output": self.output,
                "seconds": round(self.seconds, 3), "cached": self.cached, "status": self.status, "note": self.note}


# --------------------------------------------------------------------------- caching

def _referenced_files(value: Any) -> dict[str, str]:
    """Content hashes of the files a pass's parameters name (calibration or fine-tuning data), so that
    new data at the same path is a cache miss."""
    found: dict[str, str] = {}
    if isinstance(value, dict):
        for v in value.values():
            found.update(_referenced_files(v))
    elif isinstance(value, (list, tuple)):
        for v in value:
            found.update(_referenced_files(v))
    elif isinstance(value, str) and value and len(value) < 4096:
        path = Path(value)
        try:
            if path.exists():
                found[value] = content_hash(path)
        except OSError:
            pass
    return found


def cache_key(input_hash: str, p: Any) -> str:
    params = pass_params(p)
    blob = json.dumps({"pass": p.name, "params": params, "input": input_hash, "data": _referenced_files(params),
                       "mdeploy": MDEPLOY_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def artifact_from_record(record: dict[str, Any], parent: Artifact) -> Artifact:
    return Artifact(format=record["format"], path=Path(record["path"]),
                    inputs=tuple(TensorSpec.from_dict(t) for t in record["inputs"]),
                    outputs=tuple(TensorSpec.from_dict(t) for t in record["outputs"]),
                    name=record["name"], parent=parent, meta=record["meta"], trusted=parent.trusted)


class StepCache:
    """Maps (input content hash, pass, params, version) to a finished output. An entry is written
    only after its output is complete, and a hit is honoured only if the output still hashes the same.

    Outputs are stored relative to OUTDIR (`root`), so a moved or copied OUTDIR keeps its cache and never points
    into another directory; an entry that would resolve outside OUTDIR is a miss."""

    def __init__(self, directory: Path, root: Path):
        self.directory = Path(directory)
        self.root = Path(root)

    def get(self, key: str, parent: Artifact) -> PassResult | None:
        entry = self.directory / f"{key}.json"
        if not entry.is_file():
            return None
        try:
            record = json.loads(entry.read_text())
            stored = Path(record["artifact"]["path"])
            if stored.is_absolute():
                return None  # written by an older mdeploy: rebuilt once
            path = contained(self.root, self.root / stored)
            if not path.exists() or content_hash(path) != record["sha256"]:
                return None
            return PassResult(artifact_from_record({**record["artifact"], "path": str(path)}, parent),
                              record.get("status", "ok"), record.get("note", ""))
        except (OSError, ValueError, KeyError, TypeError, BadInput):
            return None

    def put(self, key: str, result: PassResult) -> None:
        try:
            relative = contained(self.root, result.artifact.path).relative_to(self.root.resolve())
        except BadInput:
            return  # an output outside OUTDIR is never cached
        record = {"artifact": result.artifact.to_dict(), "sha256": content_hash(result.artifact.path),
                  "status": result.status, "note": result.note}
        record["artifact"]["path"] = str(relative)
        write_text_atomic(self.directory / f"{key}.json", json.dumps(record, default=str))


# --------------------------------------------------------------------------- running

def run_pass(p: Pass, artifact: Artifact, ctx: Context, steps: list[Step]) -> Artifact:
    """Run one pass with the format check, the cache and the step record."""
    if artifact.format not in p.accepts:
        raise BadInput(f"pass '{p.name}' cannot take a {artifact.format} model (it accepts {', '.join(p.accepts)})",
                       f"convert the model to one of {', '.join(p.accepts)} first")
    cache = StepCache(ctx.cache_dir, ctx.out_dir) if ctx.cache_dir else None
    key = cache_key(content_hash(artifact.path), p) if cache else ""
    t0 = time.perf_counter()
    hit = cache.get(key, artifact) if cache else None
    if hit is not None:
        steps.append(Step(p.name, pass_params(p), str(artifact.path), str(hit.artifact.path), time.perf_counter() - t0,
                          cached=True, status=hit.status, note=hit.note))
        if ctx.on_publish is not None:
            ctx.on_publish(hit.artifact)
        return hit.artifact
    ctx.stage(f"{p.name}: {artifact.name}")
    run_ctx = _claim_output(p, ctx)
    try:
        out = p.run(artifact, run_ctx)
    except MdeployError:
        raise
    except Exception as e:  # a converter's own exception: name the pass and keep the cause for --debug
        env = environment_error(e)
        if env is not None:  # a full disk or a read-only OUTDIR is the user's to fix, not the pass's failure
            raise env from e
        raise pass_failure(p.name, artifact.name, e, getattr(p, "failure_hint", None)) from e
    result = out if isinstance(out, PassResult) else PassResult(out)
    if ctx.on_publish is not None:
        try:
            ctx.on_publish(result.artifact)  # listed before it is cached: a listed file is one a re-run may replace
        except MdeployError:
            # It could not be listed (a full disk): take it back, rather than leave an artifact no report knows.
            if Path(result.artifact.path).resolve() != Path(artifact.path).resolve():
                remove_path(result.artifact.path)
            raise
    if cache:
        cache.put(key, result)
    steps.append(Step(p.name, pass_params(p), str(artifact.path), str(result.artifact.path), time.perf_counter() - t0,
                      status=result.status, note=result.note))
    return result.artifact


def pass_failure(pass_name: str, input_name: str, e: BaseException, hint: str | None = None) -> PassFailed:
    """A pass's own exception as PassFailed: the converter's actionable line, and a hint that fits it (the pass's
    own `failure_hint` when it declares one: quantize's is not a converter's)."""
    line = last_meaningful_line(e, empty="")
    low = line.lower()
    if hint is not None:
        pass
    elif "op" in low.split() or "opset" in low or "unsupported" in low or "not supported" in low:
        hint = "an op is not supported by this converter: try another --opset, or exclude or replace that op"
    else:
        hint = "run with --debug for the full traceback"
    return PassFailed(f"pass '{pass_name}' failed on {input_name}: {type(e).__name__}: {line}", hint)


def _claim_output(p: Pass, ctx: Context) -> Context:
    """The Context to run `p` with. Its output must stay under OUTDIR. When the output exists and this OUTDIR's
    report lists it, it is ours to replace (a re-run after --no-cache, a lost cache or an interruption); when its
    bytes no longer match the report, it is moved aside with a warning, never built upon."""
    output_path = getattr(p, "output_path", None)
    if output_path is None:
        return ctx
    out = Path(output_path(ctx))
    real = contained(ctx.out_dir, out)
    if ctx.force or not (out.exists() or out.is_symlink()):
        return ctx
    recorded = ctx.replaceable.get(str(real))
    if recorded is None:
        return ctx  # not ours: the pass refuses it without --force
    try:
        intact = content_hash(out) == recorded
    except OSError:
        intact = False
    if not intact:
        aside = move_aside(out, "damaged")
        ctx.warn(f"{os.path.relpath(out, ctx.out_dir)} did not match report.json (damaged or changed): "
                 f"kept as {aside.name} and rebuilt")
    return dataclasses.replace(ctx, force=True)


class Pipeline:
    """A linear chain of passes."""

    def __init__(self, passes: Sequence[Pass]):
        self.passes = list(passes)

    def check(self, source_format: str) -> None:
        """Fail fast, before any work, if a pass cannot take its predecessor's format."""
        fmt = source_format
        for p in self.passes:
            if fmt not in p.accepts:
                raise BadInput(f"pass '{p.name}' cannot take a {fmt} model (it accepts {', '.join(p.accepts)})",
                               f"put a conversion to {' or '.join(p.accepts)} before '{p.name}'")
            fmt = getattr(p, "produces", fmt)

    def run(self, artifact: Artifact, ctx: Context) -> tuple[list[Artifact], list[Step]]:
        """Run every pass in order; return every artifact produced (in order) and the steps."""
        self.check(artifact.format)
        steps: list[Step] = []
        produced: list[Artifact] = []
        for p in self.passes:
            artifact = run_pass(p, artifact, ctx, steps)
            produced.append(artifact)
        return produced, steps


@dataclass(frozen=True)
class Node:
    """One step of a plan: run `step` on the artifact called `input`, and call the result `key`."""

    key: str
    step: Pass
    input: str = "source"


@dataclass
class PlanResult:
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # node key -> one-line reason
    warnings: list[str] = field(default_factory=list)


def run_plan(nodes: Sequence[Node], inputs: dict[str, Artifact], ctx: Context, keep_going: bool = True) -> PlanResult:
    """Run a small tree of passes. With keep_going, a failed node is recorded and only its dependents skipped."""
    result = PlanResult()
    available = dict(inputs)
    for node in nodes:
        if node.input not in available:
            reason = result.failures.get(node.input, f"no artifact called '{node.input}'")
            result.failures[node.key] = f"skipped: {node.input} failed" if node.input in result.failures else reason
            result.steps.append(Step(node.step.name, pass_params(node.step), node.input, "", 0.0, status="skipped",
                                     note=result.failures[node.key]))
            continue
        try:
            out = run_pass(node.step, available[node.input], ctx, result.steps)
        except MdeployError as e:
            if not keep_going or isinstance(e, EnvironmentProblem):  # the user's disk or OUTDIR: nothing else can succeed
                raise
            result.failures[node.key] = e.message
            result.steps.append(Step(node.step.name, pass_params(node.step), str(available[node.input].path), "", 0.0,
                                     status="failed", note=e.message))
            continue
        available[node.key] = out
        result.artifacts[node.key] = out
    return result


def _run_plan_in_child(nodes: Sequence[Node], inputs: dict[str, Artifact], ctx: Context) -> PlanResult:
    configure_logging(ctx.verbose)  # a spawned process starts with Python's defaults
    result = run_plan(nodes, inputs, ctx)
    result.warnings = list(ctx.warnings)
    return result


def run_branches(branches: dict[str, Sequence[Node]], inputs: dict[str, Artifact], ctx: Context,
                 jobs: int = 1) -> dict[str, PlanResult]:
    """Run independent plans (the ONNX chain and the TFLite chain) in parallel processes when jobs > 1.

    Processes are spawned, never forked, because TensorFlow does not survive a fork.
    """
    results: dict[str, PlanResult] = {}
    if jobs <= 1 or len(branches) <= 1:
        for name, nodes in branches.items():
            ctx.stage(f"branch {name}")
            results[name] = run_plan(nodes, inputs, ctx)
        return results
    import multiprocessing

    shippable = dataclasses.replace(ctx, on_stage=None, warnings=[])  # callbacks do not cross processes (on_publish is an object that does)
    with ProcessPoolExecutor(max_workers=min(jobs, len(branches)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=ignore_interrupts_in_worker, initargs=(os.getpid(),)) as pool:
        try:
            futures = {name: pool.submit(run_in_worker, _run_plan_in_child, nodes, inputs, shippable)
                       for name, nodes in branches.items()}
            ctx.stage("running in parallel: " + ", ".join(branches))
            for name, fut in futures.items():
                results[name] = fut.result()
                ctx.warnings.extend(results[name].warnings)
        except BaseException:
            # Ctrl-C, SIGTERM or a failure: stop the branches now rather than wait for them. SIGTERM interrupts a
            # branch's pass, whose `finally` blocks remove its temporary files: wait for that before going on.
            workers = list(getattr(pool, "_processes", {}).values())
            for proc in workers:
                proc.terminate()
            deadline = time.monotonic() + 10.0
            for proc in workers:
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.is_alive():
                    proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results
