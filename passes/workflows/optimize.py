"""The `optimize` plan: prune, convert, simplify and quantize in two parallel branches, then validate, bench and gate.

Everything is keyed by content so a re-run with nothing changed reuses every finished step:
passes through the step cache, validation and bench through `ResultCache`, and the source's
signature so a fully cached run never imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from mdeploy.calibration import open_source
from mdeploy.calibration.images import image_options as build
from mdeploy.calibration.shapes import parse_input_shapes, with_input_shapes
from mdeploy.calibration.sources import DataSpec
from mdeploy.passes.backends import open_artifact
from mdeploy.passes.checks.bench import bench
from mdeploy.passes.checks.bounds import bounds_of
from mdeploy.passes.checks.validate import Thresholds, validate
from mdeploy.passes.convert import ToOnnx, ToSavedModel, ToTflite
from mdeploy.passes.core.artifact import (
    DEPLOYMENT_TARGET,
    Artifact,
    TensorSpec,
    content_hash,
    detect_format,
)
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import name_from_file, write_text_atomic
from mdeploy.passes.core.lock import outdir_lock
from mdeploy.passes.core.pipeline import (
    MDEPLOY_VERSION,
    Context,
    Node,
    Step,
    run_branches,
    run_plan,
)
from mdeploy.passes.prune import sparsity_survival
from mdeploy.passes.prune.keras import PruneKeras
from mdeploy.passes.prune.structured import PruneStructured, parse_multiple
from mdeploy.passes.quantize import quantized_file_name
from mdeploy.passes.quantize.onnx import QuantizeOnnx
from mdeploy.passes.quantize.tflite import QuantizeTflite
from mdeploy.passes.report.journal import ReportJournal, previous_report
from mdeploy.passes.report.model import Report, artifact_record
from mdeploy.passes.report.render import to_html, to_markdown
from mdeploy.passes.report.sections import Gate, StructuredPruning
from mdeploy.passes.report.update import add_bench, add_validation
from mdeploy.passes.simplify import Simplify
from mdeploy.passes.workflows.recipe import Recipe, default_jobs

CACHE_DIR_NAME = ".mdeploy-cache"


class ResultCache:
    """JSON results (validation, bench, source signatures) keyed by a hash of everything they depend on."""

    def __init__(self, directory: Path | None):
        self.directory = Path(directory) / "results" if directory else None

    @staticmethod
    def key(**parts: Any) -> str:
        blob = json.dumps({**parts, "mdeploy": MDEPLOY_VERSION}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get(self, key: str) -> Any | None:
        if self.directory is None:
            return None
        f = self.directory / f"{key}.json"
        try:
            return json.loads(f.read_text()) if f.is_file() else None
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: Any) -> None:
        if self.directory is not None:
            write_text_atomic(self.directory / f"{key}.json", json.dumps(value, default=str))


def data_hash(spec: str | None) -> str | None:
    """Content hash of a data file or directory; the spec itself for `random` and module:function sources."""
    if spec is None or spec == "random":
        return spec
    p = Path(spec)
    return content_hash(p) if p.exists() else spec


def open_source_model(path: Path, cache: ResultCache, trusted: bool = False, max_bytes: int | None = None) -> Artifact:
    """open_artifact, with the signature cached by content so cached re-runs skip loading TensorFlow."""

    fmt, real = detect_format(path, max_bytes)
    key = cache.key(kind="signature", sha=content_hash(real))
    hit = cache.get(key)
    if hit is not None:
        return Artifact(fmt, real, tuple(TensorSpec.from_dict(t) for t in hit["inputs"]),
                        tuple(TensorSpec.from_dict(t) for t in hit["outputs"]), meta={"precision": "float32"}, trusted=trusted)
    artifact = open_artifact(real, trusted=trusted, max_bytes=max_bytes)
    cache.put(key, {"inputs": [t.to_dict() for t in artifact.inputs], "outputs": [t.to_dict() for t in artifact.outputs]})
    return artifact


def image_options(recipe: Recipe):
    import dataclasses as dc


    return build(**dc.asdict(recipe.images))


def _calibration_spec(recipe: Recipe):
    if recipe.calibration is None:
        return None
    return DataSpec(recipe.calibration, take=recipe.quantize.samples, image=image_options(recipe))


PRUNED_PREFIX = "pruned-"


def build_plan(source: Artifact, recipe: Recipe, name: str,
               warnings: list[str] | None = None) -> tuple[list[Node], dict[str, list[Node]]]:
    """(in-process prelude, parallel branches) for the recipe. The prelude prunes; branches convert and quantize."""

    warnings = warnings if warnings is not None else []
    if source.format == "tflite":
        raise BadInput("optimize starts from a Keras model, a SavedModel or an ONNX model, not TFLite",
                       "convert it first: `mdeploy convert MODEL.tflite --to onnx`, then optimize the ONNX")
    prelude: list[Node] = []
    base = "source"
    p = recipe.prune
    if p.sparsity > 0 or p.structured:
        if source.format != "keras":
            raise BadInput(f"optimize prunes Keras models; this one is {source.format}",
                           "prune the ONNX with `mdeploy prune`, or drop --sparsity/--structured")
        if p.structured:
            step = PruneStructured(ratio=p.ratio, flops_target=p.flops_target, criterion=p.criterion,
                                   multiple=parse_multiple(p.channel_multiple), fine_tuning=p.fine_tuning())
        else:
            step = PruneKeras(sparsity=p.sparsity, scope=p.scope, exclude=p.exclude, pattern=p.pattern,
                              fine_tuning=p.fine_tuning())
        prelude.append(Node("pruned", step))
        base = "pruned"
    calibration = _calibration_spec(recipe)
    q = recipe.quantize
    if calibration is None and "int8" in (*q.onnx, *q.tflite):
        warnings.append("no --calibration data: static int8 quantization skipped "
                        "(pass --calibration DATA, or `random` for a size/speed preview without accuracy)")
        q = dataclasses.replace(q, onnx=tuple(m for m in q.onnx if m != "int8"),
                                tflite=tuple(m for m in q.tflite if m != "int8"))
    want_cloud = recipe.target in ("cloud", "all")
    want_edge = recipe.target in ("edge", "all")
    if source.format == "onnx":
        if not want_cloud:
            raise BadInput("an ONNX model has no edge (TFLite) route in mdeploy", "use --target cloud for ONNX models")
        want_edge = False
    bases = [(base, "")]
    if base == "pruned" and (p.compare_dense if p.compare_dense is not None else p.structured):
        bases = [("source", ""), ("pruned", PRUNED_PREFIX)]  # pruned+int8 beside int8 and float
    onnx_nodes: list[Node] = []
    tf_nodes: list[Node] = []
    for start, prefix in bases:
        cloud, edge = _branch_nodes(source, recipe, q, calibration, name, start, prefix, want_cloud, want_edge)
        onnx_nodes += cloud
        tf_nodes += edge
    branches: dict[str, list[Node]] = {}
    if want_cloud:
        branches["onnx"] = onnx_nodes
    if tf_nodes:
        branches["tensorflow"] = tf_nodes
    return prelude, branches


def _branch_nodes(source: Artifact, recipe: Recipe, q, calibration, name: str, base: str, prefix: str,
                  want_cloud: bool, want_edge: bool) -> tuple[list[Node], list[Node]]:
    """The ONNX and TensorFlow branch nodes from `base`; a `prefix` names their keys and files apart (pruned-...)."""
    stem = "model" + (f".{prefix.rstrip('-')}" if prefix else "")

    def named(file_name: str) -> dict[str, str]:
        return {"file_name": file_name} if prefix else {}

    onnx_nodes: list[Node] = []
    if want_cloud:
        if source.format == "onnx":
            last = base
        else:
            onnx_nodes.append(Node(f"{prefix}onnx", ToOnnx(opset=recipe.opset, **named(f"{stem}.onnx")), base))
            last = f"{prefix}onnx"
        if recipe.simplify:
            onnx_nodes.append(Node(f"{prefix}onnx-sim", Simplify(data=calibration, **named(f"{stem}.sim.onnx")), last))
            last = f"{prefix}onnx-sim"
        for mode in q.onnx:
            onnx_nodes.append(Node(f"{prefix}onnx-{mode}", QuantizeOnnx(
                mode=mode, format=q.format, per_channel=q.per_channel, method=q.method, exclude=q.exclude,
                activations=q.activations, symmetric_activations=q.symmetric_activations,
                weight_ops_only=q.weight_ops_only, calibration=calibration if mode == "int8" else None,
                **named(quantized_file_name(mode, ".onnx", stem))), last))
    tf_nodes: list[Node] = []
    tflite_input = base
    if want_cloud and source.format != "onnx":
        tf_nodes.append(Node(f"{prefix}savedmodel", ToSavedModel(model_name=f"{name}-{prefix.rstrip('-')}" if prefix else name), base))
        tflite_input = f"{prefix}savedmodel"  # the TFLite converter reads SavedModels: reuse it, don't export again
    if want_edge:
        tf_nodes.append(Node(f"{prefix}tflite", ToTflite(**named(f"{stem}.tflite")), tflite_input))
        for mode in q.tflite:
            tf_nodes.append(Node(f"{prefix}tflite-{mode}", QuantizeTflite(
                mode=mode, io=q.io, denylist=q.denylist if mode == "int8" else (),
                calibration=calibration if mode == "int8" else None,
                **named(quantized_file_name(mode, ".tflite", stem))), tflite_input))
    return onnx_nodes, tf_nodes


def check_data(recipe: Recipe, source: Artifact) -> None:
    """Open every data source the recipe names and read its first batch: a missing or malformed file is BadInput
    (exit 2) before any work, not a quietly skipped int8 artifact."""
    for spec in (recipe.calibration, recipe.validation):
        if spec is not None and spec != "random":
            next(iter(open_source(spec, source.inputs, image=image_options(recipe))), None)


def requested_targets(recipe: Recipe) -> list[str]:
    return ["cloud", "edge"] if recipe.target == "all" else [recipe.target]


def optimize(model: Path, out_dir: Path, recipe: Recipe, *, force: bool = False, on_stage=None, trusted: bool = False,
             verbose: bool = False, max_bytes: int | None = None) -> Any:
    """Run the whole pipeline on `model`, write OUTDIR/report.{json,md,html}, and return the Report.

    A re-run adds to OUTDIR's report: records whose files are intact are kept, this run's replace them by name.

    The report's artifacts carry status "ok" or "rejected" (over the accuracy budget) or the step failures;
    `report.gate` names the requested targets; `report.verdict` says whether each has a passing artifact.
    """

    stage = on_stage or (lambda text: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = None if not recipe.cache else Path(recipe.cache_dir) if recipe.cache_dir else out_dir / CACHE_DIR_NAME
    results = ResultCache(cache_dir)
    t_start = time.perf_counter()
    stage("reading the model")
    source = with_input_shapes(open_source_model(Path(model), results, trusted, max_bytes),
                               parse_input_shapes(recipe.input_shapes))
    if source.format == "onnx" and recipe.target == "all":
        recipe = dataclasses.replace(recipe, target="cloud")  # no TFLite route from ONNX: the default follows the source
    stage("checking the data")
    check_data(recipe, source)
    if recipe.quantize.accuracy_budget is not None:  # the budget is the gate's accuracy bound
        recipe = dataclasses.replace(recipe, validate=dataclasses.replace(
            recipe.validate, max_accuracy_drop=recipe.quantize.accuracy_budget))
    name = recipe.name or name_from_file(model)  # recipe.name was checked by recipe.check
    plan_warnings: list[str] = []
    prelude, branches = build_plan(source, recipe, name, plan_warnings)
    with outdir_lock(out_dir):  # taken once the model and the plan are known to be good
        report, listed = previous_report(out_dir, source)
        if report.steps:  # the previous run's steps and warnings describe that run; a fresh report's note is kept
            report.warnings = []
        report.steps = []
        report.source = Report.for_source(source).source
        ctx = Context(out_dir=out_dir, force=force, name=name, cache_dir=cache_dir, on_stage=stage, verbose=verbose,
                      replaceable=listed, on_publish=ReportJournal(out_dir, report.source))
        report.warnings.extend(plan_warnings)
        report.recipe = recipe.to_dict()

        inputs = {"source": source}
        steps: list[Step] = []
        failures: dict[str, str] = {}
        if prelude:
            pre = run_plan(prelude, inputs, ctx)
            steps += pre.steps
            failures.update(pre.failures)
            inputs.update(pre.artifacts)
            if "pruned" not in inputs:
                branches = {}
        produced: dict[str, Artifact] = {k: v for k, v in inputs.items() if k != "source"}

        jobs = recipe.jobs if recipe.jobs is not None else default_jobs()
        for res in run_branches(branches, inputs, ctx, jobs=jobs).values():
            steps += res.steps
            failures.update(res.failures)
            produced.update(res.artifacts)
        searched = {}
        if recipe.quantize.accuracy_budget is not None or recipe.quantize.debug_layers:
            from mdeploy.passes.workflows.accuracy import optimize_searches

            searched = optimize_searches(produced, inputs, recipe, ctx, steps, image_options(recipe), stage)
        report.add_steps(steps)
        report.warnings.extend(ctx.warnings)
        for key, reason in failures.items():
            report.warnings.append(f"{key}: {reason}")
        # A skipped simplification hands on the unsimplified model; list each file once.
        seen: set[Path] = set()
        artifacts: list[Artifact] = []
        for key, a in produced.items():
            if key.startswith(PRUNED_PREFIX):  # the pruned chain beside the dense one: named apart in the report
                a = dataclasses.replace(a, name=PRUNED_PREFIX + a.name)
            if Path(a.path).resolve() not in seen:
                seen.add(Path(a.path).resolve())
                artifacts.append(a)
        for a in artifacts:
            record = artifact_record(a, out_dir)
            record.target = DEPLOYMENT_TARGET.get(a.format)
            structured = record.meta.pop("structured", None)  # inherited by every child: kept on the pruned model only
            if structured and (record.produced_by or {}).get("pass") == PruneStructured.name:
                record.structured = StructuredPruning.from_dict(structured)
            if "pruned" in produced and a.precision != "float32" and not recipe.prune.structured:
                record.extra["sparsity_survival"] = survival = sparsity_survival(produced["pruned"], a)
                record.sparsity = survival["sparsity_after"]
            if a.name in searched:
                searched[a.name].attach(record, out_dir)
            report.add_artifact(record)

        _validate(report, source, artifacts, recipe, out_dir, results, stage)
        if recipe.bench.enabled:
            _bench(report, source, artifacts, recipe, out_dir, results, stage)
        v = recipe.validate
        report.gate = Gate(max_accuracy_drop=v.max_accuracy_drop, targets={t: {} for t in requested_targets(recipe)},
                           failed_steps=failures, strict=v.strict or None)
        if report.verdict.ungated:
            report.warnings.append(f"NOTHING GATED {', '.join(report.verdict.ungated)}: no bound applied to any output "
                                   "(give labelled --validation data or set --min-agreement/--min-sqnr/--max-rel-error; "
                                   "--strict makes this a failure)")
        report.seconds = round(time.perf_counter() - t_start, 2)
        save_all(report, out_dir)
        return report


def _validate(report, source: Artifact, artifacts: list[Artifact], recipe: Recipe, out_dir: Path, results: ResultCache,
              stage) -> None:

    candidates = [a for a in artifacts if a.format in ("onnx", "savedmodel", "tflite", "keras")]
    if not candidates:
        return
    spec = recipe.validation
    if spec is None and recipe.calibration not in (None, "random"):
        spec = recipe.calibration
        report.warnings.append("no --validation data: validated on the calibration data, which is not held out")
    if spec is None or spec == "random":
        spec = "random"
        report.warnings.append("validated on random inputs: accuracy was NOT validated (pass --validation DATA)")
    v = recipe.validate
    thresholds = Thresholds(**bounds_of(v))
    key = results.key(kind="validate", ref=report.source.sha256, cands=[a.sha256() for a in candidates],
                      data=data_hash(spec), thresholds=thresholds.to_dict())
    cached = results.get(key)
    stage("validating " + ", ".join(a.name for a in candidates))
    if cached is None:
        data = open_source(spec, source.inputs, samples=300 if spec == "random" else None, image=image_options(recipe))
        result = validate(source, candidates, data, thresholds).to_dict()
        results.put(key, result)
    else:
        result = cached

    if not result.get("labels"):
        report.warnings.append("the validation data has no labels: accuracy and its drop are not measured; "
                               "classifiers are gated on top-1 agreement and SQNR, other outputs on SQNR")
    add_validation(report, out_dir, result, {a.name: Path(a.path) for a in candidates}, Path(source.path))


def _bench(report, source: Artifact, artifacts: list[Artifact], recipe: Recipe, out_dir: Path, results: ResultCache,
           stage) -> None:

    b = recipe.bench
    for a in [source, *[x for x in artifacts if x.format != "keras"]]:
        key = results.key(kind="bench", sha=a.sha256(), fmt=a.format, batch=b.batch, threads=b.threads, warmup=b.warmup,
                          runs=b.runs)
        cached = results.get(key)
        stage(f"benchmarking {a.name}")
        if cached is None:
            cached = bench(a, batch=b.batch, threads=b.threads, warmup=b.warmup, runs=b.runs)
            results.put(key, cached)
        cached = {**cached, "path": str(a.path)}
        add_bench(report, out_dir, cached)


def save_all(report, out_dir: Path) -> None:
    report.save(out_dir)
    write_text_atomic(out_dir / "report.md", to_markdown(report))
    write_text_atomic(out_dir / "report.html", to_html(report))
