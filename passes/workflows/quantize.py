"""`quantize`: an int8, dynamic or fp16 artifact for ONNX Runtime or LiteRT, compared with its float parent on held-out data."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from mdeploy.calibration.batches import batch_size_of
from mdeploy.calibration.shapes import InputShapes, with_input_shapes
from mdeploy.calibration.sources import DataSpec
from mdeploy.passes.backends import open_artifact
from mdeploy.passes.checks.gates import Thresholds
from mdeploy.passes.checks.parity import runnable_inputs
from mdeploy.passes.core.artifact import Artifact, TensorSpec, content_hash
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import ensure_writable, write_text_atomic
from mdeploy.passes.core.lock import outdir_lock
from mdeploy.passes.core.pipeline import Context, run_pass
from mdeploy.passes.defaults import DEFAULT_SAMPLES
from mdeploy.passes.prune import measure_sparsity, sparsity_survival
from mdeploy.passes.quantize import MODES, quantization_quality
from mdeploy.passes.quantize.onnx import QuantizeOnnx
from mdeploy.passes.quantize.tflite import QuantizeTflite
from mdeploy.passes.report.journal import ReportJournal
from mdeploy.passes.report.model import Report, artifact_record
from mdeploy.passes.report.sections import AccuracySearch, LayerErrors, Quality
from mdeploy.passes.workflows.accuracy import reproducing_recipe
from mdeploy.passes.workflows.convert import convert
from mdeploy.passes.workflows.recipe import check_opset

QUANTIZE_FORMATS = ("onnx", "tflite")




HOLDOUT_FRACTION = 5  # without --validation, the last 1/5 of the calibration data is held out


RANDOM_WARNING = "random calibration data: accuracy was not validated (quality is measured on generated inputs only)"


@dataclasses.dataclass
class DataPlan:
    """Which samples calibrate and which judge the result, decided (and every sample checked) before any work."""

    calibration: Any  # DataSpec | None
    heldout: Any  # DataSpec
    calibration_samples: int
    warnings: list[str]


def plan_data(inputs, mode: str, calibration: str | None, validation: str | None, samples: int, *,
              image=None, batch_size: int = 32, seed: int = 0) -> DataPlan:
    """Open and read through the data once: shape/dtype/NaN errors surface here, before anything is written."""

    if samples < 1:
        raise BadInput(f"--samples {samples}: need at least one", "pass --samples N with N >= 1")
    warnings: list[str] = []
    if mode == "int8" and calibration is None:
        raise BadInput("int8 quantization needs calibration data",
                       "pass --calibration DATA (.npz, .csv, a directory of .npy files or images, module:function), or `random`")

    def spec(text: str, **kw) -> DataSpec:
        return DataSpec(text, batch_size=batch_size, image=image, **{"seed": seed, **kw})

    def counted(s: DataSpec, flag: str) -> int:
        n = sum(batch_size_of(b) for b in s.open(inputs))  # read through: every batch is checked now, not mid-quantization
        if n == 0:
            raise BadInput(f"{flag} {s.spec}: no samples", "give data with at least one sample")
        return n

    heldout = None
    if validation is not None:
        if validation == "random":
            raise BadInput("--validation random would validate nothing", "pass held-out data with labels, or leave --validation out")
        heldout = spec(validation)
        counted(heldout, "--validation")
    cal = None
    n_cal = 0
    if calibration == "random":
        cal = spec("random", take=samples)
        n_cal = samples
        warnings.append(RANDOM_WARNING)
        heldout = heldout or spec("random", take=min(samples, 32), seed=seed + 1)
    elif calibration is not None:
        total = counted(spec(calibration), "--calibration")
        keep_out = 0 if heldout is not None or total < 2 else max(1, total // HOLDOUT_FRACTION)
        n_cal = min(samples, total - keep_out)
        cal = spec(calibration, take=n_cal)
        if heldout is None:
            if keep_out:
                heldout = spec(calibration, skip=total - keep_out, take=keep_out)
            else:
                heldout = spec(calibration)
                warnings.append(f"{calibration} has one sample: quality is measured on the calibration sample itself")
        if n_cal < samples:
            warnings.append(f"calibration data has {n_cal} usable sample(s), fewer than --samples {samples}: using {n_cal}"
                            + (f" ({keep_out} held out for validation)" if keep_out else ""))
    if heldout is None:
        heldout = spec("random", take=32, seed=seed + 1)
        warnings.append("no --validation or --calibration data: quality is measured on generated inputs; accuracy was not validated")
    return DataPlan(cal if mode == "int8" else None, heldout, n_cal if mode == "int8" else 0, warnings)


def float_parent(model: Path, source: Artifact, to: str, out_dir: Path, *, opset: int | None, force: bool, on_stage) -> Artifact:
    """The float artifact in the target format: the source itself, one a previous run left in OUTDIR, or a fresh conversion."""
    if source.format == to:
        return source
    existing = Report.load_or_new(out_dir, source).artifact(to)
    if existing and not force:
        path = Path(out_dir) / existing.path
        if path.exists() and content_hash(path) == existing.sha256:
            return Artifact(format=to, path=path, name=to, parent=source,
                            inputs=tuple(TensorSpec.from_dict(t) for t in existing.inputs),
                            outputs=tuple(TensorSpec.from_dict(t) for t in existing.outputs), meta={"precision": "float32"})
    report = convert(model, [to], out_dir, opset=opset, force=force, on_stage=on_stage, trusted=source.trusted)
    record = report.artifact(to)
    return Artifact(format=to, path=Path(out_dir) / record.path, name=to, parent=source,
                    inputs=tuple(TensorSpec.from_dict(t) for t in record.inputs),
                    outputs=tuple(TensorSpec.from_dict(t) for t in record.outputs), meta={"precision": "float32"})


def quantization_pass(to: str, mode: str, calibration, *, method: str, format: str, per_channel: bool,
                      exclude: tuple[str, ...], io: str, activations: str = "uint8", symmetric: bool = False,
                      weight_ops_only: bool = False):
    if to == "onnx":
        if io != "float":
            raise BadInput("--io applies to --to tflite only", "ONNX int8 models keep float inputs and outputs (QDQ)")
        return QuantizeOnnx(mode=mode, format=format, per_channel=per_channel, method=method, exclude=exclude,
                            calibration=calibration, activations=activations, symmetric_activations=symmetric,
                            weight_ops_only=weight_ops_only)

    if format != "qdq" or method != "minmax" or not per_channel or activations != "uint8" or symmetric or weight_ops_only:
        raise BadInput("--format, --method, --per-tensor, --activations, --symmetric-activations and --weight-ops-only "
                       "apply to --to onnx only",
                       "the TFLite converter chooses these itself")
    if exclude and mode != "int8":
        raise BadInput("--exclude on --to tflite applies to --mode int8 (it keeps those ops in float)",
                       "use --mode int8, or drop --exclude")
    return QuantizeTflite(mode=mode, io=io, calibration=calibration, denylist=tuple(exclude))


def budget_thresholds(budget: float | None, thresholds: Thresholds | None, mode: str, debug_layers: bool) -> Thresholds | None:
    """The gate an --accuracy-budget run is held to: the user's bounds with max_accuracy_drop = the budget."""
    if (budget is not None or debug_layers) and mode != "int8":
        raise BadInput(f"--accuracy-budget and --debug-layers apply to --mode int8 (got --mode {mode})",
                       "use --mode int8, or drop those flags")
    if budget is None:
        return thresholds
    if not 0.0 <= budget < 1.0:
        raise BadInput(f"--accuracy-budget {budget}: must be a fraction in [0, 1) (0.01 = one point of accuracy)",
                       "pass e.g. --accuracy-budget 0.01")
    if thresholds is None or not thresholds.enabled:
        raise BadInput("--accuracy-budget needs the gate, and --no-gate turns it off", "drop --no-gate")
    return dataclasses.replace(thresholds, max_accuracy_drop=budget)


