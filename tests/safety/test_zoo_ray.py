"""The zoo on Ray (issue 16): the same summary as the local backend, and a worker lost mid-run loses no finished model.

Some of the tiny ONNX models wait in their calibration source (a `module:function`) until the test opens a gate, so
the test can act while they are mid-run: it SIGKILLs one model's Ray worker (a lost worker) and, in the slow test,
another model's `optimize` process (as the kernel's OOM killer would), then opens the gate.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from safety_harness import check_zoo_outdir, child_env, marked_processes, mdeploy_cmd, run_mdeploy

GATED = '''import time
from pathlib import Path

import numpy as np

def batches():
    deadline = time.monotonic() + 300
    while not Path({gate!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    yield {{"x": np.load({cal!r})["x"]}}
'''


def _zoo(tmp_path: Path, tiny: dict[str, Path], models: str) -> tuple[Path, Path, Path]:
    """(manifest, gate file, working directory holding the gated data module `zoo_gate`)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    gate = tmp_path / "gate"
    (cwd / "zoo_gate.py").write_text(GATED.format(gate=str(gate), cal=str(tiny["cal"])))
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(f'[defaults]\nrecipe = "{tiny["recipe"]}"\ncalibration = "{tiny["cal"]}"\n'
                        f'validation = "{tiny["val"]}"\n\n' + models.replace("MODEL", str(tiny["model"])))
    return manifest, gate, cwd


