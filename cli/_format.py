"""Small text formatters shared by the CLI's tables."""
from __future__ import annotations

from mdeploy.passes.core.limits import human_bytes  # noqa: F401 - one formatter for the library and the CLI


def fmt_float(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if abs(x) != 0 and (abs(x) < 10 ** -digits or abs(x) >= 1e6):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"
