"""`mdeploy simplify`: onnxsim on an ONNX model, checked with ONNX Runtime, with a before/after summary.

The pure function `simplify(...) -> Report` does the work; `simplify_cli` parses flags and renders.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mdeploy.cli._common import (
    ForceOpt,
    InputShapeOpt,
    JsonOpt,
    ModelArg,
    emit_json,
    global_options,
    progress,
    stdout,
    warn,
)
from mdeploy.cli._format import human_bytes

if TYPE_CHECKING:
    from mdeploy.passes.report.model import Report


def render_summary(report: Report, out: Path) -> None:
    from rich.table import Table


    summary = report.artifact("onnx-simplified").extra["simplify"]
    before, after = summary["before"], summary["after"]
    table = Table(title=f"mdeploy simplify: {report.source.path}")
    for col in ("", "before", "after"):
        table.add_column(col, justify="left" if not col else "right")
    for op in sorted(set(before["ops"]) | set(after["ops"])):
        b, a = before["ops"].get(op, 0), after["ops"].get(op, 0)
        table.add_row(op, str(b), str(a) if a == b else f"[bold]{a}[/]")
    table.add_section()
    table.add_row("nodes", str(before["nodes"]), str(after["nodes"]))
    table.add_row("initializers", str(before["initializers"]), str(after["initializers"]))
    table.add_row("size", human_bytes(before["size_bytes"]), human_bytes(after["size_bytes"]))
    table.add_row("time", "", f"{summary['seconds']:.2f} s")
    stdout.print(table)
    stdout.print(f"{'simplified' if summary['simplified'] else 'kept unsimplified'}: {out}", highlight=False)


def simplify_cli(
    ctx: typer.Context,
    model: ModelArg,
    out: Annotated[Path, typer.Option("--output", "-o", help="Output .onnx file.")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 3) instead of keeping the unsimplified model.")] = False,
    input_shape: InputShapeOpt = None,
    data: Annotated[str | None, typer.Option("--data", help="Inputs for the check (default: generated, seed 0): any calibration data spec.")] = None,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Simplify an ONNX model with onnxsim (constant folding, shape inference, fusions), checked with ONNX Runtime."""
    from mdeploy.calibration.shapes import parse_input_shapes
    from mdeploy.passes.workflows.simplify import simplify

    shapes = parse_input_shapes(input_shape)
    with progress("simplifying", quiet=json_out) as on_stage:
        report = simplify(model, out, strict=strict, data=data, input_shapes=shapes, force=force, on_stage=on_stage,
                          max_bytes=global_options(ctx).max_model_bytes)
    if json_out:
        emit_json(report.to_dict())
        return
    for w in report.warnings:
        warn(w)
    render_summary(report, out)
