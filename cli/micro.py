"""`mdeploy micro`: a .tflite model as TFLite Micro firmware sources, with a measured tensor arena and a crosscheck
against LiteRT. The pure function is passes/workflows/micro.py's `micro`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdeploy.cli._common import ForceOpt, JsonOpt, emit_json, progress, stdout
from mdeploy.passes.core.errors import CheckFailed
from mdeploy.passes.defaults import DEFAULT_MARGIN


def micro_cli(
    model: Annotated[Path, typer.Argument(help="The .tflite model (int8 for most microcontrollers).", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Directory for the C++ sources and micro.json.")] = Path("micro-out"),
    name: Annotated[str | None, typer.Option("--name", help="C identifier for the generated symbols. [default: from the file name]")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Validation data for the TFLM-vs-LiteRT crosscheck (.npz, .csv, a directory, ...). [default: random, 100 samples]")] = None,
    samples: Annotated[int, typer.Option("--samples", help="At most this many validation samples.")] = 1000,
    margin: Annotated[float, typer.Option("--margin", help="Arena margin over the measured need, 0..0.15.")] = DEFAULT_MARGIN,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Write a 16-byte-aligned C array, the op resolver and a measured, verified tensor arena size for TFLite Micro."""
    from rich.table import Table

    from mdeploy.passes.workflows.micro import micro

    with progress("building for TFLite Micro", quiet=json_out):
        report = micro(model, out_dir, name=name, data=data, samples=100 if data is None and samples == 1000 else samples,
                       margin=margin, force=force)
    if json_out:
        emit_json(report.to_dict())
    else:
        stdout.print(f"{report.model}: {report.model_bytes:,} bytes, {len(report.ops)} op registration(s): "
                     f"{', '.join(report.ops)}", highlight=False)
        stdout.print(f"tensor arena: {report.arena_bytes:,} bytes = measured need {report.arena_measured:,} + "
                     f"{report.margin:.1%} margin (verified: the crosscheck ran with exactly this arena)", highlight=False)
        table = Table(title=f"TFLite Micro vs LiteRT on {report.samples} samples of {report.data}", show_edge=False)
        for col in ("output", "max |diff|", "quant step", "max diff (steps)", "status"):
            table.add_column(col)
        for o in report.outputs:
            table.add_row(o.name, f"{o.max_abs_diff:.6g}", "float" if o.step is None else f"{o.step:.6g}",
                          "-" if o.max_steps is None else f"{o.max_steps:.3f}", "ok" if o.ok else "FAILED")
        stdout.print(table)
        stdout.print(f"written: {', '.join(str(Path(out_dir) / f) for f in report.files)}", highlight=False)
    bad = [o for o in report.outputs if not o.ok]
    if bad:
        o = bad[0]
        what = f"{o.max_steps:.2f} quantization steps" if o.max_steps is not None else f"{o.max_abs_diff:.3g} (float)"
        raise CheckFailed(f"TFLite Micro and LiteRT disagree on output '{o.name}' by up to {what}",
                          "a TFLM kernel computes differently from LiteRT's; the sources are written, but test on the device")
