"""`mdeploy quantize`: int8 / dynamic / fp16 ONNX or TFLite artifacts, each compared with its float parent on held-out data.

The pure function `quantize(...) -> Report` does the work; `quantize_cli` parses flags and renders.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mdeploy.cli._common import (
    ForceOpt,
    ImageColorOpt,
    ImageLayoutOpt,
    ImageMeanOpt,
    ImageScaleOpt,
    ImageSizeOpt,
    ImageStdOpt,
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
from mdeploy.cli.gate_options import BoundsParam, gate_flags, thresholds
from mdeploy.passes.core.errors import CheckFailed
from mdeploy.passes.defaults import DEFAULT_OPSET, DEFAULT_SAMPLES

if TYPE_CHECKING:
    from mdeploy.passes.report.model import Report


def render_quality(report: Report, out_dir: Path, names: list[str]) -> None:
    from rich.table import Table


    table = Table(title=f"mdeploy quantize: {report.source.get('path')}")
    for col in ("artifact", "precision", "size", "size ratio", "top-1 agree", "max abs err", "SQNR dB", "accuracy", "Δacc", "gate"):
        table.add_column(col, justify="left" if col in ("artifact", "precision") else "right", no_wrap=col == "artifact")
    verdict = report.verdict
    for a in report.artifacts:
        q = a.quality
        if q is None or a.name not in names:
            continue
        acc = "-" if q.accuracy is None else f"{q.parent_accuracy:.4f} -> {q.accuracy:.4f}"
        change = "-" if q.accuracy_drop is None else f"{0.0 - 100 * q.accuracy_drop:+.2f} pp"
        v = verdict.artifacts[a.name]
        status = {"ok": "[green]ok[/]", "rejected": "[red]rejected[/]"}.get(v.status, "not gated")
        table.add_row(a.name, a.precision, human_bytes(a.size_bytes), f"{q.size_ratio:.3f}",
                      fmt_float(q.top1_agreement, 4), fmt_float(q.max_abs_error, 5),
                      fmt_float(q.sqnr_db, 1), acc, change, status)
        if v.gate:
            stdout.print(f"{a.name} gate: {v.gate}", highlight=False)
    stdout.print(table)
    stdout.print(f"held-out data: {', '.join(sorted({report.artifact(n).quality.data for n in names}))}", highlight=False)
    stdout.print(f"report: {out_dir / 'report.json'}", highlight=False)


def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(v.strip() for item in values or [] for v in item.split(",") if v.strip())


@gate_flags
def quantize_cli(
    ctx: typer.Context,
    model: ModelArg,
    to: Annotated[str, typer.Option("--to", help="Target format: onnx or tflite.")] = "onnx",
    mode: Annotated[str, typer.Option("--mode", help="int8 (static, calibrated), dynamic (int8 weights) or fp16.")] = "int8",
    out_dir: OutDirOpt = Path("mdeploy-out"),
    calibration: Annotated[str | None, typer.Option("--calibration", help="Calibration data: .npz, .csv, a directory of .npy files or images, package.module:function (runs that code), or `random`.")] = None,
    validation: Annotated[str | None, typer.Option("--validation", help="Held-out data to compare with the float model (default: the last fifth of --calibration, kept out of calibration).")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Calibration samples to use.")] = DEFAULT_SAMPLES,
    method: Annotated[str, typer.Option("--method", help="ONNX int8 calibration: minmax, entropy or percentile.")] = "minmax",
    quant_format: Annotated[str, typer.Option("--format", help="ONNX int8 format: qdq or qoperator.")] = "qdq",
    per_tensor: Annotated[bool, typer.Option("--per-tensor", help="ONNX: one weight scale per tensor instead of per channel.")] = False,
    activations: Annotated[str, typer.Option("--activations", help="ONNX int8 activations: uint8 (ONNX Runtime's fast path on x86) or int8.")] = "uint8",
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Node names or op types to keep in float (repeat or comma-separate): ONNX nodes_to_exclude, TFLite denylisted nodes/ops (int8); --debug-layers lists the names.")] = None,
    symmetric_activations: Annotated[bool, typer.Option("--symmetric-activations", help="ONNX int8: symmetric activation ranges instead of min/max-fitted ones.")] = False,
    weight_ops_only: Annotated[bool, typer.Option("--weight-ops-only", help="ONNX int8: quantize only Conv, MatMul and Gemm (where int8 saves time); every other op stays float.")] = False,
    debug_layers: Annotated[bool, typer.Option("--debug-layers", help="int8: measure the error each layer's quantization adds on held-out data (SQNR, relative RMSE, error in quantization steps, weight error), ranked worst first.")] = False,
    accuracy_budget: Annotated[float | None, typer.Option("--accuracy-budget", help="int8: the largest accuracy drop (fraction, 0.01 = 1 point) to accept; when plain int8 misses it, try the calibration knobs, then keep the fewest layers in float that meet it. Sets the gate's --max-accuracy-drop.")] = None,
    io: Annotated[str, typer.Option("--io", help="TFLite int8: float keeps float32 I/O; int8 gives integer-only I/O.")] = "float",
    image_size: ImageSizeOpt = None,
    image_scale: ImageScaleOpt = None,
    image_mean: ImageMeanOpt = None,
    image_std: ImageStdOpt = None,
    image_layout: ImageLayoutOpt = None,
    image_color: ImageColorOpt = None,
    opset: OpsetOpt = DEFAULT_OPSET,
    bounds: BoundsParam = None,
    no_gate: Annotated[bool, typer.Option("--no-gate", help="Measure the quantized artifact but never fail on it.")] = False,
    input_shape: InputShapeOpt = None,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Quantize a model to int8, dynamic-range int8 or fp16 for ONNX Runtime or LiteRT, and measure what it costs."""
    from mdeploy.calibration.images import image_options
    from mdeploy.calibration.shapes import parse_input_shapes
    from mdeploy.passes.workflows.quantize import quantize

    image = image_options(image_size, image_scale or "1/255", image_mean, image_std, image_layout or "auto",
                          image_color or "auto")
    with progress("quantizing", quiet=json_out) as on_stage:
        report = quantize(model, to.lower(), mode.lower(), out_dir, input_shapes=parse_input_shapes(input_shape), trusted=global_options(ctx).trust, max_bytes=global_options(ctx).max_model_bytes,
                          calibration=calibration, validation=validation,
                          samples=samples, method=method.lower(), format=quant_format.lower(), per_channel=not per_tensor,
                          exclude=_split(exclude), io=io.lower(), activations=activations.lower(), image=image, opset=opset,
                          symmetric_activations=symmetric_activations, weight_ops_only=weight_ops_only,
                          debug_layers=debug_layers,
                          accuracy_budget=accuracy_budget,
                          thresholds=thresholds(bounds or {}, enabled=not no_gate),
                          force=force, on_stage=on_stage)
    name = f"{to.lower()}-{mode.lower()}"
    if json_out:
        emit_json(report.to_dict())
    else:
        for w in report.warnings:
            warn(w)
        render_quality(report, out_dir, [name])
        record = report.artifact(name)
        if record is not None and (record.layer_errors is not None or record.accuracy_search is not None):
            from mdeploy.passes.report.render import accuracy_search_lines, layer_table

            if record.layer_errors is not None:
                stdout.print(layer_table(record))
            for line in accuracy_search_lines(record):
                stdout.print(line, highlight=False)
    verdict = report.verdict.artifacts[name]
    record = report.artifact(name)
    search = record.accuracy_search if record is not None else None
    if verdict.status == "rejected" and search is not None and not search.met:
        raise CheckFailed(f"--accuracy-budget {search.budget:g}: no setting met it ({search.note}); "
                          f"the best artifact found is kept: {verdict.reason}",
                          "give more representative --calibration data, allow a larger budget, or use --mode fp16")
    if verdict.status == "rejected":
        raise CheckFailed(f"{verdict.reason} (gate: {verdict.gate})",
                          "loosen that bound if the loss is acceptable, give better --calibration data, "
                          "or --no-gate to keep the artifact without failing")
