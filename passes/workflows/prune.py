"""`prune`: magnitude pruning of a Keras or ONNX model, with sparsity, size and accuracy before and after."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.calibration import LABELS, collect, open_source
from mdeploy.passes.backends import artifact_runner, open_artifact, run_batched
from mdeploy.passes.checks.compare import accuracy, is_classifier_output
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import ensure_writable
from mdeploy.passes.core.lock import outdir_lock
from mdeploy.passes.core.pipeline import Context, run_pass
from mdeploy.passes.prune import FineTuning, pruning_pass
from mdeploy.passes.prune.masks import check_sparsity, parse_pattern
from mdeploy.passes.report.model import Report, artifact_record
from mdeploy.passes.report.sections import Pruning


def labelled_accuracy(artifact, data: str) -> float | None:
    """Top-1 accuracy of `artifact` on labelled data, through the runtime table; None when the output is not a classifier's."""

    batch = collect(open_source(data, artifact.inputs))
    labels = batch.pop(LABELS)
    outputs = run_batched(artifact_runner(artifact), batch)
    first = next(iter(outputs.values()))
    return accuracy(first, labels) if is_classifier_output(first) else None


def prune(model: Path, sparsity: float | None, out_dir: Path, *, scope: str = "layer", exclude: tuple[str, ...] = (),
          prune_first_last: bool = False, pattern: str | None = None, fine_tuning: FineTuning | None = None,
          initial_sparsity: float = 0.0, begin_step: int = 0, end_step: int | None = None, frequency: int | None = None,
          data: str | None = None, force: bool = False, seed: int = 0, on_stage=None, trusted: bool = False, max_bytes: int | None = None) -> Report:
    """Prune `model` into OUTDIR (keras/model.pruned.keras or onnx/model.pruned.onnx) and add its record, with a
    `pruning` section, to OUTDIR/report.json. With labelled `data`, accuracy is measured before and after."""

    stage = on_stage or (lambda text: None)
    nm = parse_pattern(pattern)
    if nm is None and sparsity is None:
        raise BadInput("pass --sparsity (a fraction in [0, 1)) or --pattern N:M", "for example --sparsity 0.5")
    if sparsity is not None:
        check_sparsity(sparsity)
        if nm is not None and abs(sparsity - (1 - nm[0] / nm[1])) > 1e-9:
            raise BadInput(f"--pattern {pattern} fixes the sparsity at {1 - nm[0] / nm[1]:g}, but --sparsity is {sparsity:g}",
                           "drop --sparsity when using --pattern")
    if scope not in ("layer", "global"):
        raise BadInput(f"--scope must be layer or global, got {scope!r}", "use --scope layer or --scope global")
    stage("loading the model")
    source = open_artifact(model, trusted=trusted, max_bytes=max_bytes)
    target = (1 - nm[0] / nm[1]) if nm else float(sparsity)
    params: dict[str, Any] = dict(sparsity=target, scope=scope, exclude=tuple(exclude), prune_first_last=prune_first_last,
                                  pattern=pattern, fine_tuning=fine_tuning, initial_sparsity=initial_sparsity,
                                  begin_step=begin_step, end_step=end_step, frequency=frequency)
    p = pruning_pass(source.format, **params)
    ctx = Context(out_dir=out_dir, force=force, name=Path(model).stem, on_stage=stage, seed=seed)
    ensure_writable(p.output_path(ctx), force)  # fail before any work
    if data is not None:
        src = open_source(data, source.inputs)
        if not src.has_labels:
            raise BadInput(f"{data}: no labels, so accuracy cannot be measured",
                           "save the labels in the .npz under the key 'labels' (or 'y')")
    with outdir_lock(out_dir):  # taken once the input is known to be good, so a refused input writes nothing
        report = Report.load_or_new(out_dir, source)
        accuracy_before = None
        if data is not None:
            stage("accuracy of the source model")
            accuracy_before = labelled_accuracy(source, data)
        steps: list = []
        artifact = run_pass(p, source, ctx, steps)
        record = artifact_record(artifact, out_dir)
        pruning = record.meta.pop("pruning")
        if data is not None:
            stage("accuracy of the pruned model")
            pruning["accuracy_before"] = accuracy_before
            pruning["accuracy_after"] = labelled_accuracy(artifact, data)
            pruning["accuracy_data"] = str(data)
        else:
            pruning["accuracy_before"] = pruning["accuracy_after"] = None
        pruning["warnings"] = list(ctx.warnings)
        record.pruning = Pruning.from_dict(pruning)
        return _publish(report, record, steps, ctx, out_dir)


