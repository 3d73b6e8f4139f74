"""Benchmarking: latency percentiles, throughput, load time and peak memory of one artifact on its own runtime.

Each measurement runs in a fresh subprocess so that peak RSS belongs to that model alone and one
runtime's thread pools or caches cannot colour the next. The runtime is reached only through load_runner.
This is a benchmark, not a test: numbers depend on the machine, which is recorded beside them.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mdeploy.calibration.sources import RandomSource
from mdeploy.passes.backends import backend, load_runner
from mdeploy.passes.backends.tf_env import import_tf
from mdeploy.passes.core.artifact import Artifact, trust_from_json, trust_to_json
from mdeploy.passes.core.errors import BadInput, MdeployError, PassFailed, first_line
from mdeploy.passes.core.processes import child_env, die_with_parent

BENCH_TIMEOUT_S = 1800


@lru_cache(maxsize=1)
def machine() -> dict[str, Any]:
    """The facts a latency number needs beside it: CPU model, cores, OS, Python."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "memory_bytes": psutil.virtual_memory().total, "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def runtime_version(fmt: str) -> str:
    pkg = backend(fmt).package
    try:
        return f"{pkg} {version(pkg)}"
    except PackageNotFoundError:
        return pkg


def bench(artifact: Artifact, batch: int = 1, threads: int | None = None, warmup: int = 10, runs: int = 100) -> dict[str, Any]:
    """Measure `artifact` in its own subprocess. Returns a JSON-ready dict:

    name, format, path, precision, runtime, batch, threads (None = the runtime's default), warmup, runs,
    latency_ms {p50, p90, p99, mean, min, max}, throughput_per_s (samples/s), load_seconds,
    peak_rss_bytes (the measuring process's peak), baseline_rss_bytes (before the runtime was imported),
    runtime_rss_bytes (after importing the runtime, before loading the model: peak minus this is the model's share),
    machine {cpu, logical_cores, physical_cores, memory_bytes, os, python}.
    """
    if batch < 1 or runs < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise BadInput(f"bench needs batch >= 1, runs >= 1, warmup >= 0 and threads >= 1 (got batch={batch}, runs={runs}, "
                       f"warmup={warmup}, threads={threads})", "pass positive numbers")
    job = {"format": artifact.format, "path": str(artifact.path), "batch": batch, "threads": threads,
           "warmup": warmup, "runs": runs, "trusted": trust_to_json(artifact.trusted)}
    with tempfile.TemporaryDirectory(prefix="mdeploy-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        env = child_env({**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")})
        try:
            proc = subprocess.run([sys.executable, "-m", "mdeploy.passes.checks.bench", json.dumps(job), str(result_path)],
                                  capture_output=True, text=True, env=env, timeout=BENCH_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise PassFailed(f"benchmarking {artifact.path} took longer than {BENCH_TIMEOUT_S}s",
                             "lower --runs or --batch") from e
        if not result_path.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            raise PassFailed(f"the benchmark process for {artifact.path} died: {tail[0][:300]}",
                             "re-run with --debug; the runtime may have crashed or run out of memory")
        result = json.loads(result_path.read_text())
    if "error" in result:
        err = result["error"]
        raise MdeployError(err["message"], err.get("hint", ""), exit_code=err.get("exit_code", 3))
    return {"name": artifact.name, "format": artifact.format, "path": str(artifact.path), "precision": artifact.precision,
            "runtime": runtime_version(artifact.format), **result, "machine": machine()}


def _feeds(inputs, batch: int):
    return next(iter(RandomSource(inputs, samples=batch, batch_size=batch, seed=0)))


def _import_runtime(fmt: str) -> None:
    # Importing the runtime library is not loading the model: keep it out of load_seconds.
    if fmt in ("keras", "savedmodel"):
        import_tf()
    elif fmt == "onnx":
        import onnxruntime  # noqa: F401
    else:
        import ai_edge_litert.interpreter  # noqa: F401


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """The measurement itself, run inside the subprocess."""
    import numpy as np


    baseline = _rss_bytes()
    _import_runtime(job["format"])
    runtime = _rss_bytes()
    t0 = time.perf_counter()
    runner = load_runner(job["format"], Path(job["path"]), job["threads"], trusted=trust_from_json(job.get("trusted", False)))
    load_seconds = time.perf_counter() - t0
    feeds = _feeds(runner.inputs, job["batch"])
    for _ in range(job["warmup"]):
        runner(feeds)
    times = np.empty(job["runs"], dtype=np.float64)
    start = time.perf_counter()
    for i in range(job["runs"]):
        t = time.perf_counter_ns()
        runner(feeds)
        times[i] = (time.perf_counter_ns() - t) / 1e6
    total = time.perf_counter() - start
    peak = _peak_rss_bytes()
    return {
        "batch": job["batch"], "threads": job["threads"], "warmup": job["warmup"], "runs": job["runs"],
        "latency_ms": {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90)),
                       "p99": float(np.percentile(times, 99)), "mean": float(times.mean()),
                       "min": float(times.min()), "max": float(times.max())},
        "throughput_per_s": job["batch"] * job["runs"] / total,
        "load_seconds": load_seconds,
        "peak_rss_bytes": int(peak),
        "baseline_rss_bytes": int(baseline),
        "runtime_rss_bytes": int(runtime),
    }


def _peak_rss_bytes() -> int:
    """This process's high-water RSS. VmHWM starts afresh at exec; getrusage's ru_maxrss would carry the
    parent's peak across fork+exec, charging TensorFlow's memory to an ONNX model benchmarked after it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _main(argv: list[str]) -> int:
    die_with_parent()  # never measure on, at full CPU, for an mdeploy that is gone
    job, result_path = json.loads(argv[0]), Path(argv[1])
    try:
        result = measure(job)
    except MdeployError as e:
        result = {"error": {"message": e.message, "hint": e.hint, "exit_code": e.exit_code}}
    except Exception as e:  # noqa: BLE001 - reported to the parent as a failed pass
        result = {"error": {"message": f"benchmarking {job['path']} failed: {type(e).__name__}: {first_line(e, empty='')}",
                            "hint": "re-run with --debug", "exit_code": 3}}
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
