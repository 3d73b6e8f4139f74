"""`mdeploy zoo` runs `optimize` on every model of a manifest, one process per model (here, or one Ray task per model
with --backend ray); `zoo-merge` joins shards."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mdeploy.cli._common import (
    JsonOpt,
    OutDirOpt,
    emit_json,
    global_options,
    naming_interrupts,
    stderr,
    stdout,
    warn_code_data,
)
from mdeploy.passes.core.errors import CheckFailed


def _stage_table(stage: dict[str, str], where: dict[str, str] | None = None):
    from rich.table import Table

    table = Table(title="mdeploy zoo", show_edge=False)
    table.add_column("model")
    if where:
        table.add_column("node")
    table.add_column("stage")
    colours = {"ok": "green", "cached": "green", "failed": "red", "rejected": "yellow"}
    for name, text in stage.items():
        cells = [name, where.get(name, "")] if where else [name]
        table.add_row(*cells, f"[{colours.get(text, 'cyan')}]{text}[/]")
    return table


def render_summary(data: dict[str, Any]) -> None:
    from rich.table import Table

    from mdeploy.passes.report.zoo_summary import SUMMARY_COLUMNS, summary_rows

    table = Table(title="zoo summary")
    for c in SUMMARY_COLUMNS:
        table.add_column(c, overflow="fold")
    for row in summary_rows(data):
        table.add_row(*row)
    stdout.print(table)


def _finish(data: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(data)
    else:
        render_summary(data)
    failed = [m for m in data["models"] if m["status"] != "ok"]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(data['models'])} models failed: " +
                          "; ".join(f"{m['name']} ({m['reason']})" for m in failed),
                          "see zoo-summary.md; each model's own report.json and output are under OUTDIR/<model>/")


def zoo_cli(
    ctx: typer.Context,
    manifest: Annotated[Path, typer.Argument(help="Zoo manifest (TOML) with [defaults] and [[model]] tables.")],
    out_dir: OutDirOpt = Path("mdeploy-zoo"),
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Models optimized at once, each in its own process. [default: 2; with --backend ray: the CPUs of the Ray instance started for the run, default all]")] = None,
    shard_spec: Annotated[str | None, typer.Option("--shard", help="Run only shard I of N (e.g. 1/4), for CI matrices.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds before a model's process is killed.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="local: processes on this machine; ray: one Ray task per model (pip install 'mdeploy[ray]').")] = "local",
    address: Annotated[str | None, typer.Option("--address", envvar="RAY_ADDRESS", help="With --backend ray: the Ray cluster to join (host:6379, as `ray start --head` prints); OUTDIR must be a path shared by every node. Default: a Ray instance started for this run.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Optimize every model of a manifest, in parallel and in isolation, and summarize the best artifacts."""
    from mdeploy.passes.workflows.zoo import zoo
    from mdeploy.passes.workflows.zoo_manifest import load_manifest

    options = global_options(ctx)
    models = load_manifest(manifest).models
    for m in models:  # the models' processes warn only into their captured stderr
        warn_code_data({"calibration": m.calibration, "validation": m.validation}, where=f"model '{m.name}': ")
    source = ctx.get_parameter_source("address")  # a click ParameterSource (Typer vendors click)
    if backend != "ray" and getattr(source, "name", None) == "ENVIRONMENT":
        address = None  # RAY_ADDRESS in the environment is for Ray runs; only an explicit --address is an error
    run = {"jobs": jobs, "shard_spec": shard_spec, "timeout": timeout, "trusted": options.unsafe_keras,
           "backend": backend, "address": address, "verbose": options.verbose}
    seen: dict[str, str] = {}  # the models' last stages, for an interrupt to name

    def remember(stage: dict[str, str], where: dict[str, str]) -> None:
        seen.clear()
        seen.update(stage)
    doing = f"starting {len(models)} model{'s' if len(models) != 1 else ''}"
    with naming_interrupts(lambda: _running(seen) or doing):
        if stderr.is_terminal and not json_out:
            from rich.live import Live

            with Live(_stage_table({}), console=stderr, refresh_per_second=4) as live:
                def show(stage: dict[str, str], where: dict[str, str]) -> None:
                    remember(stage, where)
                    live.update(_stage_table(stage, where))
                data = zoo(manifest, out_dir, **run, on_update=show)
        else:
            data = zoo(manifest, out_dir, **run, on_update=remember)
    _finish(data, json_out)


def _running(stage: dict[str, str]) -> str | None:
    """'optimizing digits (quantize.onnx: onnx-simplified), mnv2 (starting); 1 done; queued: a, b' from the models'
    stages."""
    ended = {"ok", "cached", "failed", "rejected"}
    busy = [f"{name} ({text})" for name, text in stage.items() if text not in ended and text != "queued"]
    done = sum(text in ended for text in stage.values())
    queued = [name for name, text in stage.items() if text == "queued"]
    parts = ["optimizing " + ", ".join(busy) if busy else "", f"{done} done" if done else "",
             "queued: " + (", ".join(queued) if len(queued) <= 3 else f"{len(queued)} models") if queued else ""]
    return "; ".join(p for p in parts if p) or None


def zoo_merge_cli(
    shard_dirs: Annotated[list[Path], typer.Argument(help="Output directories of `mdeploy zoo --shard` runs.")],
    out_dir: OutDirOpt = Path("mdeploy-zoo"),
    json_out: JsonOpt = False,
) -> None:
    """Combine the zoo summaries of several shards into one."""
    from mdeploy.passes.workflows.zoo import zoo_merge

    _finish(zoo_merge(shard_dirs, out_dir), json_out)
