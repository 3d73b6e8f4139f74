"""One writer per OUTDIR: an advisory lock (fcntl.flock) on OUTDIR/.mdeploy.lock, held for a whole command.

The kernel drops a flock when its holder dies, however it dies, so a killed run never leaves a stale lock. The
lock file stays (removing it would let two runs lock two different files) and names its last holder, which is
what the error shows when a second run finds it held.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import storage_errors, sweep_partials, write_text_atomic

LOCK_NAME = ".mdeploy.lock"
# The OUTDIRs this process holds. A lock belongs to the process, so a command that runs another inside it
# (quantize converts first) re-enters it instead of finding it held by itself.
_held: dict[Path, int] = {}


def _holder() -> str:
    return f"{os.getpid()} {' '.join(['mdeploy', *sys.argv[1:]])[:500]}\n"


def _describe(lock_file: Path) -> str:
    try:
        pid, _, command = lock_file.read_text().strip().partition(" ")
    except OSError:
        return "another process"
    return f"pid {pid} ({command})" if pid.isdigit() else "another process"


@contextlib.contextmanager
def outdir_lock(out_dir: Path, *, sweep: bool = True) -> Iterator[Path]:
    """Hold OUTDIR's lock (creating OUTDIR), or fail at once with BadInput naming the holder. With the lock held,
    `.partial` files a killed run left are removed (`sweep`)."""
    out_dir = Path(out_dir)
    key = out_dir.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield out_dir / LOCK_NAME
        finally:
            _held[key] -= 1
        return
    lock_file = out_dir / LOCK_NAME
    with storage_errors():
        out_dir.mkdir(parents=True, exist_ok=True)
        if not lock_file.exists():
            # created whole (never an empty file), under a temporary name, then linked into place
            with contextlib.suppress(FileExistsError):
                tmp = out_dir / f".{LOCK_NAME}.new-{os.getpid()}"
                write_text_atomic(tmp, _holder())
                try:
                    os.link(tmp, lock_file)
                finally:
                    tmp.unlink(missing_ok=True)
        fd = os.open(lock_file, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInput(f"{out_dir} is in use by {_describe(lock_file)}",
                           "wait for that run to finish (or stop it), or write to another -o directory") from None
        data = _holder().encode()
        with contextlib.suppress(OSError):  # naming the holder is a courtesy; a full disk must not stop the run
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        _held[key] = 1
        if sweep:
            sweep_partials(out_dir)
        yield lock_file
    finally:
        _held.pop(key, None)
        os.close(fd)  # releases the flock


def locks_outdir(where: str | Callable[[dict], Path | None], *, create: bool = True):
    """Decorate a workflow so that it runs holding its OUTDIR's lock. `where` names the argument holding OUTDIR,
    or maps the bound arguments to it (None: nothing to lock). With create=False a missing OUTDIR is not made
    (the workflow then reports it)."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            target = where(bound.arguments) if callable(where) else bound.arguments.get(where)
            if target is None or (not create and not Path(target).is_dir()):
                return fn(*args, **kwargs)
            with outdir_lock(Path(target)):
                return fn(*args, **kwargs)
        return locked
    return decorate