def _search_and_debug(source_for_pass: Artifact, parent: Artifact, qpass, plan: DataPlan, thresholds, budget, want_debug,
                      seed: int, stage, ctx: Context, work: Path):
    """(the pass to run, the search or None, the layer errors or None), measured in the temporary directory `work`,
    whose calibration cache (work/calibration) the final quantization then uses: its setting was calibrated here."""
    from mdeploy.passes.workflows.accuracy import accuracy_search, debug_layers

    search = debug = None
    if budget is not None:
        search, qpass, notes = accuracy_search(source_for_pass, parent, qpass, plan.heldout, thresholds, budget,
                                               work, seed=seed, on_stage=stage)
        ctx.warnings.extend(notes)
        debug = search.debug
    if want_debug and debug is None:
        stage("measuring each layer's quantization error")
        debug = debug_layers(source_for_pass, parent, qpass, plan.heldout, work, seed, stage)
    return qpass, search, debug


UNUSABLE_SQNR_DB = 10.0  # noise over a third of the signal's amplitude: the quantized outputs are not the model's


def quality_warning(name: str, quality: dict) -> str | None:
    """A warning when the quantized outputs are far from the float model's (the gate decides; this names it)."""
    sqnr = quality.get("sqnr_db")
    if sqnr is None or sqnr >= UNUSABLE_SQNR_DB:
        return None
    return (f"{name}: outputs far from the float model's (SQNR {sqnr:.1f} dB, max abs error "
            f"{quality.get('max_abs_error', float('nan')):.3g}): likely unusable; --exclude the op types that "
            "lose the most (recurrent ones often) or use --mode fp16")


