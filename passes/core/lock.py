"""One writer per OUTDIR: an advisory lock (fcntl.flock) on OUTDIR/.mdeploy.lock, held for a whole command.

The kernel drops a flock when its holder dies, however it dies, so a killed run never leaves a stale lock. The
lock file names its holder, which is what the error shows when a second run finds it held. The holder removes it
on release; a run that locked a file just unlinked by its holder notices (another inode is at the path) and retries.
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
    fd = _acquire(out_dir, lock_file)
    try:
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
        with contextlib.suppress(OSError):
            lock_file.unlink()  # while still held, so no one else can be holding this inode
        os.close(fd)  # releases the flock


def _acquire(out_dir: Path, lock_file: Path) -> int:
    """An fd holding the flock on the lock file now at `lock_file`, or BadInput naming the holder."""
    with storage_errors():
        out_dir.mkdir(parents=True, exist_ok=True)
    while True:
        with storage_errors():
            if not lock_file.exists():
                # created whole (never an empty file), under a temporary name, then linked into place
                tmp = out_dir / f".{LOCK_NAME}.new-{os.getpid()}"
                write_text_atomic(tmp, _holder())
                try:
                    os.link(tmp, lock_file)
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink(missing_ok=True)
            try:
                fd = os.open(lock_file, os.O_RDWR)
            except FileNotFoundError:
                continue  # its holder just removed it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BadInput(f"{out_dir} is in use by {_describe(lock_file)}",
                           "wait for that run to finish (or stop it), or write to another -o directory") from None
        try:
            if os.stat(lock_file).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # we locked a file its holder had already unlinked: try again


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
