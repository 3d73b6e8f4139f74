"""`mdeploy validate`: run a reference and candidates on the same data, compare every output, and gate on thresholds."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mdeploy.cli._common import InputShapeOpt, JsonOpt, emit_json, global_options, progress, stderr, stdout
from mdeploy.cli._format import fmt_float
from mdeploy.cli.gate_options import BoundsParam, gate_flags, thresholds
from mdeploy.passes.core.errors import CheckFailed

if TYPE_CHECKING:
    from mdeploy.passes.checks.validate import ValidationResult

ROWS = [("accuracy", "accuracy"), ("accuracy drop", "accuracy_drop"), ("top-1 agreement", "top1_agreement"),
        ("top-5 agreement", "top5_agreement"), ("max abs error", "max_abs_error"), ("mean abs error", "mean_abs_error"),
        ("cosine similarity", "cosine_similarity"), ("SQNR dB", "sqnr_db"), ("NaN / Inf", None)]


def render(result: ValidationResult) -> None:
    """Metrics down, candidates across: stays readable in 80 columns with a handful of candidates."""
    from rich.table import Table


    table = Table(title=f"validate: {len(result.candidates)} candidate(s) against {result.reference}\n"
                        f"on {result.data} ({result.samples} samples)")
    table.add_column("metric", no_wrap=True)
    for c in result.candidates:
        table.add_column(f"{c.name}\n{c.format} {c.precision}", justify="right", overflow="fold")
    failing = {(f.candidate, f.metric, f.output) for f in result.failures}
    multi = any(len(c.outputs) > 1 for c in result.candidates)
    out_names = list(result.candidates[0].outputs)

    def cell(c, key, out=None):
        if key is None:
            m = c.outputs[out]
            text = f"{m['nan_count']} / {m['inf_count']}"
            bad = any((c.name, k, out if multi else None) in failing for k in ("nan_count", "inf_count"))
        elif key in ("accuracy", "accuracy_drop"):
            v = getattr(c, key)
            text, bad = fmt_float(v, 4), (c.name, key, None) in failing
        else:
            v = c.outputs.get(out, {}).get(key)
            text, bad = fmt_float(v, 6 if "error" in key or key == "cosine_similarity" else 4), (c.name, key, out if multi else None) in failing
        return f"[red]{text}[/]" if bad else text

    for label, key in ROWS[:2]:
        table.add_row(label, *[cell(c, key) for c in result.candidates])
    for out in out_names:
        for label, key in ROWS[2:]:
            table.add_row(f"{label} [{out}]" if multi else label, *[cell(c, key, out) for c in result.candidates])
    table.add_row("status", *["[green]pass[/]" if c.passed else "[red]FAIL[/]" for c in result.candidates])
    stdout.print(table)
    if result.reference_accuracy is not None:
        stdout.print(f"reference accuracy: {result.reference_accuracy:.4f}", highlight=False)
    stdout.print(f"thresholds: {result.thresholds.describe()}", highlight=False)
    for c in result.candidates:
        if c.layout:
            stdout.print(f"{c.name}: {c.layout}", highlight=False)
        for out, g in c.gates.items():
            stdout.print(f"{c.name} gate{f' [{out}]' if multi else ''}: {g.why}", highlight=False)
        for f in c.failures:
            stdout.print(f"[red]FAIL[/] {f}", highlight=False)


@gate_flags
def validate_cli(
    ctx: typer.Context,
    reference: Annotated[Path, typer.Argument(help="The model the candidates are compared with.", show_default=False)],
    candidates: Annotated[list[Path], typer.Argument(help="One or more candidate models.", show_default=False)],
    data: Annotated[str, typer.Option("--data", help="Validation data: .npz keyed by input name (labels under `labels`/`y` give accuracy), a .npy directory, images, .csv.", show_default=False)],
    bounds: BoundsParam = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per runtime call.")] = 64,
    limit: Annotated[int | None, typer.Option("--limit", help="Use at most this many samples.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="Runtime threads (default: the runtime's own).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--output", "-o", help="OUTDIR whose report.json gets the results.")] = None,
    input_shape: InputShapeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare candidates with a reference on the same data; exit 1 when one breaks a threshold."""
    from mdeploy.calibration.shapes import parse_input_shapes
    from mdeploy.passes.workflows.validate import validate_models

    gate = thresholds(bounds or {})
    with progress("validating", quiet=json_out):
        result = validate_models(reference, candidates, data, gate, input_shapes=parse_input_shapes(input_shape), trusted=global_options(ctx).trust, max_bytes=global_options(ctx).max_model_bytes, out_dir=out_dir, batch_size=batch_size,
                                 limit=limit, threads=threads)
    if json_out:
        emit_json(result.to_dict())
    else:
        render(result)
        if result.labels and result.reference_accuracy is None:
            stderr.print("[yellow]warning:[/] labels given but no classifier-shaped output: accuracy not computed")
        if out_dir is not None:
            stdout.print(f"report: {out_dir / 'report.json'}", highlight=False)
    if not result:
        lines = "; ".join(str(f) for f in result.failures)
        raise CheckFailed(f"validation failed: {lines}",
                          f"bounds were: {gate.describe()}; loosen them with the flags or fix the candidate")
