"""The zoo on Ray (`mdeploy zoo --backend ray`): one Ray task per model, placed by the CPUs and memory it reserves.

Each task runs in a fresh worker process (`max_calls=1`) that starts the model's `optimize` process exactly as the
local backend does (zoo.optimize_process), so a model's row, its reasons and its files are the same on both
backends. Results are not shipped back: the task writes into OUTDIR/<model>, which must be one path shared by every
node (on one machine it trivially is), and records the model's row there the moment it finishes, so a lost worker,
node or driver loses no finished model and a re-run skips it. The driver checks that every node it runs on sees the
same OUTDIR and the same mdeploy before a model starts there.

Retries are decided here, not by Ray (`max_retries=0`): Ray would retry with the same reservation, and a model
killed for memory needs a larger one. A model killed for memory (Ray's memory monitor, or the kernel's OOM killer
SIGKILLing its process) is retried once with twice the memory; a model that fails on its own (bad input, a failed
pass, a rejected gate) is recorded like the local backend records it; a lost worker or node is recorded as failed
(what it had finished is kept, its completed steps are in its step cache) for the next run to complete.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdeploy.passes.core.errors import EnvironmentProblem, MdeployError, first_line
from mdeploy.passes.core.fsio import remove_path, write_text_atomic
from mdeploy.passes.core.limits import human_bytes
from mdeploy.passes.core.logs import quiet_native_stderr
from mdeploy.passes.core.pipeline import MDEPLOY_VERSION
from mdeploy.passes.report.zoo_summary import model_summary
from mdeploy.passes.workflows.zoo import (
    PROBE_PREFIX,
    STAGE_FILE,
    _cached_row,
    cached_result,
    optimize_process,
    read_stage,
    record,
)
from mdeploy.passes.workflows.zoo_manifest import ZooModel

RAY_HINT = "install the Ray backend: pip install 'mdeploy[ray]'"
WORKER_FILE = ".zoo-worker.json"  # OUTDIR/<model>/: where (node, worker pid) and with what reservation it runs
TEMP_PREFIX = "mdeploy-ray-"  # $TMPDIR/: a local instance's session files, removed when it stops
OWNER_FILE = "mdeploy-zoo.pid"  # in it: the zoo that owns it (pid, start time), so a SIGKILLed zoo's is swept later
# The memory a model's task reserves when the manifest gives none: a process with TensorFlow, ONNX Runtime and the
# converters loaded takes about 1 GB before the model; the model then lives in several copies at once (Keras,
# the SavedModel, tf2onnx's graph, ONNX, the quantizers' copies, the runtimes), with its activations.
# Measured: digits (0.5 MB) peaks at 0.87 GB, MobileNetV2 (14 MB) at 2.7 GB.
BASE_MEMORY = 1 << 30
MEMORY_PER_MODEL_BYTE = 128
OBJECT_STORE_BYTES = 100 << 20  # a local instance's shared-memory store: tasks return only a small row
POLL_SECONDS = 0.5


def estimate_memory(model: ZooModel) -> int:
    """1 GiB + 128 x the model's size on disk (a SavedModel directory: all its files)."""
    path = Path(model.path)
    try:
        size = (sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir()
                else path.stat().st_size)
    except OSError:
        size = 0  # it fails in its process with the reason the local backend would give
    return BASE_MEMORY + MEMORY_PER_MODEL_BYTE * size


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise EnvironmentProblem(f"--backend ray needs Ray, which is not installed ({first_line(e)})", RAY_HINT) from e
    return ray


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, verbose: bool) -> Iterator[Any]:
    """Connected to the cluster at `address`, or to a Ray instance started for this run (with `num_cpus` CPUs,
    the memory available now, no dashboard, its files in a temporary directory removed afterwards, and a token of
    its own so nothing is written to ~/.ray). Quiet unless `verbose`. Disconnects (and stops a local instance)."""

    ray = _import_ray()
    quiet = {"logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose}
    temp_dir = None
    env: dict[str, str] = {}
    if address is None:
        import psutil

        _sweep_orphaned_temp_dirs()
        temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
        (Path(temp_dir) / OWNER_FILE).write_text(_owner(psutil.Process()))
        env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
        available = psutil.virtual_memory().available
        kwargs = {"address": "local", "num_cpus": num_cpus or os.cpu_count() or 1, "include_dashboard": False,
                  "object_store_memory": OBJECT_STORE_BYTES, "_temp_dir": temp_dir,
                  # what is free now, not the machine's total: other work on the machine keeps its memory
                  "_memory": max(available - OBJECT_STORE_BYTES, 1 << 30)}
    else:
        _check_reachable(address)
        kwargs = {"address": address}
    main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        with contextlib.ExitStack() as stack:
            # Ray's driver prints the errors the cluster publishes (a worker died, ...) to sys.stdout, log_to_driver
            # or not; stdout is for --json alone. Verbose, they go to stderr; quiet, nowhere (the rows say it all).
            sink = sys.stderr if verbose else stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stdout(sink))
            stack.enter_context(_environ(env))
            _reload_auth_config()
            try:
                with quiet_native_stderr():  # the core worker's C++ retry warnings while it connects
                    ray.init(**kwargs, **quiet)
            except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
                if address is None:
                    raise EnvironmentProblem(f"could not start a local Ray instance: {first_line(e)}",
                                             "re-run with --verbose for Ray's own messages; --backend local needs no Ray") from e
                raise EnvironmentProblem(f"could not connect to the Ray cluster at {address}: {first_line(e)}",
                                         "start one with `ray start --head` and pass the address it prints "
                                         "(host:6379), or leave out --address for a Ray instance of this run") from e
            finally:
                if previous_sigterm is not None:  # ray.init installs its own; ours turns SIGTERM into a clean stop
                    signal.signal(signal.SIGTERM, previous_sigterm)
            try:
                yield ray
            finally:
                ray.shutdown()
    finally:
        _reload_auth_config()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Ray retries an address where nothing listens for minutes, deaf to Ctrl-C: try a TCP connection first."""
    target = address.split("://", 1)[-1]
    if target in ("auto", "local") or not target:
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        host, port = target, "6379"  # Ray's default GCS port
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise EnvironmentProblem(f"no Ray cluster answers at {address} ({e.strerror or e})",
                                 "start one with `ray start --head` and pass the address it prints (host:6379), or "
                                 "leave out --address for a Ray instance of this run") from e


def _owner(proc) -> str:
    return f"{proc.pid} {proc.create_time():.2f}"


def _sweep_orphaned_temp_dirs() -> None:
    """Remove the session files of local instances whose zoo is gone (SIGKILLed: it could not clean up), and only
    those: a directory whose owner still runs, or that names no owner, is left alone."""
    import psutil

    for d in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        try:
            pid, _, started = (d / OWNER_FILE).read_text().partition(" ")
            alive = psutil.pid_exists(int(pid)) and _owner(psutil.Process(int(pid))).split(" ")[1] == started
        except (OSError, ValueError, psutil.Error):
            continue
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def _reload_auth_config() -> None:
    """Ray reads RAY_AUTH_MODE/RAY_AUTH_TOKEN once and caches them; make it read them again, as Ray does itself when
    it turns token authentication on (ray._private.authentication)."""
    with contextlib.suppress(Exception):  # another Ray version: its own defaults then apply
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


@dataclass(frozen=True)
class Capacity:
    """The largest CPU count and memory any one live node offers: a task that needs more can never run."""

    cpus: float
    memory: int
    nodes: int

    @classmethod
    def of(cls, ray) -> Capacity:
        alive = [n for n in ray.nodes() if n.get("Alive")]
        cpus = max((n["Resources"].get("CPU", 0.0) for n in alive), default=0.0)
        memory = max((n["Resources"].get("memory", 0.0) for n in alive), default=0.0)
        return cls(cpus, int(memory), len(alive))


@dataclass(frozen=True)
class Reservation:
    num_cpus: float
    memory: int
    estimated: bool  # memory from estimate_memory, not the manifest


def reservation(model: ZooModel, capacity: Capacity) -> Reservation:
    """The model's num_cpus (default 1) and memory (default estimated, then capped at the largest node); a
    manifest value no node can offer is an error, not a task that waits forever."""
    cpus = 1.0 if model.num_cpus is None else model.num_cpus
    if cpus > capacity.cpus:
        raise EnvironmentProblem(f"model '{model.name}' reserves {cpus:g} CPUs; the largest Ray node has {capacity.cpus:g}",
                                 "lower its num_cpus in the manifest, add a larger node, or give a local instance "
                                 "more with --jobs")
    if model.memory is None:
        return Reservation(cpus, min(estimate_memory(model), capacity.memory), True)
    if model.memory > capacity.memory:
        raise EnvironmentProblem(f"model '{model.name}' reserves {human_bytes(model.memory)} of memory; the largest "
                                 f"Ray node offers {human_bytes(capacity.memory)}",
                                 "lower its memory in the manifest or add a node with more memory")
    return Reservation(cpus, model.memory, False)


def model_task(model: ZooModel, out_dir: Path, version: str, probe: tuple[str, str], timeout: float | None,
               trusted: bool, attempt: int, reserved: Reservation, cwd: str) -> dict[str, Any]:
    """Runs in a Ray worker: optimize one model in its own process, writing into the shared OUTDIR. Returns
    {"row", "where"}, plus "memory_kill" (not recorded: the driver retries or records it) or "problem"."""
    import ray

    where = {"host": socket.gethostname(), "node_ip": ray.util.get_node_ip_address(),
             "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "attempt": attempt,
             "num_cpus": reserved.num_cpus, "memory": reserved.memory, "started": time.time()}
    try:
        shared = (out_dir / probe[0]).read_text() == probe[1]
    except OSError:
        shared = False
    if not shared:
        return {"problem": "unshared", "where": where}
    if MDEPLOY_VERSION != version:
        return {"problem": "version", "version": MDEPLOY_VERSION, "where": where}
    model_dir = out_dir / model.name
    write_text_atomic(model_dir / WORKER_FILE, json.dumps(where))
    outcome = optimize_process(model, model_dir, {}, timeout, trusted=trusted,
                               cwd=Path(cwd) if cwd and Path(cwd).is_dir() else None)
    where["finished"] = time.time()
    if outcome.killed_for_memory:
        return {"row": outcome.row, "where": where, "memory_kill": True}
    record(model, model_dir, version, outcome.row)
    return {"row": outcome.row, "where": where}


def _node_label(where: dict[str, Any]) -> str:
    return f"{where.get('node_ip', '?')} pid {where.get('pid', '?')}"


@dataclass
class _Submitted:
    model: ZooModel
    attempt: int
    reserved: Reservation
    submitted: float


def run_on_ray(models: list[ZooModel], out_dir: Path, stage: dict[str, str], *, address: str | None,
               jobs: int | None, timeout: float | None, trusted: bool, verbose: bool, on_update=None
               ) -> list[dict[str, Any]]:
    """The zoo's Ray backend: the rows of every model, cached ones without starting Ray at all."""

    if address is not None and jobs is not None:
        raise EnvironmentProblem("--jobs sizes a Ray instance of this run; a cluster at --address has its own CPUs",
                                 "leave out --jobs, and set num_cpus per model in the manifest to spread them")
    rows: dict[str, dict[str, Any]] = {}
    todo: list[ZooModel] = []
    for m in models:
        prev = cached_result(m, out_dir, MDEPLOY_VERSION)
        if prev is not None:
            rows[m.name], stage[m.name] = prev, "cached"
        else:
            todo.append(m)
    where: dict[str, str] = {}
    for m in todo:
        stage[m.name] = "starting Ray" if address is None else "connecting to Ray"
    if on_update:
        on_update(stage, where)
    if not todo:
        return list(rows.values())

    with ray_session(address, jobs, verbose) as ray:
        capacity = Capacity.of(ray)
        reserved = {m.name: reservation(m, capacity) for m in todo}
        probe = (f"{PROBE_PREFIX}{secrets.token_hex(8)}", secrets.token_hex(16))
        write_text_atomic(out_dir / probe[0], probe[1])
        remote = ray.remote(max_calls=1, max_retries=0, retry_exceptions=False)(model_task)
        pending: dict[Any, _Submitted] = {}
        cwd = os.getcwd()

        def submit(m: ZooModel, attempt: int, r: Reservation) -> None:
            for name in (WORKER_FILE, STAGE_FILE):  # a previous run's: they would show the wrong node and stage
                (out_dir / m.name / name).unlink(missing_ok=True)
            ref = remote.options(num_cpus=r.num_cpus, memory=r.memory, name=f"mdeploy-zoo:{m.name}").remote(
                m, out_dir, MDEPLOY_VERSION, probe, timeout, trusted, attempt, r, cwd)
            pending[ref] = _Submitted(m, attempt, r, time.perf_counter())
            if attempt == 1:
                stage[m.name] = "queued"  # until a node has its CPUs and memory free

        def failed(m: ZooModel, seconds: float, reason: str) -> dict[str, Any]:
            row = model_summary(m.name, None, "failed", seconds, reason)
            record(m, out_dir / m.name, MDEPLOY_VERSION, row)
            return row

        def finish(ref) -> None:
            job = pending.pop(ref)
            m = job.model
            seconds = time.perf_counter() - job.submitted
            try:
                result = ray.get(ref)
            except ray.exceptions.OutOfMemoryError as e:
                result = {"memory_kill": True, "row": None, "ray_error": first_line(e)}
            except ray.exceptions.TaskCancelledError:
                return
            except ray.exceptions.RayTaskError as e:  # our task raised: an MdeployError stops the zoo, as locally
                cause = getattr(e, "cause", None)
                if isinstance(cause, MdeployError):
                    raise cause from None
                rows[m.name], stage[m.name] = failed(m, seconds, f"the Ray task failed: {first_line(cause or e)}"), "failed"
                return
            except ray.exceptions.RayError as e:  # the worker or its node was lost mid-model
                finished = _cached_row(out_dir / m.name, m.cache_key(MDEPLOY_VERSION))
                if finished is not None:  # it finished and recorded itself before the loss: nothing is lost
                    rows[m.name], stage[m.name] = finished, finished["status"]
                    return
                host = where.get(m.name, "its node")
                reason = f"Ray lost its worker on {host} ({type(e).__name__}): re-run to complete it"
                rows[m.name], stage[m.name] = failed(m, seconds, reason), "failed"
                return
            problem = result.get("problem")
            if problem == "unshared":
                raise EnvironmentProblem(
                    f"the Ray node {result['where']['host']} ({result['where']['node_ip']}) does not see OUTDIR "
                    f"{out_dir}", "on a cluster, -o OUTDIR (and the manifest's files) must be one shared path on every "
                                  "node, e.g. an NFS mount at the same place")
            if problem == "version":
                raise EnvironmentProblem(
                    f"the Ray node {result['where']['host']} runs mdeploy {result['version']}, this one {MDEPLOY_VERSION}",
                    "install the same mdeploy on every node of the cluster")
            if result.get("memory_kill"):
                r = job.reserved
                if job.attempt == 1:
                    bigger = Reservation(r.num_cpus, min(2 * r.memory, max(capacity.memory, r.memory)), r.estimated)
                    stage[m.name] = f"killed for memory: retrying with {human_bytes(bigger.memory)}"
                    submit(m, 2, bigger)
                    return
                why = result.get("ray_error") or (result["row"] or {}).get("reason") or "killed"
                reason = f"killed for memory twice, the second time with {human_bytes(r.memory)} reserved: {why}"
                rows[m.name], stage[m.name] = failed(m, seconds, reason), "failed"
                return
            rows[m.name], stage[m.name] = result["row"], result["row"]["status"]
            where[m.name] = _node_label(result["where"])

        def watch() -> None:
            for job in pending.values():
                name = job.model.name
                try:
                    info = json.loads((out_dir / name / WORKER_FILE).read_text())
                except (OSError, ValueError):
                    continue
                if info.get("attempt") != job.attempt:
                    continue
                where[name] = _node_label(info)
                stage[name] = read_stage(out_dir / name) or "starting"

        try:
            for m in todo:
                submit(m, 1, reserved[m.name])
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                for ref in ready:
                    finish(ref)
                watch()
                if on_update:
                    on_update(stage, where)
        except BaseException:
            for ref in pending:  # kills the worker; its model's process dies with it (PR_SET_PDEATHSIG)
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            remove_path(out_dir / probe[0])
    return list(rows.values())
