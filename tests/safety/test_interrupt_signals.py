"""Ctrl-C and SIGTERM in the middle of every long command, on the digits model, through real processes and real
signals: one `error: interrupted (SIG…)` line naming the command and its stage, one hint, exit 130 or 143, no
traceback, clean --json stdout, no temporary file or broken output left in OUTDIR, and no child process left.

The signal is sent while the command is in its work: the moment a temporary (`.partial`) file appears under OUTDIR
(so clean-up of a half-written file is what is tested), or, where files are written too fast to catch, when the
command reports a stage that lasts (through MDEPLOY_STAGE_FILE, the file `mdeploy zoo` watches its models with).
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from safety_harness import (
    DIGITS,
    DIGITS_CAL,
    DIGITS_VAL,
    check_outdir,
    check_zoo_outdir,
    child_env,
    leftover_partials,
    lines_starting,
    marked_processes,
    mdeploy_cmd,
)

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class Interrupted:
    returncode: int
    stdout: str
    stderr: str
    partials_at_signal: list[str]
    stage_at_signal: str


def interrupt(args: list, sig: signal.Signals, ready: Callable[[Path, str], bool], *, out: Path, tmp_path: Path,
              marker: str, timeout: float = 240) -> Interrupted:
    """Run mdeploy with `args`; send `sig` once `ready(out, stage)` holds (polled every 10 ms); wait for the end."""
    stage_file = tmp_path / "stage.txt"
    env = child_env(marker, MDEPLOY_STAGE_FILE=str(stage_file))
    with open(tmp_path / "stdout", "w+") as o, open(tmp_path / "stderr", "w+") as e:
        proc = subprocess.Popen(mdeploy_cmd(*args), cwd=tmp_path, env=env, stdout=o, stderr=e)
        deadline, stage = time.monotonic() + timeout, ""
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                stage = stage_file.read_text()
            except OSError:
                pass
            try:
                if ready(out, stage):
                    break
            except OSError:  # a directory went away while it was listed
                pass
            time.sleep(0.01)
        assert proc.poll() is None, f"mdeploy ended (exit {proc.returncode}) before it could be interrupted"
        assert time.monotonic() < deadline, f"never ready to interrupt; last stage: {stage!r}"
        partials = [str(p.relative_to(out)) for p in leftover_partials(out)] if out.exists() else []
        proc.send_signal(sig)
        proc.wait(timeout=60)
        o.seek(0)
        e.seek(0)
        return Interrupted(proc.returncode, o.read(), e.read(), partials, stage)


def writing(out: Path, stage: str) -> bool:
    """An artifact's (or report's) temporary file is being written under OUTDIR (not the lock's, which comes first)."""
    return out.exists() and any(".mdeploy.lock" not in p.name for p in leftover_partials(out))


def writing_artifact(out: Path, stage: str) -> bool:
    """A branch's artifact is being written (not only the step cache's record, which can come first)."""
    return out.exists() and any(p.relative_to(out).parts[0] in ("onnx", "savedmodel", "tflite")
                                for p in leftover_partials(out))


def at_stage(text: str) -> Callable[[Path, str], bool]:
    return lambda out, stage: text in stage


def assert_interrupted(r: Interrupted, sig: signal.Signals, command: str, marker: str, *, json_out: bool = False) -> None:
    assert r.returncode == EXIT[sig], r.stderr
    errors, hints = lines_starting(r.stderr, "error:"), lines_starting(r.stderr, "hint:")
    assert len(errors) == 1 and len(hints) == 1, r.stderr
    assert errors[0].startswith(f"error: interrupted ({sig.name}) during `mdeploy {command}` ("), errors[0]
    assert "re-run" in hints[0] and "nothing half-written" in hints[0], hints[0]
    assert "Traceback" not in r.stderr, r.stderr
    if json_out:
        assert r.stdout.strip() == "" or json.loads(r.stdout) is not None
    time.sleep(0.5)  # a child being stopped gets a moment to go
    left = marked_processes(marker)
    assert left == [], f"still running: {[' '.join(p.cmdline()[:6]) for p in left]}"


@pytest.mark.slow
def test_sigterm_to_optimize_jobs2_removes_branch_temporaries(tmp_path, marker):
    """The branches run in two spawned processes: SIGTERM stops them, and their half-written files go with them."""
    out = tmp_path / "out"
    r = interrupt(["optimize", DIGITS, "--calibration", DIGITS_CAL, "--validation", DIGITS_VAL, "-o", out, "--jobs", "2",
                   "--json"], signal.SIGTERM, writing_artifact, out=out, tmp_path=tmp_path, marker=marker)
    assert any(p.startswith(("onnx/", "savedmodel/", "tflite/")) for p in r.partials_at_signal), r.partials_at_signal
    assert_interrupted(r, signal.SIGTERM, "optimize", marker, json_out=True)
    assert "optimizing" in lines_starting(r.stderr, "error:")[0]
    findings = check_outdir(out)
    assert findings.ok(), findings


def _digits_zoo(tmp_path: Path) -> Path:
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(f'[[model]]\nname = "digits"\npath = "{DIGITS}"\ncalibration = "{DIGITS_CAL}"\n'
                        f'validation = "{DIGITS_VAL}"\n')
    return manifest


def test_sigint_to_zoo_stops_its_models(tmp_path, marker):
    """Ctrl-C to a zoo once its model's process is at work: the zoo stops it, and the model's OUTDIR stays whole.
    (A branch process removing its temporary files is the test above.)"""
    manifest = _digits_zoo(tmp_path)
    out = tmp_path / "zoo"

    def model_at_work(out: Path, stage: str) -> bool:
        try:
            return bool((out / "digits" / ".zoo-stage").read_text().strip())
        except OSError:
            return False
    r = interrupt(["zoo", manifest, "-o", out, "--json"], signal.SIGINT, model_at_work, out=out, tmp_path=tmp_path,
                  marker=marker)
    assert_interrupted(r, signal.SIGINT, "zoo", marker, json_out=True)
    assert "digits" in lines_starting(r.stderr, "error:")[0]  # the model it was optimizing
    assert "resume" in lines_starting(r.stderr, "hint:")[0]
    findings = check_zoo_outdir(out)
    assert findings.ok(), findings
    assert not (out / "zoo-summary.json").exists()  # nothing claims the zoo finished


@pytest.mark.parametrize("command,args,sig", [
    ("convert", ["--to", "savedmodel,onnx,tflite"], signal.SIGINT),
    pytest.param("quantize", ["--to", "tflite", "--mode", "int8", "--calibration", DIGITS_CAL], signal.SIGTERM,
                 marks=pytest.mark.slow),
    pytest.param("prune", ["--sparsity", "0.5", "--data", DIGITS_VAL], signal.SIGINT, marks=pytest.mark.slow),
], ids=["convert-SIGINT", "quantize-SIGTERM", "prune-SIGINT"])
def test_interrupted_while_writing(command, args, sig, tmp_path, marker):
    out = tmp_path / "out"
    r = interrupt([command, DIGITS, *args, "-o", out], sig, writing, out=out, tmp_path=tmp_path, marker=marker)
    assert r.partials_at_signal
    assert_interrupted(r, sig, command, marker)
    findings = check_outdir(out)
    assert findings.ok(), findings


@pytest.mark.slow
def test_sigterm_to_bundle_while_validating(tmp_path, marker):
    from mdeploy.passes.workflows.convert import convert

    run = tmp_path / "run"
    assert convert(DIGITS, ["onnx"], run).ok  # a run with an artifact Triton can serve
    out = tmp_path / "bundle"
    r = interrupt(["bundle", run, "-o", out, "--target", "triton,k8s,kserve"], signal.SIGTERM, at_stage("validating"), out=out, tmp_path=tmp_path,
                  marker=marker)
    assert_interrupted(r, signal.SIGTERM, "bundle", marker)
    assert "validating" in lines_starting(r.stderr, "error:")[0]
    assert not out.exists()  # the bundle is published whole or not at all
    assert leftover_partials(tmp_path) == []


@pytest.mark.slow
def test_sigterm_to_zoo_on_ray_cancels_its_task(tmp_path, marker):
    """On Ray: once the model's task runs, SIGTERM to the zoo cancels it and stops the Ray instance it started."""
    pytest.importorskip("ray")
    out = tmp_path / "zoo"
    r = interrupt(["zoo", _digits_zoo(tmp_path), "-o", out, "--backend", "ray", "--jobs", "1", "--json"],
                  signal.SIGTERM, lambda out, stage: (out / "digits" / ".zoo-worker.json").exists(), out=out,
                  tmp_path=tmp_path, marker=marker)
    assert_interrupted(r, signal.SIGTERM, "zoo", marker, json_out=True)
    assert "digits" in lines_starting(r.stderr, "error:")[0]  # running, or still queued as the zoo last saw it
    findings = check_zoo_outdir(out)
    assert findings.ok(), findings
