"""`mdeploy optimize`: one command from a trained model to verified cloud and edge artifacts and their report."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    OutDirOpt,
    emit_json,
    global_options,
    progress,
    stdout,
    warn,
    warn_code_data,
)
from mdeploy.cli.gate_options import BoundsParam, StrictGateOpt, gate_flags, raise_for_verdict


@gate_flags
def optimize_cli(
    ctx: typer.Context,
    model: ModelArg,
    out_dir: OutDirOpt = Path("mdeploy-out"),
    target: Annotated[str | None, typer.Option("--target", help="cloud (SavedModel+ONNX), edge (TFLite) or all. [default: all]")] = None,
    calibration: Annotated[str | None, typer.Option("--calibration", help="Calibration data for int8: .npz, .csv, a directory of .npy/images, module:function, or `random`.")] = None,
    validation: Annotated[str | None, typer.Option("--validation", help="Held-out data (with labels for accuracy) every artifact is validated on.")] = None,
    input_shape: InputShapeOpt = None,
    sparsity: Annotated[float | None, typer.Option("--sparsity", help="Magnitude-prune the Keras model to this sparsity before quantizing.")] = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="TOML recipe; flags given on the command line override it.")] = None,
    bounds: BoundsParam = None,
    strict: StrictGateOpt = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also produce fp16 ONNX and TFLite.")] = False,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Processes for the ONNX and TFLite branches (1 = serial). [default: 2 on 4+ cores, else 1]")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every step instead of reusing cached results.")] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Where step results are cached. [default: OUTDIR/.mdeploy-cache]")] = None,
    no_bench: Annotated[bool, typer.Option("--no-bench", help="Skip the latency benchmark.")] = False,
    accuracy_budget: Annotated[float | None, typer.Option("--accuracy-budget", help="int8: the largest accuracy drop (fraction) to accept; an int8 artifact that misses it is searched (calibration knobs, then the fewest layers in float). Sets --max-accuracy-drop.")] = None,
    debug_layers: Annotated[bool, typer.Option("--debug-layers", help="int8: measure and rank the error each layer's quantization adds (report.html charts it).")] = False,
    structured: Annotated[bool, typer.Option("--structured", help="Remove whole filters first (Keras); also builds the dense artifacts to compare.")] = False,
    ratio: Annotated[float | None, typer.Option("--ratio", help="--structured: fraction of each channel group's filters to remove.")] = None,
    flops_target: Annotated[float | None, typer.Option("--flops-target", help="--structured: reach this fraction of the FLOPs instead of --ratio.")] = None,
    channel_multiple: Annotated[str | None, typer.Option("--channel-multiple", help="--structured: keep channel counts in multiples of N; auto: 8 for groups whose width is a multiple of 8, else 1. [default: auto]")] = None,
    fine_tune: Annotated[str | None, typer.Option("--fine-tune", help="Labelled data to fine-tune the pruned model on.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Fine-tuning epochs. [default: 2]")] = None,
    image_size: ImageSizeOpt = None,
    image_scale: ImageScaleOpt = None,
    image_mean: ImageMeanOpt = None,
    image_std: ImageStdOpt = None,
    image_layout: ImageLayoutOpt = None,
    image_color: ImageColorOpt = None,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Convert, simplify, quantize (and prune), validate, bench and report, in one verified pipeline."""
    from mdeploy.passes.prune.structured import parse_multiple
    from mdeploy.passes.report.render import accuracy_search_lines, layer_table, to_table
    from mdeploy.passes.workflows.optimize import optimize
    from mdeploy.passes.workflows.recipe import load_recipe, with_fp16

    overrides = {"input_shapes": tuple(input_shape) if input_shape else None, "target": target, "calibration": calibration, "validation": validation, "prune.sparsity": sparsity,
                 **{f"validate.{name}": value for name, value in (bounds or {}).items()},
                 "validate.strict": strict or None, "jobs": jobs,
                 "cache_dir": str(cache_dir) if cache_dir else None, "images.size": image_size,
                 "images.scale": image_scale, "images.mean": image_mean, "images.std": image_std,
                 "images.layout": image_layout, "images.color": image_color,
                 "quantize.accuracy_budget": accuracy_budget, "quantize.debug_layers": debug_layers or None}
    if no_cache:
        overrides["cache"] = False
    if no_bench:
        overrides["bench.enabled"] = False
    if structured:
        overrides["prune.structured"] = True
    multiple = None if channel_multiple is None else parse_multiple(channel_multiple)
    overrides.update({"prune.ratio": ratio, "prune.flops_target": flops_target, "prune.fine_tune": fine_tune,
                      "prune.channel_multiple": multiple, "prune.epochs": epochs})
    base = load_recipe(recipe, overrides)
    warn_code_data({f"recipe key '{key}'": value for key, value, given in (
        ("calibration", base.calibration, calibration), ("validation", base.validation, validation),
        ("prune.fine_tune", base.prune.fine_tune, None)) if given is None})  # the flags' own were named already
    if fp16:
        base = with_fp16(base)
    with progress("optimizing", quiet=json_out) as on_stage:
        options = global_options(ctx)
        report = optimize(model, out_dir, base, force=force, on_stage=on_stage, trusted=options.trust, max_bytes=options.max_model_bytes,
                          verbose=options.verbose)
    if json_out:
        emit_json(report.to_dict())
    else:
        for w in report.warnings:
            warn(w)
        stdout.print(to_table(report))
        for record in report.artifacts:
            if record.layer_errors is not None:
                stdout.print(layer_table(record))
            for line in accuracy_search_lines(record):
                stdout.print(line, highlight=False)
        stdout.print(f"reports: {out_dir / 'report.json'}, report.md, report.html", highlight=False)
    raise_for_verdict(report.verdict)
