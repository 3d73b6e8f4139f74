"""`zoo`: `optimize` on every model of a manifest, one process per model, and the zoo summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mdeploy.passes.core.fsio import PARTIAL_GLOBS, write_text_atomic
from mdeploy.passes.core.lock import outdir_lock
from mdeploy.passes.core.pipeline import MDEPLOY_VERSION
from mdeploy.passes.core.processes import child_env, stop
from mdeploy.passes.report.zoo_summary import SUMMARY_NAME, merge_summaries, model_summary, write_summary
from mdeploy.passes.workflows.zoo_manifest import load_manifest, parse_shard, shard

KEY_FILE = ".zoo-key"


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
        return json.loads((model_dir / ".zoo-row.json").read_text())
    except (OSError, ValueError):
        return None


def run_model(model, out_dir: Path, version: str, stage: dict[str, str], timeout: float | None,
              children: list[subprocess.Popen] | None = None, trusted: bool = False,
              stopping: threading.Event | None = None) -> dict[str, Any]:
    """Optimize one model in its own process, so a crash or out-of-memory cannot take the batch down.
    The process is added to `children`, for the zoo to stop should it be interrupted (`stopping`: start none)."""

    model_dir = out_dir / model.name
    key = model.cache_key(version)
    prev = _cached_row(model_dir, key)
    if prev is not None:
        with outdir_lock(model_dir):  # nothing else writes there now; what a killed run left is swept
            stage[model.name] = "cached"
        return {**prev, "cached": True, "seconds": 0.0}
    stage[model.name] = "starting"
    model_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.NamedTemporaryFile("w+", suffix=".stage", delete=False) as sf:
        stage_file = Path(sf.name)
    env = child_env({**os.environ, "MDEPLOY_STAGE_FILE": str(stage_file)})  # the child dies with the zoo
    if stopping is not None and stopping.is_set():
        stage_file.unlink(missing_ok=True)
        raise KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "mdeploy.cli", *model.optimize_args(model_dir, trusted)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if children is not None:
        children.append(proc)
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.3):
            try:
                text = stage_file.read_text().strip()
            except OSError:
                continue
            if text:
                stage[model.name] = text
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\nerror: timed out after {timeout:.0f}s"
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
    stage[model.name] = status
    if status == "ok":
        write_text_atomic(model_dir / ".zoo-row.json", json.dumps(row, default=str))
        write_text_atomic(model_dir / KEY_FILE, key)
    else:
        (model_dir / KEY_FILE).unlink(missing_ok=True)
    return row


def zoo(manifest: Path, out_dir: Path, *, jobs: int = 2, shard_spec: str | None = None, timeout: float | None = None,
        on_update=None, trusted: bool = False) -> dict[str, Any]:
    """Run every (sharded) model of the manifest; write the zoo summary; return it.

    The zoo holds OUTDIR's lock (a second zoo into it exits 2); each model's process holds its OUTDIR/<model>.
    Interrupted (Ctrl-C, SIGTERM), it stops its model processes before it exits."""

    spec = parse_shard(shard_spec)
    models = shard(load_manifest(manifest).models, spec)
    out_dir = Path(out_dir)
    with outdir_lock(out_dir, sweep=False):
        for pattern in PARTIAL_GLOBS:  # only the zoo's own files: each model's process sweeps its directory
            for p in out_dir.glob(pattern):
                p.unlink(missing_ok=True)
        stage: dict[str, str] = {m.name: "queued" for m in models}
        children: list[subprocess.Popen] = []
        stopping = threading.Event()
        futures = []
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            try:
                futures = [pool.submit(run_model, m, out_dir, MDEPLOY_VERSION, stage, timeout, children, trusted,
                                       stopping) for m in models]
                while not all(f.done() for f in futures):
                    if on_update:
                        on_update(stage)
                    time.sleep(0.2)
                rows = [f.result() for f in futures]
            except BaseException:
                stopping.set()
                for f in futures:
                    f.cancel()
                while not all(f.done() for f in futures):  # a model may be starting its process right now
                    stop(children)
                    time.sleep(0.1)
                stop(children)
                raise
        if on_update:
            on_update(stage)
        write_summary(out_dir, rows, spec)
        return json.loads((out_dir / SUMMARY_NAME).read_text())


def zoo_merge(shard_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    rows = merge_summaries(shard_dirs)
    write_summary(out_dir, rows)
    return json.loads((Path(out_dir) / SUMMARY_NAME).read_text())
