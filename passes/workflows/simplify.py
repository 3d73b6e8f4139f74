"""`simplify`: onnxsim on one ONNX file, checked against the input, with a before/after summary."""
from __future__ import annotations

from pathlib import Path

from mdeploy.calibration.shapes import InputShapes, pin_input_shapes
from mdeploy.calibration.sources import DataSpec
from mdeploy.passes.backends import open_artifact
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import ensure_writable
from mdeploy.passes.core.lock import outdir_lock
from mdeploy.passes.core.pipeline import Context, run_pass
from mdeploy.passes.report.model import REPORT_NAME, Report, artifact_record
from mdeploy.passes.simplify import Simplify


def simplify(model: Path, out: Path, *, strict: bool = False, data: str | None = None,
             input_shapes: InputShapes = (), force: bool = False, on_stage=None,
             max_bytes: int | None = None) -> Report:
    """Simplify `model` into `out`. The report (also saved beside OUT when that directory's report.json is free
    or describes the same model) holds the artifact with its `simplify` summary and the step, `skipped` on fallback."""

    stage = on_stage or (lambda text: None)
    model, out = Path(model), Path(out)
    if out.suffix.lower() != ".onnx":
        raise BadInput(f"-o {out}: the output must be an .onnx file", "for example -o model.sim.onnx")
    if out.resolve() == model.resolve():
        raise BadInput(f"-o {out} is the input model", "mdeploy never modifies an input file; choose another output path")
    ensure_writable(out, force)
    stage("loading the model")
    source = open_artifact(model, max_bytes=max_bytes)
    if source.format != "onnx":
        raise BadInput(f"{model} is a {source.format} model; simplify takes ONNX", "convert it first: mdeploy convert MODEL --to onnx")
    pin_input_shapes(source.inputs, input_shapes)  # a wrong name, rank or fixed dimension is the user's error (exit 2)
    p = Simplify(file_name=str(out.resolve()), input_shapes=input_shapes, data=DataSpec(data) if data else None, strict=strict)
    with outdir_lock(out.parent):  # OUT's folder is the OUTDIR: taken only once the input is known to be good
        return _simplify(p, source, model, out, force, stage)


def _simplify(p: Simplify, source, model: Path, out: Path, force: bool, stage) -> Report:
    ctx = Context(out_dir=out.parent, force=force, name=model.stem, on_stage=stage)
    steps: list = []
    result = run_pass(p, source, ctx, steps)
    report = Report.for_source(source)
    existing = out.parent / REPORT_NAME
    shared = Report.load_or_new(out.parent, source) if existing.is_file() else None
    if shared is not None and shared.source.sha256 == source.sha256():
        report = shared
    record = artifact_record(result, out.parent)
    record.extra["simplify"] = record.meta.get("simplify")
    report.add_artifact(record)
    report.add_steps(steps)
    report.warnings.extend(w for w in ctx.warnings if w not in report.warnings)
    if not existing.is_file() or report is shared:
        report.save(out.parent)
    return report
