"""Output safety: refuse to overwrite without --force, and publish each artifact by atomic rename.

An interrupted run leaves at most a `.partial` file beside the output, never a half-written artifact.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from mdeploy.passes.core.errors import EnvironmentProblem


def ensure_writable(path: Path, force: bool) -> None:
    """Fail before any work is done if `path` exists and --force was not given."""
    path = Path(path)
    if path.exists() and not force:
        raise EnvironmentProblem(f"{path} already exists", "pass --force to overwrite it, or choose another output directory")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_output(path: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it into place, on failure remove it.

    Works for files and for directories (SavedModels). The temporary keeps the suffix so that
    writers that dispatch on extension (Keras, ONNX) still work.
    """
    path = Path(path)
    ensure_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"the writer produced no output at {tmp}")
        if path.exists():
            # --force: move the old one aside first so a directory rename cannot fail half-way.
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a small text file (report.json, cache entries) atomically; these are ours to update."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)
