"""`mdeploy simplify`: onnxsim on an ONNX model, checked with ONNX Runtime, with a before/after summary.

The pure function `simplify(...) -> Report` does the work; `simplify_cli` parses flags and renders.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdeploy.cli._common import ForceOpt, JsonOpt, ModelArg, emit_json, progress, stdout, warn
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.report.model import REPORT_NAME, Report


def parse_input_shapes(values: list[str] | None) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """`NAME:1,3,224,224` (repeatable) -> ((NAME, (1, 3, 224, 224)), ...)."""
    shapes = []
    for text in values or []:
        name, _, dims = text.rpartition(":")
        try:
            parsed = tuple(int(d) for d in dims.split(","))
        except ValueError:
            parsed = ()
        if not name or not parsed or min(parsed) <= 0:
            raise BadInput(f"--input-shape '{text}' is not NAME:D1,D2,...", "for example --input-shape image:1,224,224,3")
        shapes.append((name, parsed))
    return tuple(shapes)


def simplify(model: Path, out: Path, *, strict: bool = False, data: str | None = None,
             input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = (), force: bool = False, on_stage=None) -> Report:
    """Simplify `model` into `out`. The report (also saved beside OUT when that directory's report.json is free
    or describes the same model) holds the artifact with its `simplify` summary and the step, `skipped` on fallback."""
    from mdeploy.calibration.sources import DataSpec
    from mdeploy.passes.core.fsio import ensure_writable
    from mdeploy.passes.backends.load import open_artifact
    from mdeploy.passes.core.pipeline import Context, run_pass
    from mdeploy.passes.report.model import artifact_record
    from mdeploy.passes.simplify import Simplify

    stage = on_stage or (lambda text: None)
    model, out = Path(model), Path(out)
    if out.suffix.lower() != ".onnx":
        raise BadInput(f"-o {out}: the output must be an .onnx file", "for example -o model.sim.onnx")
    if out.resolve() == model.resolve():
        raise BadInput(f"-o {out} is the input model", "mdeploy never modifies an input file; choose another output path")
    ensure_writable(out, force)
    stage("loading the model")
    source = open_artifact(model)
    if source.format != "onnx":
        raise BadInput(f"{model} is a {source.format} model; simplify takes ONNX", "convert it first: mdeploy convert MODEL --to onnx")
    p = Simplify(file_name=str(out.resolve()), input_shapes=input_shapes, data=DataSpec(data) if data else None, strict=strict)
    ctx = Context(out_dir=out.parent, force=force, name=model.stem, on_stage=stage)
    steps: list = []
    result = run_pass(p, source, ctx, steps)
    report = Report.for_source(source)
    existing = out.parent / REPORT_NAME
    shared = Report.load_or_new(out.parent, source) if existing.is_file() else None
    if shared is not None and shared.source.get("sha256") == source.sha256():
        report = shared
    report.add_artifact({**artifact_record(result, out.parent), "simplify": result.meta["simplify"]})
    report.add_steps(steps)
    report.warnings.extend(w for w in ctx.warnings if w not in report.warnings)
    if not existing.is_file() or report is shared:
        report.save(out.parent)
    return report


def render_summary(report: Report, out: Path) -> None:
    from rich.table import Table

    from mdeploy.cli._format import human_bytes

    summary = report.artifact("onnx-simplified")["simplify"]
    before, after = summary["before"], summary["after"]
    table = Table(title=f"mdeploy simplify: {report.source.get('path')}")
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
    model: ModelArg,
    out: Annotated[Path, typer.Option("--output", "-o", help="Output .onnx file.")],
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 3) instead of keeping the unsimplified model.")] = False,
    input_shape: Annotated[list[str] | None, typer.Option("--input-shape", help="Pin an input's shape: NAME:D1,D2,... (repeatable). Dynamic dims stay dynamic otherwise.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Inputs for the check (default: generated, seed 0): any calibration data spec.")] = None,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Simplify an ONNX model with onnxsim (constant folding, shape inference, fusions), checked with ONNX Runtime."""
    shapes = parse_input_shapes(input_shape)
    with progress("simplifying", quiet=json_out) as on_stage:
        report = simplify(model, out, strict=strict, data=data, input_shapes=shapes, force=force, on_stage=on_stage)
    if json_out:
        emit_json(report.to_dict())
        return
    for w in report.warnings:
        warn(w)
    render_summary(report, out)