def _worker(out: Path, name: str) -> dict:
    """What the model's Ray task wrote when it started: node, worker pid, attempt, reservation."""
    try:
        return json.loads((out / name / ".zoo-worker.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def comparable(out_dir: Path) -> dict[str, object]:
    """zoo-summary.{json,md,html} without what says how long a result took or that it was reused (seconds,
    cached): what must be identical between the local and the Ray backend."""
    data = json.loads((out_dir / "zoo-summary.json").read_text())
    for m in data["models"]:
        m.pop("seconds")
        m.pop("cached")
    md = (out_dir / "zoo-summary.md").read_text().replace(" (cached)", "")
    md = re.sub(r"\| [0-9.]+s \|$", "| |", md, flags=re.M)
    html = (out_dir / "zoo-summary.html").read_text().replace(" (cached)", "")
    html = re.sub(r"<td>[0-9.]+s</td>", "<td></td>", html)
    return {"json": data, "md": md, "html": html}


def _rows(stdout: str) -> dict[str, dict]:
    return {m["name"]: m for m in json.loads(stdout)["models"]}


def _only_our_lines(stderr: str) -> list[str]:
    """Lines that are not mdeploy's own warning/error/hint: Ray must add none."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("warning:", "error:", "hint:"))]


def _run_with_losses(tmp_path, tiny, marker, models: str, ray_args: list[str], *, kill_memory: str | None = None,
                     env_extra: dict[str, str] | None = None):
    """Local run with the gate open; then a Ray run in which model `lost` loses its worker mid-run (and model
    `kill_memory`, if given, its optimize process); then the Ray re-run. Returns (ray OUTDIR, first rows,
    re-run rows, local OUTDIR, the killed worker files)."""
    manifest, gate, cwd = _zoo(tmp_path, tiny, models)
    env = child_env(marker, **(env_extra or {}))
    gate.write_text("open")
    local = run_mdeploy("zoo", manifest, "-o", tmp_path / "local", "--jobs", "2", "--json", cwd=cwd, env=env)
    assert local.returncode == 0, local.stderr
    gate.unlink()

    out = tmp_path / "ray"
    ray_zoo = mdeploy_cmd("zoo", manifest, "-o", out, "--backend", "ray", *ray_args, "--json")
    proc = subprocess.Popen(ray_zoo, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    gated = ["lost"] + ([kill_memory] if kill_memory else [])
    try:
        _wait_for(lambda: (out / "a" / ".zoo-row.json").is_file(), 150, "model a to finish")
        _wait_for(lambda: all(_worker(out, n) for n in gated), 60, "the gated models to start")
        killed = {n: _worker(out, n) for n in gated}
        workers = {_worker(out, "a")["pid"], *(w["pid"] for w in killed.values())}
        assert len(workers) == 1 + len(gated)  # a worker process per model
        os.kill(killed["lost"]["pid"], signal.SIGKILL)  # a lost worker
        if kill_memory:
            pid = killed[kill_memory]["pid"]
            _wait_for(lambda: psutil.Process(pid).children(), 30, f"{kill_memory}'s optimize process")
            for child in psutil.Process(pid).children():  # killed as the kernel's OOM killer kills
                child.send_signal(signal.SIGKILL)
            _wait_for(lambda: _worker(out, kill_memory).get("attempt") == 2, 60, f"{kill_memory}'s retry")
        gate.write_text("open")
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr
    assert _only_our_lines(stderr) == [], stderr
    first = _rows(stdout)
    assert first["lost"]["status"] == "failed" and "lost its worker" in first["lost"]["reason"], first["lost"]
    assert f"1 of {len(first)} models failed" in stderr
    local_rows = _rows(local.stdout)
    for name in set(first) - {"lost"}:  # fresh results, as the local backend makes them
        assert {**first[name], "seconds": 0} == {**local_rows[name], "seconds": 0}
    assert check_zoo_outdir(out).ok(), check_zoo_outdir(out)

    # The re-run completes only the missing model: the finished ones are neither lost nor run again.
    started = {n: (out / n / ".zoo-worker.json").stat().st_mtime_ns for n in set(first) - {"lost"}}
    again = subprocess.run(ray_zoo, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert _only_our_lines(again.stderr) == [], again.stderr
    rows = _rows(again.stdout)
    assert [n for n, r in rows.items() if not r["cached"]] == ["lost"]
    assert {n: (out / n / ".zoo-worker.json").stat().st_mtime_ns for n in started} == started
    assert comparable(out) == comparable(tmp_path / "local")
    assert check_zoo_outdir(out).ok(), check_zoo_outdir(out)
    assert [p.name for p in out.glob(".zoo-ray-probe-*")] == []
    # Both backends read the same records: nothing runs again, and a fully cached Ray run never connects to Ray.
    for backend in (["--backend", "local"], ["--backend", "ray", "--address", "127.0.0.1:9"]):
        cached = run_mdeploy("zoo", manifest, "-o", out, *backend, "--json", cwd=cwd, env=env)
        assert cached.returncode == 0 and all(r["cached"] for r in _rows(cached.stdout).values()), cached.stderr
    return out, first, rows, killed


def test_ray_zoo_matches_local_and_a_lost_worker_loses_no_finished_model(tiny, tmp_path, marker):
    """A Ray instance started for the run, with 2 CPUs: model a and the gated model run at once, each in its own
    worker process."""
    # A TMPDIR of its own (short: Ray's socket paths must fit in 107 bytes), so a suite running beside this one
    # on the same machine cannot put its session files where this test looks for leftovers.
    run_tmp = Path(tempfile.mkdtemp(prefix="zr"))
    token_file = Path.home() / ".ray" / "auth_token"
    had_token = token_file.exists()
    models = '[[model]]\nname = "a"\npath = "MODEL"\n\n[[model]]\nname = "lost"\npath = "MODEL"\ncalibration = "zoo_gate:batches"\n'
    _run_with_losses(tmp_path, tiny, marker, models, ["--jobs", "2"], env_extra={"TMPDIR": str(run_tmp)})
    # Nothing outlives the runs: Ray's processes and its session files are gone.
    _wait_for(lambda: not marked_processes(marker), 60, "Ray's processes to exit")
    assert list(run_tmp.glob("mdeploy-ray-*")) == []
    shutil.rmtree(run_tmp, ignore_errors=True)
    assert token_file.exists() == had_token  # the instance's token lived in its environment, not in ~/.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_zoo_on_an_existing_cluster_retries_a_memory_kill_with_more_memory(tiny, tmp_path, marker):
    """`ray start --head` (3 CPUs, token authentication), then `--address`: four models at once; one loses its
    worker, one is SIGKILLed as for memory and is retried once with twice its reservation."""
    from ray.util import get_node_ip_address

    port, token = _free_port(), os.urandom(16).hex()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    temp = Path(tempfile.mkdtemp(prefix="mdeploy-test-ray-"))
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=3", "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
                            env=child_env(marker, **auth), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = f"{get_node_ip_address()}:{port}"

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex((address.split(":")[0], port)) == 0
        _wait_for(listening, 90, "the Ray head")
        models = ('[[model]]\nname = "a"\npath = "MODEL"\n\n[[model]]\nname = "b"\npath = "MODEL"\nmax_accuracy_drop = 0.5\n\n'
                  '[[model]]\nname = "lost"\npath = "MODEL"\ncalibration = "zoo_gate:batches"\nnum_cpus = 0.5\n\n'
                  '[[model]]\nname = "oom"\npath = "MODEL"\ncalibration = "zoo_gate:batches"\nnum_cpus = 0.5\nmemory = "256MB"\n')
        out, first, _, killed = _run_with_losses(tmp_path, tiny, marker, models, ["--address", address],
                                                 kill_memory="oom", env_extra=auth)
        assert first["oom"]["status"] == "ok"
        assert killed["oom"]["memory"] == 256 << 20 and killed["oom"]["num_cpus"] == 0.5  # the manifest's reservation
        retried = _worker(out, "oom")
        assert retried["attempt"] == 2 and retried["memory"] == 2 * killed["oom"]["memory"]
        assert retried["pid"] != killed["oom"]["pid"]
    finally:
        head.terminate()
        head.wait(timeout=60)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
