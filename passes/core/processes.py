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
from dataclasses import dataclass

from mdeploy.passes.core.errors import Interrupted

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


@dataclass
class SignalsReceived:
    """What interrupt_on_signals saw: the Interrupted it raised (one at most), whatever became of it on its way out."""

    interrupt: Interrupted | None = None


@contextlib.contextmanager
def interrupt_on_signals():
    """At the CLI edge: SIGINT and SIGTERM raise errors.Interrupted in the main thread, so `finally` blocks and
    context managers clean up (temporary files removed, children stopped) and the CLI can say which signal ended
    the run (`SignalsReceived.interrupt`, which outlives libraries that turn the exception into an exit code).
    Only the first signal interrupts: one arriving while that clean-up runs is ignored, so the clean-up
    finishes (children get SIGTERM, then SIGKILL after `stop`'s grace). Restored on exit."""
    import threading

    signals = SignalsReceived()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return

    def interrupt(signum, frame):
        if signals.interrupt is not None:
            return
        signals.interrupt = Interrupted(signum)
        raise signals.interrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def ignore_interrupts_in_worker(parent_pid: int) -> None:
    """A pool worker's initializer: die with the parent (die_with_parent), and leave Ctrl-C, which the terminal
    sends to the whole process group, to the parent, which stops its workers in order (`run_in_worker`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


def run_in_worker(fn, *args):
    """Call fn(*args) in a pool worker with SIGTERM raising Interrupted, so the parent's terminate() removes the
    task's temporary files (its `finally` blocks run) instead of killing it mid-write."""
    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it for good
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return fn(*args)
    finally:
        signal.signal(signal.SIGTERM, previous)
