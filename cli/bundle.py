"""`mdeploy bundle`: serving bundles (TF Serving, Triton, Kubernetes, KServe) from a run's passing artifacts."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdeploy.cli._common import ForceOpt, JsonOpt, emit_json, progress, stdout, warn


def bundle_cli(
    run_dir: Annotated[Path, typer.Argument(help="The -o directory of an optimize/convert/quantize run (with report.json).", show_default=False)],
    out_dir: Annotated[Path | None, typer.Option("--output", "-o", help="Where the bundle goes. [default: RUN_DIR/bundle]")] = None,
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="tfserving, triton, k8s, kserve or all (repeatable or comma list). [default: all]")] = None,
    artifact: Annotated[str | None, typer.Option("--artifact", help="Bundle this artifact (its name in report.json) instead of the best passing one.")] = None,
    allow_failed: Annotated[bool, typer.Option("--allow-failed", help="Bundle an --artifact that failed the gate anyway (the bundle says so).")] = False,
    name: Annotated[str | None, typer.Option("--name", help="The served model's name. [default: the source file's stem]")] = None,
    model_version: Annotated[int, typer.Option("--model-version", help="The model's version directory.")] = 1,
    latency_budget_ms: Annotated[float, typer.Option("--latency-budget-ms", help="A full dynamic batch should fit in this, at the measured per-sample latency.")] = 50.0,
    max_batch: Annotated[int | None, typer.Option("--max-batch", help="Override the max batch size derived from latency.")] = None,
    cpu: Annotated[float, typer.Option("--cpu", help="CPU cores per replica: the request, TF Serving batch threads, Triton instances.")] = 1.0,
    min_replicas: Annotated[int, typer.Option("--min-replicas", help="HPA lower bound.")] = 1,
    max_replicas: Annotated[int, typer.Option("--max-replicas", help="HPA upper bound.")] = 4,
    cpu_target: Annotated[int, typer.Option("--cpu-target", help="HPA target average CPU utilization, % of the request.")] = 70,
    image: Annotated[str | None, typer.Option("--image", help="Image name prefix the manifests run (NAME-SERVER:VERSION is appended). [default: mdeploy/NAME]")] = None,
    json_out: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Write TF Serving / Triton / Kubernetes / KServe bundles, every file validated offline before it is written."""
    from mdeploy.passes.workflows.bundle import BundleOptions, bundle

    options = BundleOptions(name=name, version=model_version, artifact=artifact, allow_failed=allow_failed,
                            latency_budget_ms=latency_budget_ms, max_batch=max_batch, cpu=cpu, min_replicas=min_replicas,
                            max_replicas=max_replicas, cpu_target=cpu_target, image_prefix=image)
    with progress("bundling", quiet=json_out) as on_stage:
        result = bundle(run_dir, out_dir, tuple(target or ["all"]), options, force=force, on_stage=on_stage)
    if json_out:
        emit_json(result.to_dict())
        return
    for w in result.warnings:
        warn(w)
    for server, facts in result.models.items():
        stdout.print(f"{server}: {facts.artifact} ({facts.format}, {facts.status}) as {facts.name} v{facts.version}; "
                     f"{result.plans[server].basis}", highlight=False)
    stdout.print(f"bundle: {result.out_dir} ({len(result.files)} files validated; see its README.md)", highlight=False)
