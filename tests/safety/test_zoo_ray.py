"""The zoo on Ray (issue 16): the same summary as the local backend, and a worker lost mid-run loses no finished model.

Two of the tiny ONNX models wait in their calibration source (a `module:function`) until the test opens a gate, so
the test can act while they are mid-run: it SIGKILLs one model's Ray worker (a lost worker) and the other model's
`optimize` process (what the kernel's OOM killer does), then opens the gate.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

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


def _zoo(tmp_path: Path, tiny: dict[str, Path]) -> tuple[Path, Path, Path]:
    """(manifest, gate file, working directory holding the gated data module)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    gate = tmp_path / "gate"
    (cwd / "zoo_gate.py").write_text(GATED.format(gate=str(gate), cal=str(tiny["cal"])))
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(f"""
[defaults]
recipe = "{tiny['recipe']}"
calibration = "{tiny['cal']}"
validation = "{tiny['val']}"

[[model]]
name = "a"
path = "{tiny['model']}"

[[model]]
name = "b"
path = "{tiny['model']}"
max_accuracy_drop = 0.5

[[model]]
name = "lost"
path = "{tiny['model']}"
calibration = "zoo_gate:batches"
num_cpus = 0.5

[[model]]
name = "oom"
path = "{tiny['model']}"
calibration = "zoo_gate:batches"
num_cpus = 0.5
memory = "256MB"
""")
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


def test_ray_zoo_matches_local_and_a_lost_worker_loses_no_finished_model(tiny, tmp_path, marker):
    manifest, gate, cwd = _zoo(tmp_path, tiny)
    env = child_env(marker)
    ray_dirs = set(Path(tempfile.gettempdir()).glob("mdeploy-ray-*"))
    gate.write_text("open")
    local = run_mdeploy("zoo", manifest, "-o", tmp_path / "local", "--jobs", "2", "--json", cwd=cwd, env=env)
    assert local.returncode == 0, local.stderr
    gate.unlink()

    # A Ray instance of 3 CPUs: a and b (1 CPU each) and the two gated models (0.5 each) all run at once.
    out = tmp_path / "ray"
    ray_zoo = mdeploy_cmd("zoo", manifest, "-o", out, "--backend", "ray", "--jobs", "3", "--json")
    proc = subprocess.Popen(ray_zoo, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: all((out / n / ".zoo-row.json").is_file() for n in ("a", "b")), 150, "a and b to finish")
        _wait_for(lambda: all(_worker(out, n) for n in ("lost", "oom")), 60, "the gated models to start")
        lost, oom = _worker(out, "lost"), _worker(out, "oom")
        assert lost["pid"] != oom["pid"] and {lost["attempt"], oom["attempt"]} == {1}
        assert oom["memory"] == 256 << 20 and oom["num_cpus"] == 0.5  # the manifest's reservation
        os.kill(lost["pid"], signal.SIGKILL)  # a lost worker
        _wait_for(lambda: psutil.Process(oom["pid"]).children(), 30, "oom's optimize process")
        for child in psutil.Process(oom["pid"]).children():  # killed as the kernel's OOM killer kills
            child.send_signal(signal.SIGKILL)
        _wait_for(lambda: _worker(out, "oom").get("attempt") == 2, 60, "oom's retry")
        gate.write_text("open")
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr
    assert [ln for ln in stderr.splitlines() if not ln.startswith(("warning:", "error:", "hint:"))] == [], stderr
    rows = {m["name"]: m for m in json.loads(stdout)["models"]}
    assert {n: r["status"] for n, r in rows.items()} == {"a": "ok", "b": "ok", "lost": "failed", "oom": "ok"}, rows
    assert "lost its worker" in rows["lost"]["reason"] and "1 of 4 models failed" in stderr
    retried = _worker(out, "oom")
    assert retried["memory"] == 2 * oom["memory"] and retried["pid"] != oom["pid"]  # retried once, with twice the memory
    local_rows = {m["name"]: m for m in json.loads(local.stdout)["models"]}
    for name in ("a", "b", "oom"):  # fresh results, as the local backend makes them
        assert {**rows[name], "seconds": 0} == {**local_rows[name], "seconds": 0}
    assert check_zoo_outdir(out).ok(), check_zoo_outdir(out)

    started = {n: (out / n / ".zoo-worker.json").stat().st_mtime_ns for n in ("a", "b", "oom")}
    again = subprocess.run(ray_zoo, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = {m["name"]: m for m in json.loads(again.stdout)["models"]}
    assert [n for n, r in rows.items() if not r["cached"]] == ["lost"]  # only the missing one ran
    assert {n: (out / n / ".zoo-worker.json").stat().st_mtime_ns for n in started} == started
    assert comparable(out) == comparable(tmp_path / "local")
    assert check_zoo_outdir(out).ok(), check_zoo_outdir(out)
    assert [p.name for p in out.glob(".zoo-ray-probe-*")] == []

    # Nothing outlives the runs: Ray's processes and its session files are gone.
    _wait_for(lambda: not marked_processes(marker), 60, "Ray's processes to exit")
    assert set(Path(tempfile.gettempdir()).glob("mdeploy-ray-*")) <= ray_dirs
