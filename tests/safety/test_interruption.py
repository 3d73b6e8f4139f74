"""Clean interruption and full disks (issue 13): leftovers of a killed run are removed, a killed command stops its
workers, and a write that fails for lack of space leaves no partial file."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from safety_harness import (
    check_outdir,
    child_env,
    fill_disk,
    leftover_partials,
    lines_starting,
    marked_processes,
    mdeploy_cmd,
    run_mdeploy,
    tiny_optimize_args,
)


def test_stale_partials_removed_by_next_run(optimized, tiny, marker):
    stale = [optimized.out / "onnx" / ".model.partial-deadbeef.onnx", optimized.out / ".report.json.partial-deadbeef"]
    an_hour_ago = time.time() - 3600
    for p in stale:
        p.write_bytes(b"half a model")
        os.utime(p, (an_hour_ago, an_hour_ago))
    r = run_mdeploy(*tiny_optimize_args(tiny, optimized.out), cwd=optimized.cwd, env=child_env(marker))
    assert r.returncode == 0, r.stderr
    assert leftover_partials(optimized.out) == []


def test_sigterm_to_bench_stops_its_worker(tiny, tmp_path, marker):
    proc = subprocess.Popen(mdeploy_cmd("bench", tiny["model"], "--warmup", "0", "--runs", "10000000"),
                            cwd=tmp_path, env=child_env(marker), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [p for p in marked_processes(marker) if p.pid != proc.pid]:
        time.sleep(0.1)
    assert [p for p in marked_processes(marker) if p.pid != proc.pid], "bench never started a worker"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    time.sleep(2)  # a worker that is being stopped gets a moment
    left = marked_processes(marker)
    assert left == [], f"still running after SIGTERM: {[' '.join(p.cmdline()[:6]) for p in left]}"


def _assert_clean_failure(r, disk) -> None:
    errors = lines_starting(r.stderr, "error:")
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1, r.stderr
    assert [p.name for p in leftover_partials(disk)] == []
    assert [p.name for p in disk.rglob("*") if p.is_file() and p.stat().st_size == 0] == []


def test_report_on_full_disk_leaves_no_partial(optimized, full_disk, marker):
    disk, preexec, how = full_disk
    if how == "tmpfs":
        fill_disk(disk)
    r = run_mdeploy("report", optimized.out, "--format", "html", "-o", disk / "report.html",
                    cwd=optimized.cwd, env=child_env(marker), preexec_fn=preexec)
    _assert_clean_failure(r, disk)
    assert not (disk / "report.html").exists()


def test_validate_on_full_disk_leaves_no_partial(optimized, full_disk, tiny, marker):
    disk, preexec, how = full_disk
    out = disk / "out"
    shutil.copytree(optimized.out, out, ignore=shutil.ignore_patterns(".mdeploy-cache", "*.html", "*.md"))
    before = (out / "report.json").read_bytes()
    if how == "tmpfs":
        fill_disk(disk)
    r = run_mdeploy("validate", tiny["model"], out / "onnx" / "model.int8.onnx", "--data", tiny["val"],
                    "--min-agreement", "0", "--max-accuracy-drop", "1", "-o", out,
                    cwd=optimized.cwd, env=child_env(marker), preexec_fn=preexec)
    _assert_clean_failure(r, disk)
    assert (out / "report.json").read_bytes() == before
    findings = check_outdir(out)
    assert findings.ok(), findings
