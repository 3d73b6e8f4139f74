"""Child processes that never outlive mdeploy: bench workers, zoo models and spawned branches.

The kernel is asked (Linux prctl PR_SET_PDEATHSIG) to send a child SIGTERM when its parent dies, however the
parent dies, SIGKILL included; a child that finds its parent already gone stops at once. `stop` ends children
on an orderly exit (Ctrl-C, SIGTERM, an error): SIGTERM first, so they remove their temporary files, then SIGKILL.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

PARENT_ENV = "MDEPLOY_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child that should die with this process (see die_with_parent)."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def die_with_parent(parent_pid: int | None = None) -> None:
    """In a child: receive SIGTERM when the parent (by default the one named in MDEPLOY_PARENT_PID) dies."""
    if parent_pid is None:
        value = os.environ.get(PARENT_ENV, "")
        if not value.isdigit():
            return
        parent_pid = int(value)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def stop(procs: Iterable[subprocess.Popen], grace: float = 10.0) -> None:
    """End still-running children: SIGTERM, then SIGKILL for any still alive after `grace` seconds."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        with contextlib.suppress(OSError):
            p.terminate()
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                p.kill()
            p.wait()


@contextlib.contextmanager
def terminate_as_interrupt():
    """At the CLI edge: SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so `finally` blocks and context
    managers clean up (temporary files removed, children stopped). Restored on exit."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