SPARSE_ENOUGH = 0.05  # below this a model was not pruned; its few zeros are not worth a survival check


def sparsity_kept(source, quantized) -> dict | None:
    """For a pruned source (keras/onnx), whether its zero weights survived quantization; else None."""
    if source.format not in ("keras", "onnx"):
        return None

    if measure_sparsity(source)["sparsity"] < SPARSE_ENOUGH:
        return None
    return sparsity_survival(source, quantized)


def quantize(model: Path, to: str, mode: str, out_dir: Path, *, calibration: str | None = None,
             validation: str | None = None, samples: int = DEFAULT_SAMPLES, method: str = "minmax", format: str = "qdq",
             per_channel: bool = True, exclude: tuple[str, ...] = (), io: str = "float", activations: str = "uint8",
             image=None, batch_size: int = 32,
             opset: int | None = None, thresholds: Thresholds | None = Thresholds(), force: bool = False, seed: int = 0,
             on_stage=None, trusted: bool = False, max_bytes: int | None = None,
             input_shapes: InputShapes = (), symmetric_activations: bool = False, weight_ops_only: bool = False,
             debug_layers: bool = False,
             accuracy_budget: float | None = None) -> Report:
    """Quantize `model` for `to` in `mode`, compare it with its float parent on held-out data, and add it to OUTDIR/report.json.

    `debug_layers` measures the error each layer's quantization adds (passes/quantize/debug.py); `accuracy_budget`
    (a maximum accuracy drop) searches for the cheapest setting that meets it when plain int8 does not
    (passes/quantize/search.py), writes the chosen artifact and a recipe that rebuilds it, and gates on the budget.
    """

    stage = on_stage or (lambda text: None)
    if to not in QUANTIZE_FORMATS:
        raise BadInput(f"--to {to}: quantization targets are {', '.join(QUANTIZE_FORMATS)}", "pass --to onnx or --to tflite")
    if mode not in MODES:
        raise BadInput(f"--mode {mode}: unknown mode", f"choose from {', '.join(MODES)}")
    if opset is not None:
        check_opset(opset)
    stage("loading the model")
    source = with_input_shapes(open_artifact(model, trusted=trusted, max_bytes=max_bytes), input_shapes)
    probe_note = None
    if not input_shapes and calibration in (None, "random") and validation is None and source.format == "onnx":
        source, probe_note = runnable_inputs(source)
    if source.format == "tflite" or (to == "tflite" and source.format == "onnx"):
        raise BadInput(f"cannot quantize a {source.format} model for --to {to}",
                       "start from the Keras model or SavedModel (or an ONNX model for --to onnx)")
    out_dir = Path(out_dir)
    qpass = quantization_pass(to, mode, None, method=method, format=format, per_channel=per_channel,
                              exclude=tuple(exclude), io=io, activations=activations, symmetric=symmetric_activations,
                              weight_ops_only=weight_ops_only)
    thresholds = budget_thresholds(accuracy_budget, thresholds, mode, debug_layers)
    ensure_writable(qpass.output_path(Context(out_dir=out_dir)), force)  # before any work
    stage("checking the data")
    plan = plan_data(source.inputs, mode, calibration, validation, samples, image=image, batch_size=batch_size, seed=seed)
    with outdir_lock(out_dir):  # taken once the input is known to be good, so a refused input writes nothing
        parent = float_parent(model, source, to, out_dir, opset=opset, force=force, on_stage=stage)
        if parent is not source:  # the converted parent's signature has the source's names: pin the same shapes
            names = {t.name for t in parent.inputs}
            parent = with_input_shapes(parent, tuple((n, d) for n, d in input_shapes if n in names))
        qpass = dataclasses.replace(qpass, calibration=plan.calibration)
        ctx = Context(out_dir=out_dir, force=force, name=Path(model).stem, seed=seed, on_stage=stage,
                      on_publish=ReportJournal(out_dir, Report.for_source(source).source))
        search = debug = None
        steps: list = []
        with tempfile.TemporaryDirectory(prefix="mdeploy-accuracy-") as work:
            if accuracy_budget is not None or debug_layers:
                qpass, search, debug = _search_and_debug(parent if to == "onnx" else source, parent, qpass, plan,
                                                          thresholds, accuracy_budget, debug_layers, seed, stage, ctx,
                                                          Path(work))
                ctx.calibration_cache = Path(work) / "calibration"  # the ranges the search measured for this setting
            quantized = run_pass(qpass, parent if to == "onnx" else source, ctx, steps)
        ctx.calibration_cache = None
        stage(f"comparing {quantized.name} with {parent.name} on held-out data")
        quality = quantization_quality(parent, quantized, plan.heldout.open(parent.inputs),
                                       thresholds if thresholds is not None and thresholds.enabled else None)
        record = artifact_record(quantized, out_dir)
        record.quality = Quality.from_dict(quality)
        record.extra["calibration"] = ({"data": plan.calibration.spec, "samples": plan.calibration_samples,
                                  "method": method if to == "onnx" else "tflite-converter"} if plan.calibration else None)
        if debug is not None:
            record.layer_errors = LayerErrors.from_dict(debug.to_dict())
        if search is not None:
            recipe_path = out_dir / to / f"{Path(qpass.output_path(ctx)).stem}.recipe.toml"
            write_text_atomic(recipe_path, reproducing_recipe(to, qpass, calibration, validation, plan.calibration_samples, search))
            record.accuracy_search = AccuracySearch.from_dict(
                {**{k: v for k, v in search.to_dict().items() if k != "debug"},
                 "data": plan.heldout.spec if plan.heldout.take is None else
                 f"{plan.heldout.spec}[{plan.heldout.skip}:{plan.heldout.skip + plan.heldout.take}]",
                 "calibration": plan.calibration.spec if plan.calibration else None,
                 "recipe": str(recipe_path.relative_to(out_dir))})
        survival = sparsity_kept(source, quantized)
        if survival is not None:
            record.sparsity = survival["sparsity_after"]
            record.extra["sparsity_survival"] = survival
            if not survival["survived"]:
                ctx.warn(f"{quantized.name}: quantization filled in pruned zeros "
                         f"({survival['zeros_before']} zero weights before, {survival['zeros_after']} after)")
        report = Report.load_or_new(out_dir, source)
        report.add_artifact(record)
        report.add_steps(steps)
        flag = quality_warning(quantized.name, quality)
        for w in plan.warnings + ([probe_note] if probe_note else []) + ctx.warnings + ([flag] if flag else []):
            if w not in report.warnings:
                report.warnings.append(w)
        report.save(out_dir)
        if debug is not None or search is not None:  # the layer chart and search trace live in report.html
            from mdeploy.passes.report.render import to_html, to_markdown

            write_text_atomic(out_dir / "report.md", to_markdown(report))
            write_text_atomic(out_dir / "report.html", to_html(report))
        return report
