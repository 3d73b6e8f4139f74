"""The gate's bounds, declared once: each bound's name, the metric it limits and in which direction, the values it
may take and its help text.

Everything that holds or takes bounds derives from BOUNDS: the gate's Thresholds (passes/checks/gates.py), a
recipe's [validate] (passes/workflows/recipe.py), a zoo manifest's keys (passes/workflows/zoo_manifest.py),
report.json's `validation_thresholds` (passes/report/sections.py), the CLI flags (cli/gate_options.py) and the
flag a failed metric is reported under (passes/report/verdict.py). Adding a bound is one entry here, plus the metric
itself where outputs are compared (passes/checks/compare.py). Plain Python: `mdeploy --help` imports it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mdeploy.passes.core.errors import BadInput


@dataclass(frozen=True)
class Bound:
    """One bound: `name` is the field, recipe and manifest key (and, dashed, the flag); `metric` is what it limits,
    from above ("max") or below ("min"); `low`..`high` are the values it may take."""

    name: str
    metric: str
    direction: str
    help: str
    low: float | None = None
    high: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, where: str) -> float | None:
        """`value` as a float (None: not set), or BadInput naming `where` (a flag, recipe or manifest key)."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise BadInput(f"{where} must be a number, not {value!r}", f"write e.g. {self.example(where)}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise BadInput(f"{where} must be {self.range()}, got {value:g}", f"write e.g. {self.example(where)}")
        return float(value)

    def range(self) -> str:
        if self.low is not None and self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        return f"at least {self.low:g}" if self.low is not None else "a finite number"

    def example(self, where: str) -> str:
        value = {"max_accuracy_drop": "0.01", "min_agreement": "0.99", "min_sqnr": "20"}.get(self.name, "0.05")
        return f"{where} {value}" if where.startswith("--") else f"{self.name} = {value}"


BOUNDS: tuple[Bound, ...] = (
    Bound("max_accuracy_drop", "accuracy_drop", "max", low=0.0, high=1.0,
          help="Labelled classifiers: fail when accuracy drops by more than this (fraction). [default: 0.01]"),
    Bound("min_agreement", "top1_agreement", "min", low=0.0, high=1.0,
          help="Classifiers: fail when top-1 agreement with the reference is below this. [default without labels: 0.99]"),
    Bound("max_abs_error", "max_abs_error", "max", low=0.0,
          help="Fail when an output's max abs error exceeds this. [default: off]"),
    Bound("min_sqnr", "sqnr_db", "min",
          help="Fail when an output's SQNR (dB) is below this. [default without labels: 10 for classifiers, 20 otherwise]"),
    Bound("max_rel_error", "max_rel_error", "max", low=0.0,
          help="Labelled regressors: max relative MSE/MAE increase; otherwise max abs error relative to the output's "
               "range. [default with labels: 0.05]"),
)
BOUND_NAMES: tuple[str, ...] = tuple(b.name for b in BOUNDS)
BY_NAME: dict[str, Bound] = {b.name: b for b in BOUNDS}


def with_bounds(cls):
    """Class decorator, applied under @dataclass: one field `NAME: float | None = None` per bound, before the
    class's own fields (so dataclasses with them keep their field order and their JSON keys' order)."""
    own = dict(cls.__dict__.get("__annotations__", {}))
    clash = set(own) & set(BOUND_NAMES)
    if clash:
        raise TypeError(f"{cls.__name__} declares {sorted(clash)} itself; the bounds come from BOUNDS")
    for b in BOUNDS:
        setattr(cls, b.name, dataclasses.field(default=None, metadata={"bound": b}))
    cls.__annotations__ = {**{b.name: "float | None" for b in BOUNDS}, **own}
    return cls


def bounds_of(obj: Any) -> dict[str, float | None]:
    """The bounds an object with bound fields holds, by name: for building one such object from another."""
    return {name: getattr(obj, name) for name in BOUND_NAMES}


def check_bounds(values: Mapping[str, Any], where: str = "--") -> dict[str, float | None]:
    """The bounds in `values` (other keys ignored), each checked; `where` prefixes the key in messages: "--" for
    flags (--min-agreement), "recipe key 'validate." or "model[0]." for files."""
    checked = {}
    for b in BOUNDS:
        if b.name in values:
            label = b.flag if where == "--" else f"{where}{b.name}" + ("'" if where.startswith("recipe key '") else "")
            checked[b.name] = b.check(values[b.name], label)
    return checked
