"""Reports are never lost (issue 13): a re-run merges, a copied or moved OUTDIR works, a damaged file is re-verified,
and two writers into one OUTDIR do not drop each other's entries."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from safety_harness import check_outdir, child_env, content_sha256, lines_starting, mdeploy_cmd, run_mdeploy, tiny_optimize_args


def _names(out) -> set[str]:
    return {a["name"] for a in json.loads((out / "report.json").read_text())["artifacts"]}


def _assert_kept(r, out, before: set[str]) -> None:
    findings = check_outdir(out)
    assert findings.ok(), findings
    assert before <= _names(out), f"report.json lost {before - _names(out)}; stderr: {r.stderr}"
    assert r.returncode == 0, r.stderr


def test_rerun_without_cache_keeps_report(optimized, tiny, marker):
    before = _names(optimized.out)
    r = run_mdeploy(*tiny_optimize_args(tiny, optimized.out, "--no-cache"), cwd=optimized.cwd, env=child_env(marker))
    _assert_kept(r, optimized.out, before)


def test_moved_outdir_keeps_report(optimized, tiny, marker):
    before = _names(optimized.out)
    moved = optimized.root / "moved"
    os.rename(optimized.out, moved)
    r = run_mdeploy(*tiny_optimize_args(tiny, moved), cwd=optimized.cwd, env=child_env(marker))
    _assert_kept(r, moved, before)


def test_damaged_cache_keeps_report(optimized, tiny, marker):
    before = _names(optimized.out)
    for entry in (optimized.out / ".mdeploy-cache").rglob("*"):
        if entry.is_file():
            entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    r = run_mdeploy(*tiny_optimize_args(tiny, optimized.out), cwd=optimized.cwd, env=child_env(marker))
    _assert_kept(r, optimized.out, before)


def test_unreadable_report_is_kept_aside(optimized, tiny, marker):
    report = optimized.out / "report.json"
    damaged = report.read_bytes()[:200]
    report.write_bytes(damaged)
    r = run_mdeploy("quantize", tiny["model"], "--to", "onnx", "--mode", "dynamic", "-o", optimized.out,
                    cwd=optimized.cwd, env=child_env(marker))
    assert r.returncode == 0, r.stderr
    json.loads(report.read_text())
    kept = [p for p in optimized.out.iterdir() if p.is_file() and p != report and p.read_bytes() == damaged]
    assert kept, "the unreadable report.json was not kept aside"
    assert any("report.json" in ln for ln in lines_starting(r.stderr, "warning:")), r.stderr


def test_copied_outdir_is_self_contained(optimized, tiny, marker):
    copy = optimized.root / "copy"
    shutil.copytree(optimized.out, copy)
    before = _names(copy)
    r = run_mdeploy(*tiny_optimize_args(tiny, copy), cwd=optimized.cwd, env=child_env(marker))
    findings = check_outdir(copy)
    assert findings.outside == [], findings.outside
    _assert_kept(r, copy, before)


def test_truncated_final_artifact_is_reverified(optimized, tiny, marker):
    before = _names(optimized.out)
    sim = optimized.out / "onnx" / "model.sim.onnx"
    assert sim.is_file(), "the tiny optimize no longer writes onnx/model.sim.onnx: update this test"
    sim.write_bytes(sim.read_bytes()[: sim.stat().st_size // 2])
    r = run_mdeploy(*tiny_optimize_args(tiny, optimized.out), cwd=optimized.cwd, env=child_env(marker))
    if r.returncode == 2:  # refusing is fine when it names the damaged file
        errors = lines_starting(r.stderr, "error:")
        assert len(errors) == 1 and "model.sim.onnx" in errors[0], r.stderr
        return
    _assert_kept(r, optimized.out, before)


def test_two_writers_lose_nothing(optimized, tiny, marker):
    out = optimized.out
    candidates = {"slow_a": out / "onnx" / "model.sim.onnx", "slow_b": out / "onnx" / "model.int8.onnx"}
    procs = {}
    for spec, candidate in candidates.items():
        procs[spec] = subprocess.Popen(
            mdeploy_cmd("validate", tiny["model"], candidate, "--data", f"tiny_data:{spec}", "--min-agreement", "0",
                        "--max-accuracy-drop", "1", "-o", out),
            cwd=tiny["data_module_dir"], env=child_env(marker), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.2)
    results = {spec: (p, *p.communicate(timeout=300)) for spec, p in procs.items()}
    report = json.loads((out / "report.json").read_text())
    by_path = {os.path.realpath(out / a["path"]): a for a in report["artifacts"]}
    for spec, (proc, _, err) in results.items():
        other = next(p for s, p in procs.items() if s != spec)
        if proc.returncode == 2:  # refused: it must say who holds OUTDIR
            errors = lines_starting(err, "error:")
            assert len(errors) == 1 and str(other.pid) in errors[0], err
            continue
        assert proc.returncode == 0, err
        record = by_path[os.path.realpath(candidates[spec])]
        assert (record.get("validation") or {}).get("data") == f"tiny_data:{spec}", f"{spec}'s validation was lost"
    assert sum(p.returncode == 0 for p, _, _ in results.values()) >= 1
    for a in report["artifacts"]:
        assert content_sha256(out / a["path"]) == a["sha256"]
