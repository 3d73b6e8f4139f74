"""`zoo`: `optimize` on every model of a manifest, one process per model (here, or as Ray tasks: zoo_ray.py), and
the zoo summary."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import PARTIAL_GLOBS, write_text_atomic
from mdeploy.passes.core.lock import outdir_lock
from mdeploy.passes.core.pipeline import MDEPLOY_VERSION
from mdeploy.passes.core.processes import child_env, stop
from mdeploy.passes.report.zoo_summary import SUMMARY_NAME, merge_summaries, model_summary, write_summary
from mdeploy.passes.workflows.zoo_manifest import load_manifest, parse_shard, shard

KEY_FILE = ".zoo-key"
ROW_FILE = ".zoo-row.json"
STAGE_FILE = ".zoo-stage"  # the model's process writes its stage here (read by cli/_common.progress's writer)
STAGE_ENV = "MDEPLOY_STAGE_FILE"
PROBE_PREFIX = ".zoo-ray-probe-"  # OUTDIR/: the Ray backend's proof that a node sees this OUTDIR (zoo_ray.py)
BACKENDS = ("local", "ray")


def _last_error(text: str) -> str:
    errors = [ln.split("error:", 1)[1].strip() for ln in text.splitlines() if ln.startswith("error:")]
    if errors:
        return errors[-1]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def _cached_row(model_dir: Path, key: str) -> dict[str, Any] | None:
    try:
        if (model_dir / KEY_FILE).read_text() != key or not (model_dir / "report.json").is_file():
            return None
        return json.loads((model_dir / ROW_FILE).read_text())
    except (OSError, ValueError):
        return None


def cached_result(model, out_dir: Path, version: str) -> dict[str, Any] | None:
    """The row a finished run recorded for this model, if its file, data, recipe and mdeploy are unchanged."""
    model_dir = Path(out_dir) / model.name
    prev = _cached_row(model_dir, model.cache_key(version))
    if prev is None:
        return None
    with outdir_lock(model_dir):  # nothing else writes there now; what a killed run left is swept
        pass
    return {**prev, "cached": True, "seconds": 0.0}


@dataclass(frozen=True)
class ModelOutcome:
    """How one model's `optimize` process ended: its zoo row, and what the backend needs to decide on a retry."""

    row: dict[str, Any]
    returncode: int
    timed_out: bool = False

    @property
    def killed_for_memory(self) -> bool:
        """SIGKILLed, and not by our --timeout: what the kernel's out-of-memory killer does."""
        return self.returncode == -signal.SIGKILL and not self.timed_out


def optimize_process(model, model_dir: Path, stage: dict[str, str], timeout: float | None,
                     children: list[subprocess.Popen] | None = None, trusted: bool = False,
                     stopping: threading.Event | None = None, cwd: Path | None = None) -> ModelOutcome:
    """Optimize one model in its own process, so a crash or out-of-memory cannot take the batch down; nothing is
    recorded (see `record`). The process is added to `children`, for the zoo to stop should it be interrupted
    (`stopping`: start none). It reports its stage through MODEL_DIR/.zoo-stage, inside OUTDIR."""

    stage[model.name] = "starting"
    model_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stage_file = model_dir / STAGE_FILE
    stage_file.unlink(missing_ok=True)  # a killed run's
    env = child_env({**os.environ, STAGE_ENV: str(stage_file)})  # the child dies with its parent
    if stopping is not None and stopping.is_set():
        raise KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "mdeploy.cli", *model.optimize_args(model_dir, trusted)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    if children is not None:
        children.append(proc)
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.3):
            text = read_stage(model_dir)
            if text:
                stage[model.name] = text
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\nerror: timed out after {timeout:.0f}s"
        timed_out = True
    finally:
        done.set()
        watcher.join()
        stage_file.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    report = None
    try:
        report = json.loads(out) if out.strip() else None
    except ValueError:
        report = None
    if proc.returncode < 0:
        reason = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
        status = "failed"
    elif proc.returncode == 0:
        reason, status = "", "ok"
    elif proc.returncode == 1 and report is not None:
        reason, status = _last_error(err) or "no artifact passed the accuracy gate", "rejected"
    else:
        reason, status = _last_error(err), "failed"
    row = model_summary(model.name, report, status, seconds, reason)
    return ModelOutcome(row, proc.returncode, timed_out)


def record(model, model_dir: Path, version: str, row: dict[str, Any]) -> None:
    """Record a model's result the moment it is known: an ok row is what a re-run reuses (with its cache key);
    any other clears the key, so a re-run tries the model again."""
    if row["status"] == "ok":
        write_text_atomic(model_dir / ROW_FILE, json.dumps(row, default=str))
        write_text_atomic(model_dir / KEY_FILE, model.cache_key(version))
    else:
        (model_dir / KEY_FILE).unlink(missing_ok=True)


