"""The error vocabulary: every failure a user can act on carries a message, a hint and an exit code.

The CLI maps these to `error:`/`hint:` lines in one place (cli/__init__.py); nothing else prints them.
"""
from __future__ import annotations

import errno
import signal

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PASS_FAILED = 3
# An interrupted run exits as a shell reports a process killed by the signal: 128 + its number.
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class MdeployError(Exception):
    """Base of every expected failure. `exit_code` follows the README's table."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str = "", *, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


    def __reduce__(self):
        # Errors cross process boundaries (parallel branches): keep the hint and exit code, not just the message.
        return (_rebuild, (type(self), self.message, self.hint, self.exit_code))


def _rebuild(cls, message: str, hint: str, exit_code: int) -> MdeployError:
    return cls(message, hint, exit_code=exit_code)


class BadInput(MdeployError):
    """Missing, unreadable, corrupt or wrong-kind input, or a bad flag (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class EnvironmentProblem(BadInput):
    """The user's disk or OUTDIR is in the way (full, read-only, a file, an output that exists): no other step of
    the run can succeed either, so a plan stops at the first one (exit 2)."""


class PassFailed(MdeployError):
    """A converter or optimizer failed, or an op is unsupported (exit 3)."""

    exit_code = EXIT_PASS_FAILED


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM arrived (see processes.interrupt_on_signals). A KeyboardInterrupt, not an
    MdeployError, so that no `except Exception` on the way out swallows it while every `finally` runs: temporary
    files are removed and child processes stopped before the CLI prints it. `doing` names the stage it hit, when
    the CLI knew one."""

    def __init__(self, signum: int, doing: str | None = None):
        self.signum = int(signum)
        self.doing = doing
        super().__init__(self.signal_name)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __reduce__(self):
        return (type(self), (self.signum, self.doing))


class CheckFailed(MdeployError):
    """A parity or accuracy check failed (exit 1)."""

    exit_code = EXIT_CHECK_FAILED


# Errors of the user's environment, not of a pass: each with a hint that fits it.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "free space on that disk, or write to another -o OUTDIR",
    errno.EDQUOT: "free space within your quota, or write to another -o OUTDIR",
    errno.EROFS: "the file system is read-only: pass a writable -o OUTDIR",
    errno.EFBIG: "the file is larger than this system lets a process write (ulimit -f): raise the limit or write elsewhere",
    errno.EACCES: "you may not write there: pass a writable -o OUTDIR or fix its permissions",
    errno.EPERM: "you may not write there: pass a writable -o OUTDIR or fix its permissions",
    errno.ENOTDIR: "a path component is a file, not a directory: pass a directory as -o OUTDIR",
    errno.EEXIST: "a file is in the way: pass a directory as -o OUTDIR, or remove the file",
    errno.EISDIR: "a directory is where a file should be: remove it or choose another output",
}


def environment_error(e: BaseException) -> EnvironmentProblem | None:
    """The OSError about the user's disk or permissions in `e` or its causes, as BadInput (exit 2), else None."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
            where = f": {e.filename}" if e.filename else ""
            return EnvironmentProblem(f"cannot write{where} ({e.strerror or errno.errorcode.get(e.errno, e.errno)}, "
                            f"{errno.errorcode.get(e.errno, '')})", _ENVIRONMENT_ERRNOS[e.errno])
        e = e.__cause__ or e.__context__
        seen += 1
    return None


_NOISE = ("traceback", "file \"", "<unknown>:0: note", "note:", "see instructions", "stack trace", "^", "during handling")


def last_meaningful_line(e: BaseException, empty: str | None = None) -> str:
    """What a converter's multi-line message says to act on: its last line that names an error, else its last
    non-trivial line (library messages put tracebacks and notes first and the cause last)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.lower().startswith(_NOISE)] or lines
    if not lines:
        return type(e).__name__ if empty is None else empty
    named = [ln for ln in lines if "error" in ln.lower() or "unsupported" in ln.lower() or "not supported" in ln.lower()]
    return (named or lines)[-1][:1000]


def first_line(e: BaseException, limit: int = 300, empty: str | None = None) -> str:
    """The first line of an exception's message (libraries' messages run to pages); for an empty message,
    `empty`, or the exception type's name."""
    text = str(e).strip()
    if text:
        return text.splitlines()[0][:limit]
    return type(e).__name__ if empty is None else empty
