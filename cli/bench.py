"""`mdeploy bench`: latency percentiles, throughput, load time and peak memory of each model on its own runtime."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mdeploy.cli._common import InputShapeOpt, JsonOpt, emit_json, global_options, progress, stdout, wide_console
from mdeploy.cli._format import human_bytes


def render(results: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.table import Table


    first = results[0]
    table = Table(title=f"bench: batch {first['batch']}, {first['runs']} runs after {first['warmup']} warm-up, "
                        f"threads {first['threads'] or 'default'}")
    table.box = box.SIMPLE_HEAD
    for c in ("model", "format", "p50 ms", "p90 ms", "p99 ms", "samples/s", "load s", "peak RSS"):
        table.add_column(c, justify="left" if c in ("model", "format") else "right")
    for r in results:
        lat = r["latency_ms"]
        table.add_row(r["name"], r["format"], f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
                      f"{r['throughput_per_s']:.1f}", f"{r['load_seconds']:.3f}", human_bytes(r["peak_rss_bytes"]))
    wide_console().print(table)
    runtimes = sorted({r["runtime"] for r in results})
    stdout.print("runtimes: " + ", ".join(runtimes), highlight=False)
    m = first["machine"]
    stdout.print(f"machine: {m['cpu']}, {m['logical_cores']} logical / {m['physical_cores']} physical cores, {m['os']}",
                 highlight=False)


def bench_cli(
    ctx: typer.Context,
    models: Annotated[list[Path], typer.Argument(help="Models to measure (.keras, .h5, .onnx, .tflite, SavedModel).", show_default=False)],
    batch: Annotated[int, typer.Option("--batch", help="Samples per call.")] = 1,
    threads: Annotated[int | None, typer.Option("--threads", help="Runtime threads (default: the runtime's own).")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls first.")] = 10,
    runs: Annotated[int, typer.Option("--runs", help="Timed calls.")] = 100,
    out_dir: Annotated[Path | None, typer.Option("--output", "-o", help="OUTDIR whose report.json gets the results.")] = None,
    input_shape: InputShapeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Measure latency p50/p90/p99, throughput, load time and peak memory, each model in its own process."""
    from mdeploy.calibration.shapes import parse_input_shapes
    from mdeploy.passes.workflows.bench import bench_models

    with progress("benchmarking", quiet=json_out) as on_stage:
        results = bench_models(models, input_shapes=parse_input_shapes(input_shape), trusted=global_options(ctx).trust, max_bytes=global_options(ctx).max_model_bytes, batch=batch, threads=threads, warmup=warmup, runs=runs, out_dir=out_dir,
                               on_stage=on_stage)
    if json_out:
        emit_json(results)
    else:
        render(results)
        if out_dir is not None:
            stdout.print(f"report: {out_dir / 'report.json'}", highlight=False)