def read_stage(model_dir: Path) -> str:
    try:
        return (Path(model_dir) / STAGE_FILE).read_text().strip()
    except OSError:
        return ""


def run_model(model, out_dir: Path, version: str, stage: dict[str, str], timeout: float | None,
              children: list[subprocess.Popen] | None = None, trusted: bool = False,
              stopping: threading.Event | None = None) -> dict[str, Any]:
    """The local backend's unit of work: the cached row, or the model optimized in its own process and recorded."""

    prev = cached_result(model, out_dir, version)
    if prev is not None:
        stage[model.name] = "cached"
        return prev
    model_dir = Path(out_dir) / model.name
    outcome = optimize_process(model, model_dir, stage, timeout, children, trusted, stopping)
    stage[model.name] = outcome.row["status"]
    record(model, model_dir, version, outcome.row)
    return outcome.row


def _run_local(models, out_dir: Path, stage: dict[str, str], *, jobs: int, timeout: float | None, trusted: bool,
               on_update) -> list[dict[str, Any]]:
    """Each model in its own process on this machine, at most `jobs` at once."""
    children: list[subprocess.Popen] = []
    stopping = threading.Event()
    futures = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        try:
            futures = [pool.submit(run_model, m, out_dir, MDEPLOY_VERSION, stage, timeout, children, trusted,
                                   stopping) for m in models]
            while not all(f.done() for f in futures):
                if on_update:
                    on_update(stage, {})
                time.sleep(0.2)
            rows = [f.result() for f in futures]
            if on_update:
                on_update(stage, {})
            return rows
        except BaseException:
            stopping.set()
            for f in futures:
                f.cancel()
            while not all(f.done() for f in futures):  # a model may be starting its process right now
                stop(children)
                time.sleep(0.1)
            stop(children)
            raise


def zoo(manifest: Path, out_dir: Path, *, jobs: int | None = None, shard_spec: str | None = None,
        timeout: float | None = None, on_update=None, trusted: bool = False, backend: str = "local",
        address: str | None = None, verbose: bool = False) -> dict[str, Any]:
    """Run every (sharded) model of the manifest; write the zoo summary; return it.

    backend "local": each model in its own process here, `jobs` at once (default 2). "ray": one Ray task per model
    (passes/workflows/zoo_ray.py) on the cluster at `address`, or on a Ray instance started for this run with
    `jobs` CPUs (default: all); OUTDIR must then be one shared path on every node. Either way each model's result
    is recorded in OUTDIR/<model> as it finishes, and a re-run skips the finished ones.

    `on_update(stage, where)` gets {model: stage} and, on Ray, {model: node}. The zoo holds OUTDIR's lock (a second
    zoo into it exits 2); each model's process holds its OUTDIR/<model>. Interrupted (Ctrl-C, SIGTERM), it stops
    its model processes (or cancels its Ray tasks) before it exits."""

    if backend not in BACKENDS:
        raise BadInput(f"unknown --backend '{backend}'", f"choose one of: {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise BadInput("--address needs --backend ray", "add --backend ray to run on that Ray cluster")
    if backend == "ray" and jobs is not None and jobs < 1:  # (the local backend has always read 0 as 1)
        raise BadInput(f"--jobs must be at least 1, got {jobs}", "pass --jobs 1 to run one model at a time")
    spec = parse_shard(shard_spec)
    models = shard(load_manifest(manifest).models, spec)
    out_dir = Path(out_dir).absolute()  # Ray workers and model processes may run elsewhere
    with outdir_lock(out_dir, sweep=False):
        for pattern in (*PARTIAL_GLOBS, PROBE_PREFIX + "*"):  # only the zoo's own files (a killed zoo's): each
            for p in out_dir.glob(pattern):                      # model's process sweeps its directory
                p.unlink(missing_ok=True)
        stage: dict[str, str] = {m.name: "queued" for m in models}
        if backend == "ray":
            from mdeploy.passes.workflows.zoo_ray import run_on_ray

            rows = run_on_ray(models, out_dir, stage, address=address, jobs=jobs, timeout=timeout, trusted=trusted,
                              verbose=verbose, on_update=on_update)
        else:
            rows = _run_local(models, out_dir, stage, jobs=2 if jobs is None else jobs, timeout=timeout,
                              trusted=trusted, on_update=on_update)
        write_summary(out_dir, rows, spec)
        return json.loads((out_dir / SUMMARY_NAME).read_text())


def zoo_merge(shard_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    rows = merge_summaries(shard_dirs)
    write_summary(out_dir, rows)
    return json.loads((Path(out_dir) / SUMMARY_NAME).read_text())
