"""`inspect`: what a model file is: format, signature, size, parameters and top ops."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.passes.backends.describe import describe


def inspect_model(model: Path, *, trusted: bool = False) -> dict[str, Any]:
    return describe(model, trusted=trusted)
