"""The gate's options, defined once for optimize, quantize and validate, and the one way a verdict becomes an exit.

The bound flags come from passes/checks/bounds.py: a command declares one `bounds` parameter, and `gate_flags` puts
an option per bound in its place and hands the command the values as a dict."""
from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Annotated

import typer

from mdeploy.passes.checks.bounds import BOUNDS, check_bounds
from mdeploy.passes.core.errors import MdeployError

if TYPE_CHECKING:  # the gate itself imports numpy: not at --help time
    from mdeploy.passes.checks.gates import Thresholds
    from mdeploy.passes.report.verdict import Verdict

StrictGateOpt = Annotated[bool, typer.Option("--strict", help="Fail when nothing could be gated (no labels and no bound, or random data).")]
# The placeholder a command declares where its bound flags go (see gate_flags).
BoundsParam = dict[str, float | None] | None


def gate_flags(command):
    """Give a Typer command one `--FLAG` option per gate bound, where its `bounds` parameter stands; the command is
    called with `bounds={name: value or None}`, each value checked (a bad one is exit 2 naming its flag)."""
    signature = inspect.signature(command, eval_str=True)
    params: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        if p.name != "bounds":
            params.append(p)
            continue
        params += [inspect.Parameter(b.name, p.kind, default=None,
                                     annotation=Annotated[float | None, typer.Option(b.flag, help=b.help)])
                   for b in BOUNDS]

    @functools.wraps(command)
    def with_bounds(*args, **kwargs):
        bounds = {b.name: kwargs.pop(b.name, None) for b in BOUNDS}
        return command(*args, bounds=check_bounds(bounds), **kwargs)

    with_bounds.__signature__ = signature.replace(parameters=params)  # what Typer reads the options from
    with_bounds.__annotations__ = {p.name: p.annotation for p in params} | {"return": signature.return_annotation}
    return with_bounds


def thresholds(bounds: dict[str, float | None], enabled: bool = True) -> Thresholds:
    from mdeploy.passes.checks.gates import Thresholds

    return Thresholds(**bounds, enabled=enabled)


def raise_for_verdict(verdict: Verdict) -> None:
    """Exit as the verdict says: nothing when it passed, else its first cause, hint and exit code."""
    if not verdict.ok:
        raise MdeployError(verdict.message(), verdict.hint(), exit_code=verdict.exit_code)
