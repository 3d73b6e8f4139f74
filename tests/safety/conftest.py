"""Fixtures for the safety suite (issue 13): a tiny ONNX model whose whole `optimize` runs in about 3 s without
TensorFlow, sandboxes whose surroundings are snapshotted, and a full file system."""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from safety_harness import build_tiny_onnx, child_env, kill_marked, run_mdeploy, snapshot, snapshot_diff, tiny_optimize_args


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_onnx(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def marker():
    """An environment mark for this test's processes; whatever is still running at teardown is killed."""
    mark = f"safety-{uuid.uuid4().hex[:12]}"
    yield mark
    kill_marked(mark)


class Sandbox:
    """tmp/sandbox/{out, cwd}: OUTDIR and an empty working directory inside a parent whose every other byte is
    watched, plus a victim directory beside the sandbox that a traversal would hit."""

    def __init__(self, root: Path):
        self.root = root / "sandbox"
        self.out = self.root / "out"
        self.cwd = self.root / "cwd"
        self.victim = root / "victim"
        self.cwd.mkdir(parents=True)
        self.victim.mkdir()
        (self.victim / "report.json").write_text('{"precious": true}\n')
        self.parent = root
        self._before: dict | None = None

    def watch(self) -> None:
        self._before = snapshot(self.parent, skip=(self.out,))

    def escaped(self) -> list[str]:
        assert self._before is not None, "call watch() before the run"
        return snapshot_diff(self._before, snapshot(self.parent, skip=(self.out,)))


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)


@pytest.fixture
def optimized(sandbox, tiny, marker) -> Sandbox:
    """A sandbox whose OUTDIR holds a complete `optimize` of the tiny model, made in place (a copied OUTDIR is a
    case of its own: its cache points into the original)."""
    r = run_mdeploy(*tiny_optimize_args(tiny, sandbox.out), cwd=sandbox.cwd, env=child_env(marker))
    assert r.returncode == 0, r.stderr
    return sandbox


@pytest.fixture
def full_disk(tmp_path):
    """(directory, preexec_fn, how): a directory on a file system with no space left.

    As root, a 512 KiB tmpfs filled to the last byte. Elsewhere RLIMIT_FSIZE=0 with SIGXFSZ ignored stands in:
    every write then fails with EFBIG instead of ENOSPC, which exercises the same clean-up paths."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)],
                                 capture_output=True).returncode == 0
    if mounted:
        def preexec():
            return None
        yield disk, preexec, "tmpfs"
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    else:
        def preexec():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        yield disk, preexec, "rlimit"

