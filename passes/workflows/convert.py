"""`convert`: a model to SavedModel (TF Serving layout), ONNX and TFLite, each artifact parity-checked against the source."""
from __future__ import annotations

import time
from pathlib import Path

from mdeploy.calibration.shapes import InputShapes, with_input_shapes
from mdeploy.passes.backends import artifact_runner, open_artifact, run_batched
from mdeploy.passes.checks.parity import PARITY_TOLERANCE, parity_check, parity_feeds
from mdeploy.passes.convert import ToOnnx, ToSavedModel, ToTflite
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import EXIT_BAD_INPUT, BadInput, MdeployError, PassFailed
from mdeploy.passes.core.fsio import ensure_writable, name_from_file, safe_component
from mdeploy.passes.core.lock import outdir_lock
from mdeploy.passes.core.pipeline import Context, Step, pass_params, run_pass
from mdeploy.passes.defaults import DEFAULT_OPSET
from mdeploy.passes.report.journal import ReportJournal
from mdeploy.passes.report.model import Report, artifact_record
from mdeploy.passes.report.sections import Checks
from mdeploy.passes.workflows.recipe import check_opset

CONVERT_FORMATS = ("savedmodel", "onnx", "tflite")


def parse_targets(text: str) -> list[str]:
    targets = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in targets if t not in CONVERT_FORMATS]
    if bad or not targets:
        raise BadInput(f"unknown target(s) for --to: {', '.join(bad) or '(none)'}", f"choose from {','.join(CONVERT_FORMATS)}")
    return list(dict.fromkeys(targets))


def conversion_passes(source: Artifact, targets: list[str], *, name: str, opset: int, tflite_select_ops: bool = False) -> list:
    """The conversion pass for each target, refusing what makes no sense for this source."""

    if source.format == "onnx":
        raise BadInput("the model is already ONNX: there is nothing to convert it to yet",
                       "use `mdeploy simplify` or `mdeploy quantize --to onnx` on an ONNX model")
    if source.format == "tflite" and targets != ["onnx"]:
        raise BadInput(f"a TFLite model can only be converted to onnx (asked for: {','.join(targets)})",
                       "pass --to onnx")
    made = {"savedmodel": lambda: ToSavedModel(model_name=name), "onnx": lambda: ToOnnx(opset=opset), "tflite": lambda: ToTflite(select_tf_ops=tflite_select_ops)}
    return [made[t]() for t in targets]


def planned_outputs(passes: list, out_dir: Path, name: str) -> list[Path]:
    paths = {"convert.savedmodel": out_dir / "savedmodel" / name / "1", "convert.onnx": out_dir / "onnx" / "model.onnx",
             "convert.tflite": out_dir / "tflite" / "model.tflite"}
    return [paths[p.name] for p in passes]


def convert(model: Path, targets: list[str], out_dir: Path, *, opset: int | None = None, name: str | None = None,
            data: str | None = None, force: bool = False, tolerance: float | None = None, on_stage=None,
            trusted: bool = False, max_bytes: int | None = None,
                 input_shapes: InputShapes = (), tflite_select_ops: bool = False) -> Report:
    """Convert `model` to each target, check parity of each artifact against the source, and write report.json."""

    stage = on_stage or (lambda text: None)
    name = safe_component(name, "--name") if name is not None else name_from_file(model)  # a name becomes a path
    check_opset(opset or DEFAULT_OPSET)
    stage("loading the model")
    source = with_input_shapes(open_artifact(model, trusted=trusted, max_bytes=max_bytes), input_shapes)
    passes = conversion_passes(source, targets, name=name, opset=opset or DEFAULT_OPSET, tflite_select_ops=tflite_select_ops)
    for path in planned_outputs(passes, out_dir, name):
        ensure_writable(path, force)  # fail before any work, not after the first artifact
    with outdir_lock(out_dir):  # taken once the input is known to be good, so a refused input writes nothing
        report = Report.load_or_new(out_dir, source)
        ctx = Context(out_dir=out_dir, force=force, name=name, parity_data=data, on_stage=stage,
                      on_publish=ReportJournal(Path(out_dir), report.source))
        feeds, feeds_desc = parity_feeds(source, data)
        stage("running the source model")
        reference = run_batched(artifact_runner(source), feeds)
        failures: list[tuple[str, MdeployError]] = []
        for p in passes:
            steps: list = []
            try:
                artifact = run_pass(p, source, ctx, steps)
            except MdeployError as e:  # each target stands alone: one failing never costs the others
                if e.exit_code == EXIT_BAD_INPUT:
                    raise
                failures.append((p.produces, e))
                report.add_steps([Step(p.name, pass_params(p), str(source.path), "", 0.0, status="failed", note=e.message)])
                report.warnings.append(f"{p.produces}: {e.message}")
                continue
            stage(f"parity check: {artifact.name}")
            t0 = time.perf_counter()
            record = artifact_record(artifact, out_dir)
            if artifact.meta.get("tflite_route") == "select-tf-ops":  # LiteRT cannot run Flex ops: nothing to measure
                steps[-1].note = "parity not checked: the model needs the Flex delegate, which LiteRT lacks"
                report.add_artifact(record)
                report.add_steps(steps)
                continue
            record.checks = Checks.from_dict({**parity_check(reference, artifact, feeds, PARITY_TOLERANCE if tolerance is None else tolerance),
                                              "inputs": feeds_desc})
            steps[-1].note = f"parity {'passed' if record.checks.passed else 'FAILED'} in {time.perf_counter() - t0:.2f}s"
            report.add_artifact(record)
            report.add_steps(steps)
        report.warnings.extend(ctx.warnings)
        report.save(out_dir)
        if failures:
            done = [p.produces for p in passes if p.produces not in dict(failures)]
            first = failures[0][1]
            raise PassFailed("; ".join(f"{fmt}: {e.message}" for fmt, e in failures)
                             + (f" ({', '.join(done)} converted and recorded in report.json)" if done else ""), first.hint) from first
        return report
