"""`mdeploy convert`: a Keras/SavedModel/TFLite model to SavedModel (TF Serving layout), ONNX and TFLite, each parity-checked."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mdeploy.cli._common import (
    DataOpt,
    ForceOpt,
    InputShapeOpt,
    JsonOpt,
    ModelArg,
    OpsetOpt,
    OutDirOpt,
    emit_json,
    global_options,
    progress,
    stdout,
    warn,
)
from mdeploy.cli._format import fmt_float, human_bytes
from mdeploy.passes.core.errors import CheckFailed
from mdeploy.passes.defaults import DEFAULT_OPSET

if TYPE_CHECKING:
    from mdeploy.passes.report.model import Report


def render_artifacts(report: Report, out_dir: Path) -> None:
    from rich.table import Table

    from mdeploy.passes.report.sections import Checks

    table = Table(title=f"mdeploy: {report.source.path}")
    for col in ("artifact", "format", "precision", "size", "max abs err", "max rel err", "parity"):
        table.add_column(col, justify="right" if col in ("size", "max abs err", "max rel err") else "left",
                         no_wrap=col in ("artifact", "format", "precision"))
    for a in report.artifacts:
        c = a.checks or Checks()
        status = "-" if c.passed is None else ("[green]ok[/]" if c.passed else "[red]FAILED[/]")
        table.add_row(a.name, a.format, a.precision, human_bytes(a.size_bytes),
                      fmt_float(c.max_abs_error, 6), fmt_float(c.max_rel_error, 6), status)
    stdout.print(table)
    stdout.print(f"report: {out_dir / 'report.json'}", highlight=False)


def convert_cli(
    ctx: typer.Context,
    model: ModelArg,
    to: Annotated[str, typer.Option("--to", help="Comma-separated targets: savedmodel,onnx,tflite.")] = "savedmodel,onnx,tflite",
    out_dir: OutDirOpt = Path("mdeploy-out"),
    opset: OpsetOpt = DEFAULT_OPSET,
    name: Annotated[str | None, typer.Option("--name", help="Model name in the TF Serving layout (default: file stem).")] = None,
    data: DataOpt = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Parity tolerance: max abs error <= tol * max(1, max|ref|).")] = 1e-4,
    input_shape: InputShapeOpt = None,
    tflite_select_ops: Annotated[bool, typer.Option("--tflite-select-ops", help="TFLite: keep ops TFLite lacks as TensorFlow ops (last route). The model then needs the Flex delegate at run time.")] = False,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Convert a model to SavedModel (TF Serving layout), ONNX and TFLite, and check each against the source."""
    from mdeploy.calibration.shapes import parse_input_shapes
    from mdeploy.passes.workflows.convert import convert, parse_targets

    targets = parse_targets(to)
    with progress("converting", quiet=json_out) as on_stage:
        report = convert(model, targets, out_dir, input_shapes=parse_input_shapes(input_shape), tflite_select_ops=tflite_select_ops, trusted=global_options(ctx).trust, max_bytes=global_options(ctx).max_model_bytes, opset=opset, name=name, data=data, force=force, tolerance=tolerance,
                         on_stage=on_stage)
    if json_out:
        emit_json(report.to_dict())
    else:
        for w in report.warnings:
            warn(w)
        render_artifacts(report, out_dir)
    failed = [a.name for a in report.artifacts if a.checks is not None and a.checks.passed is False]
    if failed:

        raise CheckFailed(f"parity check failed for {', '.join(failed)}",
                          "see max_abs_error in report.json; a converter changed the numbers beyond --tolerance")
