"""Small text formatters shared by the CLI's tables."""
from __future__ import annotations


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def fmt_float(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if abs(x) != 0 and (abs(x) < 10 ** -digits or abs(x) >= 1e6):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"