def prune_structured(model: Path, out_dir: Path, *, ratio: float | None = None, flops_target: float | None = None,
                     criterion: str = "l1", multiple: int | str = "auto", fine_tuning: FineTuning | None = None,
                     data: str | None = None, latency_runs: int = 50, force: bool = False, seed: int = 0, on_stage=None,
                     trusted: bool = False, max_bytes: int | None = None) -> Report:
    """Remove whole filters of a Keras model into OUTDIR/keras/model.structured.keras and add its record, with a
    `structured` section (FLOPs, params, size, latency and accuracy before/after), to OUTDIR/report.json."""
    from mdeploy.passes.checks.bench import bench
    from mdeploy.passes.prune.structured import PruneStructured, parse_multiple
    from mdeploy.passes.report.sections import StructuredPruning

    stage = on_stage or (lambda text: None)
    if latency_runs < 0:
        raise BadInput(f"--latency-runs must be >= 0, got {latency_runs}", "0 skips the latency measurement")
    p = PruneStructured(ratio=ratio, flops_target=flops_target, criterion=criterion, multiple=parse_multiple(multiple),
                        fine_tuning=fine_tuning)
    p.check()
    stage("loading the model")
    source = open_artifact(model, trusted=trusted, max_bytes=max_bytes)
    if source.format != "keras":
        raise BadInput(f"structured pruning rebuilds Keras models; this one is {source.format}",
                       "prune the .keras model, then convert the smaller model to ONNX or TFLite")
    ctx = Context(out_dir=out_dir, force=force, name=Path(model).stem, on_stage=stage, seed=seed)
    ensure_writable(p.output_path(ctx), force)
    if data is not None and not open_source(data, source.inputs).has_labels:
        raise BadInput(f"{data}: no labels, so accuracy cannot be measured",
                       "save the labels in the .npz under the key 'labels' (or 'y')")
    with outdir_lock(out_dir):
        report = Report.load_or_new(out_dir, source)
        section: dict[str, Any] = {}
        if data is not None:
            stage("accuracy of the source model")
            section["accuracy_before"] = labelled_accuracy(source, data)
        steps: list = []
        artifact = run_pass(p, source, ctx, steps)
        record = artifact_record(artifact, out_dir)
        section.update(record.meta.pop("structured"))
        if data is not None:
            stage("accuracy of the pruned model")
            section["accuracy_after"] = labelled_accuracy(artifact, data)
            section["accuracy_data"] = str(data)
        if latency_runs:
            stage("latency before and after")
            before = bench(source, runs=latency_runs, warmup=max(2, latency_runs // 10))
            after = bench(artifact, runs=latency_runs, warmup=max(2, latency_runs // 10))
            section.update(latency_ms_before=before["latency_ms"]["p50"], latency_ms_after=after["latency_ms"]["p50"],
                           latency_runtime=after["runtime"])
        section["warnings"] = list(ctx.warnings)
        record.structured = StructuredPruning.from_dict(section)
        return _publish(report, record, steps, ctx, out_dir)


def _publish(report: Report, record, steps: list, ctx: Context, out_dir: Path) -> Report:
    """The pruned model's record, its steps and the run's warnings into report.json."""
    report.add_artifact(record)
    report.add_steps(steps)
    report.warnings.extend(ctx.warnings)
    report.save(out_dir)
    return report
