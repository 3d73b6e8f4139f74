"""The error vocabulary: every failure a user can act on carries a message, a hint and an exit code.

The CLI maps these to `error:`/`hint:` lines in one place (cli/_app.py); nothing else prints them.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PASS_FAILED = 3


class MdeployError(Exception):
    """Base of every expected failure. `exit_code` follows the README's table."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str = "", *, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(MdeployError):
    """Missing, unreadable, corrupt or wrong-kind input, or a bad flag (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class PassFailed(MdeployError):
    """A converter or optimizer failed, or an op is unsupported (exit 3)."""

    exit_code = EXIT_PASS_FAILED


class CheckFailed(MdeployError):
    """A parity or accuracy check failed (exit 1)."""

    exit_code = EXIT_CHECK_FAILED


def first_line(e: BaseException, limit: int = 300, empty: str | None = None) -> str:
    """The first line of an exception's message (libraries' messages run to pages); for an empty message,
    `empty`, or the exception type's name."""
    text = str(e).strip()
    if text:
        return text.splitlines()[0][:limit]
    return type(e).__name__ if empty is None else empty
