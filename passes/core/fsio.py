"""Output safety: refuse to overwrite without --force, publish each artifact by atomic rename, keep every write
inside its OUTDIR, and turn a full or read-only disk into an error the user can act on.

An interrupted run leaves at most a `.partial` file beside the output, never a half-written artifact; the next
run on that OUTDIR sweeps such files away (`sweep_partials`, called with the OUTDIR's lock held).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from mdeploy.passes.core.errors import BadInput, EnvironmentProblem, environment_error

# One path component: what a model name, --name or a manifest's `name` may be. No separators, no leading dot.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PARTIAL_GLOBS = (".*.partial-*", ".*.old-*")


def safe_component(name: str, what: str) -> str:
    """`name` if it is one harmless path component, else BadInput naming `what` (e.g. "--name")."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or name in (".", ".."):
        raise BadInput(f"{what} {name!r} is not a plain name",
                       "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit (no '/' or '..')")
    return name


def name_from_file(path: Path | str, fallback: str = "model") -> str:
    """A default name from a file's stem ("my model.v2.keras" -> "my_model"), made a safe_component."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(path).stem.split(".")[0]).lstrip("._-")[:128]
    return stem or fallback


def contained(root: Path, path: Path) -> Path:
    """`path` with symlinks resolved, if it stays under `root` (also resolved); else BadInput."""
    root_real = Path(root).resolve()
    real = Path(path).resolve()
    if real != root_real and root_real not in real.parents:
        raise BadInput(f"{path} is outside the output directory {root}",
                       "mdeploy writes only under -o OUTDIR; check names and symlinks in it")
    return real


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Re-raise an OSError about the user's disk or permissions as errors.environment_error's EnvironmentProblem."""
    try:
        yield
    except OSError as e:
        mapped = environment_error(e)
        if mapped is None:
            raise
        raise mapped from e


def ensure_writable(path: Path, force: bool) -> None:
    """Fail before any work is done if `path` exists and --force was not given."""
    path = Path(path)
    if path.exists() and not force:
        raise EnvironmentProblem(f"{path} already exists", "pass --force to overwrite it, or choose another output directory")


def remove_path(path: Path) -> None:
    """Remove a file or directory tree, if it is there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()


def move_aside(path: Path, why: str, hidden: bool = True) -> Path:
    """Rename `path` to `.NAME.<why>-<time>` beside it (kept for the user to look at; hidden, so no reader takes it
    for an artifact), and return that."""
    path = Path(path)
    aside = path.with_name(f"{'.' if hidden else ''}{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
    os.replace(path, aside)
    return aside


@contextlib.contextmanager
def atomic_output(path: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it into place, on failure remove it.

    Works for files and for directories (SavedModels). The temporary keeps the suffix so that
    writers that dispatch on extension (Keras, ONNX) still work.
    """
    path = Path(path)
    ensure_writable(path, force)
    with storage_errors():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        with storage_errors():
            yield tmp
            if not tmp.exists():
                raise RuntimeError(f"the writer produced no output at {tmp}")
            if path.exists():
                # --force: move the old one aside first so a directory rename cannot fail half-way.
                old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(path, old)
                os.replace(tmp, path)
                remove_path(old)
            else:
                os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            remove_path(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a small text file (report.json, cache entries) atomically; these are ours to update.
    On failure (a full disk) nothing is left behind and the old file is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with storage_errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            remove_path(tmp)


def sweep_partials(out_dir: Path) -> list[Path]:
    """Remove the `.partial`/`.old` files a killed run left under OUTDIR. Call only with OUTDIR's lock held: then
    no other mdeploy is writing there, so every such file is stale."""
    removed = []
    for pattern in PARTIAL_GLOBS:
        for p in Path(out_dir).rglob(pattern):
            remove_path(p)
            removed.append(p)
    return removed
