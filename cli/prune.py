"""`mdeploy prune`: magnitude pruning of a Keras (optionally with gradual fine-tuning) or ONNX model, reported per layer."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mdeploy.cli._common import (
    ForceOpt,
    JsonOpt,
    ModelArg,
    OutDirOpt,
    emit_json,
    global_options,
    progress,
    stdout,
    warn,
)
from mdeploy.cli._format import human_bytes
from mdeploy.passes.core.errors import BadInput

if TYPE_CHECKING:
    from mdeploy.passes.report.sections import ArtifactRecord


def render_pruning(record: ArtifactRecord, out_dir: Path) -> None:
    from rich.table import Table


    p = record.pruning.to_dict()
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    title = f"mdeploy prune: {record.path} ({p['scope']}{', ' + p['pattern'] if p['pattern'] else ''})"
    table = Table(title=title)
    for col in ("layer", "kind", "shape", "params", "target", "achieved", "note"):
        table.add_column(col, justify="right" if col in ("params", "target", "achieved") else "left")
    for layer in p["layers"]:
        table.add_row(layer["name"], layer["kind"], "x".join(map(str, layer["shape"])), f"{layer['params']:,}",
                      pct(layer["target"]), pct(layer["achieved"]), layer["note"])
    table.add_row("[bold]pruned kernels[/]", "", "", f"{p['pruned_params']:,}", pct(p["target_sparsity"]),
                  pct(p["achieved_sparsity"]), "")
    table.add_row("[bold]whole model[/]", "", "", f"{p['params']:,}", "", pct(p["model_sparsity"]), "incl. biases, norms")
    stdout.print(table)
    stdout.print(f"size: {human_bytes(p['size_bytes_before'])} -> {human_bytes(p['size_bytes_after'])}   "
                 f"gzip: {human_bytes(p['gzip_bytes_before'])} -> {human_bytes(p['gzip_bytes_after'])} "
                 f"({100 * (1 - p['gzip_bytes_after'] / p['gzip_bytes_before']):.0f}% smaller)", highlight=False)
    stdout.print(f"note: {p['note']}", highlight=False)
    if any(layer["note"].endswith("by policy") for layer in p["layers"]):
        stdout.print("note: the first and last prunable layers stay dense by default; --prune-first-last prunes them too",
                     highlight=False)
    if p.get("accuracy_before") is not None:
        stdout.print(f"accuracy on {p['accuracy_data']}: {100 * p['accuracy_before']:.2f}% -> "
                     f"{100 * p['accuracy_after']:.2f}%", highlight=False)
    stdout.print(f"output: {out_dir / record.path}\nreport: {out_dir / 'report.json'}", highlight=False)


def render_structured(record: ArtifactRecord, out_dir: Path) -> None:
    from rich.table import Table

    s = record.structured
    ratio = lambda a, b: "-" if not a else f"{b / a:.2f}x"  # noqa: E731
    how = f"flops target {s.flops_target:g}" if s.flops_target is not None else f"ratio {s.ratio:g}"
    table = Table(title=f"mdeploy prune --structured: {record.path} ({how}, {s.criterion}, channel multiple "
                        f"{s.channel_multiple}, ratio used {s.ratio:g})")
    for col in ("layer", "kind", "channels", "FLOPs before", "FLOPs after", "params before", "params after"):
        table.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    for layer in s.layers or []:
        if not layer["flops_before"] and not layer["params_before"]:
            continue
        ch = (f"{layer['channels_before']}" if layer["channels_before"] == layer["channels_after"]
              else f"{layer['channels_before']} -> {layer['channels_after']}")
        table.add_row(layer["name"], layer["kind"], ch, f"{layer['flops_before']:,}", f"{layer['flops_after']:,}",
                      f"{layer['params_before']:,}", f"{layer['params_after']:,}")
    table.add_row("[bold]total[/]", "", "", f"{s.flops_before:,}", f"{s.flops_after:,} ({ratio(s.flops_before, s.flops_after)})",
                  f"{s.params_before:,}", f"{s.params_after:,} ({ratio(s.params_before, s.params_after)})")
    stdout.print(table)
    frozen = [g for g in s.groups or [] if g["frozen"]]
    tied = [g for g in s.groups or [] if g["tied"] and not g["frozen"]]
    stdout.print(f"channel groups: {len(s.groups or []) - len(frozen)} pruned ({len(tied)} tied across a merge, one "
                 f"shared mask each), {len(frozen)} left whole", highlight=False)
    steps: dict[int, int] = {}
    for g in s.groups or []:
        if g.get("multiple"):
            steps[g["multiple"]] = steps.get(g["multiple"], 0) + 1
    if steps:
        stdout.print("kept channels in multiples of " + ", ".join(f"{m} ({n} group{'s' if n > 1 else ''})"
                                                                  for m, n in sorted(steps.items(), reverse=True)),
                     highlight=False)
    for g in frozen:
        stdout.print(f"  left whole: {', '.join(g['producers'][:3])}{' ...' if len(g['producers']) > 3 else ''}: "
                     f"{g['frozen']}", highlight=False)
    stdout.print(f"size: {human_bytes(s.size_bytes_before)} -> {human_bytes(s.size_bytes_after)}", highlight=False)
    if s.latency_ms_before is not None:
        stdout.print(f"latency p50 ({s.latency_runtime}, batch 1): {s.latency_ms_before:.3f} ms -> "
                     f"{s.latency_ms_after:.3f} ms ({s.latency_ms_before / s.latency_ms_after:.2f}x faster)",
                     highlight=False)
    if s.accuracy_before is not None:
        stdout.print(f"accuracy on {s.accuracy_data}: {100 * s.accuracy_before:.2f}% -> {100 * s.accuracy_after:.2f}%"
                     f"{'' if s.fine_tune else ' (not fine-tuned: pass --fine-tune DATA)'}", highlight=False)
    stdout.print(f"output: {out_dir / record.path}\nreport: {out_dir / 'report.json'}", highlight=False)


def prune_cli(
    ctx: typer.Context,
    model: ModelArg,
    sparsity: Annotated[float | None, typer.Option("--sparsity", help="Fraction of weights to zero, in [0, 1).")] = None,
    out_dir: OutDirOpt = Path("mdeploy-out"),
    scope: Annotated[str, typer.Option("--scope", help="layer: every layer to the target; global: one magnitude threshold.")] = "layer",
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Layer-name pattern (fnmatch) to keep dense; repeatable.")] = None,
    prune_first_last: Annotated[bool, typer.Option("--prune-first-last", help="Also prune the first and last prunable layer (dense by default).")] = False,
    pattern: Annotated[str | None, typer.Option("--pattern", help="N:M structured sparsity along the input dimension, e.g. 2:4.")] = None,
    fine_tune: Annotated[str | None, typer.Option("--fine-tune", help="Labelled .npz to fine-tune on (Keras only): magnitude pruning is then gradual.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Fine-tuning epochs (default 2).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Fine-tuning batch size (default 32).")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate", help="Fine-tuning learning rate, Adam (default 1e-3).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="Fine-tuning loss (default: the model's compiled loss).")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Fine-tuning metric (default: the model's compiled metrics).")] = None,
    initial_sparsity: Annotated[float, typer.Option("--initial-sparsity", help="Schedule: sparsity at the begin step.")] = 0.0,
    begin_step: Annotated[int, typer.Option("--begin-step", help="Schedule: optimizer step where pruning starts.")] = 0,
    end_step: Annotated[int | None, typer.Option("--end-step", help="Schedule: step where the final sparsity is reached (default: 75% of the steps).")] = None,
    frequency: Annotated[int | None, typer.Option("--frequency", help="Schedule: steps between mask updates (default: a tenth of the pruning window).")] = None,
    structured: Annotated[bool, typer.Option("--structured", help="Remove whole filters (Keras): a smaller, faster model, not zeros.")] = False,
    ratio: Annotated[float | None, typer.Option("--ratio", help="--structured: fraction of each channel group's filters to remove.")] = None,
    flops_target: Annotated[float | None, typer.Option("--flops-target", help="--structured: reach this fraction of the FLOPs (e.g. 0.5) instead of --ratio.")] = None,
    criterion: Annotated[str, typer.Option("--criterion", help="--structured: rank filters by l1 or l2 norm, or bn (BatchNorm gamma).")] = "l1",
    channel_multiple: Annotated[str, typer.Option("--channel-multiple", help="--structured: keep channel counts in multiples of N; auto: 8 for groups whose width is a multiple of 8, else 1.")] = "auto",
    latency_runs: Annotated[int, typer.Option("--latency-runs", help="--structured: runs to time before and after (0: skip).")] = 50,
    data: Annotated[str | None, typer.Option("--data", help="Labelled .npz for accuracy before and after.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for fine-tuning.")] = 0,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Zero the smallest weights of a Keras or ONNX model, or with --structured remove whole filters of a Keras model;
    report sparsity (or FLOPs and latency), sizes and accuracy before and after."""
    from mdeploy.passes.prune.fine_tuning import fine_tuning_from
    from mdeploy.passes.workflows.prune import prune, prune_structured

    tuning = fine_tuning_from(fine_tune, require_data=True, seed=seed, epochs=epochs, batch_size=batch_size,
                              learning_rate=learning_rate, loss=loss, metric=metric)
    if structured:
        if sparsity is not None or pattern:
            raise BadInput("--structured removes filters; --sparsity and --pattern zero weights",
                           "pass --structured with --ratio or --flops-target, or drop --structured")
        with progress("structured pruning", quiet=json_out) as on_stage:
            report = prune_structured(model, out_dir, ratio=ratio, flops_target=flops_target, criterion=criterion,
                                      multiple=channel_multiple, fine_tuning=tuning, data=data, latency_runs=latency_runs, force=force, seed=seed, on_stage=on_stage,
                                      trusted=global_options(ctx).trust, max_bytes=global_options(ctx).max_model_bytes)
        _show(report, "structured", render_structured, out_dir, json_out)
        return
    if ratio is not None or flops_target is not None:
        raise BadInput("--ratio and --flops-target belong to --structured", "add --structured, or use --sparsity")
    with progress("pruning", quiet=json_out) as on_stage:
        report = prune(model, sparsity, out_dir, trusted=global_options(ctx).trust, max_bytes=global_options(ctx).max_model_bytes, scope=scope, exclude=tuple(exclude or ()), prune_first_last=prune_first_last,
                       pattern=pattern, fine_tuning=tuning, initial_sparsity=initial_sparsity,
                       begin_step=begin_step, end_step=end_step, frequency=frequency, data=data, force=force,
                       seed=seed, on_stage=on_stage)
    _show(report, "pruning", render_pruning, out_dir, json_out)


def _show(report, section: str, render, out_dir: Path, json_out: bool) -> None:
    """The pruned artifact's warnings on stderr, then the report as JSON or `render`ed for the terminal."""
    record = report.artifacts[-1]  # add_artifact appends
    for w in getattr(record, section).warnings or []:
        warn(w)
    if json_out:
        emit_json(report.to_dict())
    else:
        render(record, out_dir)
