"""Accuracy-aware int8 for `quantize` (and the recipe): `--debug-layers` and the `--accuracy-budget` search, wired to
the real quantizers and the gate. The search itself is passes/quantize/search.py; the layer measurement is
passes/quantize/debug.py. Every trial is written to a temporary directory; only the chosen setting is quantized
into OUTDIR (by the caller, through the normal pass, so the step cache and the report record it like any other).
A trial re-uses what does not change between trials: the float parent's held-out outputs (run once), and for ONNX
the calibration ranges of each knob setting (computed once; excluding layers does not change them).
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from mdeploy.passes.checks.bounds import bounds_of
from mdeploy.passes.checks.gates import Thresholds
from mdeploy.passes.checks.validate import ReferenceOutputs
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.pipeline import Context
from mdeploy.passes.quantize import quantization_quality
from mdeploy.passes.quantize.debug import LayerDebug, onnx_layer_errors
from mdeploy.passes.quantize.onnx import QuantizeOnnx, pre_process
from mdeploy.passes.quantize.search import Knobs, SearchResult, Trial, budget_search, knob_candidates


def knobs_of(qpass) -> Knobs:
    if isinstance(qpass, QuantizeOnnx):
        return Knobs(qpass.method, qpass.per_channel, qpass.symmetric_activations, qpass.weight_ops_only)
    return Knobs("minmax", qpass.per_channel, False)


def with_knobs(qpass, knobs: Knobs, exclude: tuple[str, ...]):
    if isinstance(qpass, QuantizeOnnx):
        return dataclasses.replace(qpass, method=knobs.method, per_channel=knobs.per_channel,
                                   symmetric_activations=knobs.symmetric, weight_ops_only=knobs.weight_ops,
                                   exclude=exclude)
    return dataclasses.replace(qpass, per_channel=knobs.per_channel, denylist=exclude)


def knob_options(qpass) -> list[Knobs]:
    """ONNX Runtime offers every knob; the TFLite converter only per-channel vs per-tensor weights (its calibration
    is min/max and its int8 activations asymmetric by the TFLite spec; keeping op types in float is the denylist,
    which the layer stage searches)."""
    base = knobs_of(qpass)
    if isinstance(qpass, QuantizeOnnx):
        return knob_candidates(base)
    return [Knobs(base.method, not base.per_channel, base.symmetric)]


def trial_from_quality(stage: str, knobs: Knobs, exclude: tuple[str, ...], quality: dict[str, Any], seconds: float) -> Trial:
    failures = quality.get("failures") or []
    first = failures[0] if failures else None
    text = f"{first['metric']} = {first['value']:.4g} (bound {first['threshold']:.4g})" if first else ""
    return Trial(stage, knobs, exclude, bool(quality.get("passed")), quality.get("accuracy_drop"),
                 quality.get("sqnr_db"), text, seconds)


class LayerSearch:
    """Quantize-and-gate trials and the layer ranking for one float parent, every file in `work`.

    `source` is what the pass quantizes (the ONNX parent itself; the Keras model or SavedModel for TFLite) and
    `parent` the float artifact in the target format that every trial is compared with."""

    def __init__(self, source: Artifact, parent: Artifact, qpass, heldout, thresholds: Thresholds, work: Path,
                 seed: int = 0, on_stage=None):
        self.source, self.parent, self.qpass, self.heldout, self.thresholds = source, parent, qpass, heldout, thresholds
        self.work, self.seed = Path(work), seed
        self.on_stage = on_stage or (lambda text: None)
        self.count = 0
        self.built = 0  # trials that produced a model
        self.failure: Exception | None = None  # the first trial that could not
        self.warnings: list[str] = []
        self.reference = ReferenceOutputs()  # the float parent runs on the held-out data once, not once per trial
        self._pre: Artifact | None = None
        self.suffix = ".onnx" if isinstance(qpass, QuantizeOnnx) else ".tflite"

    def _quantize(self, qpass, source: Artifact, file_name: str) -> Artifact:
        ctx = Context(out_dir=self.work, force=True, seed=self.seed, calibration_cache=self.work / "calibration")
        out = dataclasses.replace(qpass, file_name=file_name).run(source, ctx)
        self.warnings.extend(w for w in ctx.warnings if w not in self.warnings)
        return out

    def evaluate(self, stage: str, knobs: Knobs, exclude: tuple[str, ...]) -> Trial:
        from mdeploy.passes.core.errors import PassFailed

        self.count += 1
        t0 = time.perf_counter()
        try:
            candidate = self._quantize(with_knobs(self.qpass, knobs, exclude), self.source, f"trial-{self.count}{self.suffix}")
        except PassFailed as e:  # e.g. a mix of float and int8 layers that overflows (NaN/Inf): a failed trial, not the end
            self.failure = self.failure or e
            return Trial(stage, knobs, exclude, False, None, None, str(e), time.perf_counter() - t0)
        self.built += 1
        try:
            quality = quantization_quality(self.parent, candidate, self.heldout.open(self.parent.inputs),
                                           self.thresholds, self.reference)
        finally:  # only the chosen setting is kept (re-quantized by the caller): trials of a big model add up
            Path(candidate.path).unlink(missing_ok=True)
        return trial_from_quality(stage, knobs, exclude, quality, time.perf_counter() - t0)

    def preprocessed(self) -> Artifact:
        """The float ONNX graph the quantizer sees (the same node and tensor names as its output)."""
        if self._pre is None:
            from mdeploy.passes.quantize.onnx_prepare import prepare_for_quantization

            prep = self.work / "prep"
            prep.mkdir(parents=True, exist_ok=True)
            source, _ = prepare_for_quantization(Path(self.parent.path), prep)
            path = pre_process(source, prep, self.warnings.append)
            self._pre = dataclasses.replace(self.parent, path=path, name=f"{self.parent.name}-preprocessed")
        return self._pre

    def rank(self, knobs: Knobs, exclude: tuple[str, ...] = ()) -> LayerDebug:
        if self.count and not self.built and self.failure is not None:
            raise self.failure  # no setting could even be built: ranking layers cannot help, and the cause is this
        qpass = with_knobs(self.qpass, knobs, exclude)
        if isinstance(qpass, QuantizeOnnx):
            pre = self.preprocessed()
            qdq = self._quantize(dataclasses.replace(qpass, compact_names=False), pre, "debug.onnx")
            return onnx_layer_errors(Path(pre.path), Path(qdq.path), self.heldout.open(self.parent.inputs), self.work,
                                     on_node=lambda done, total: self.on_stage(
                                         f"ranking layers: the model with node {done} of {total} alone in int8"))
        from mdeploy.passes.quantize.tflite_debug import tflite_layer_errors

        return tflite_layer_errors(self.source, qpass, self.heldout.open(self.parent.inputs), self.work,
                                   float_tflite=Path(self.parent.path))


def debug_layers(source: Artifact, parent: Artifact, qpass, heldout, work: Path, seed: int = 0,
                 on_stage=None) -> LayerDebug:
    """`--debug-layers` alone: the per-layer errors of the int8 model `qpass` makes."""
    search = LayerSearch(source, parent, qpass, heldout, Thresholds(enabled=False), work, seed, on_stage)
    return search.rank(knobs_of(qpass), user_exclusions(qpass))


def user_exclusions(qpass) -> tuple[str, ...]:
    return tuple(qpass.exclude if isinstance(qpass, QuantizeOnnx) else qpass.denylist)


def accuracy_search(source: Artifact, parent: Artifact, qpass, heldout, thresholds: Thresholds, budget: float,
                    work: Path, *, seed: int = 0, on_stage=None) -> tuple[SearchResult, Any, list[str]]:
    """Run the budget search; return it, the pass that reproduces the chosen artifact, and warnings.
    Layers the user excluded stay excluded: the search adds to them."""
    search = LayerSearch(source, parent, qpass, heldout, dataclasses.replace(thresholds, max_accuracy_drop=budget, enabled=True),
                         work, seed, on_stage)
    base = user_exclusions(qpass)

    def evaluate(stage: str, knobs: Knobs, exclude: tuple[str, ...]) -> Trial:
        t = search.evaluate(stage, knobs, tuple(dict.fromkeys(base + exclude)))
        t.exclude = exclude
        return t

    result = budget_search(evaluate, lambda k: search.rank(k, base), knobs_of(qpass), budget,
                           knobs=knob_options(qpass), on_stage=on_stage)
    chosen = with_knobs(qpass, result.best.knobs, tuple(dict.fromkeys(base + result.best.exclude)))
    return result, chosen, search.warnings


def reproducing_recipe(to: str, chosen, calibration: str | None, validation: str | None, samples: int,
                       result: SearchResult | None) -> str:
    """A TOML recipe for `mdeploy optimize --recipe` (and a comment with the `quantize` command) that rebuilds the
    chosen artifact without searching again."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["# Written by mdeploy's --accuracy-budget search: rebuilds the chosen int8 artifact without searching.",
             f"# budget: {result.budget}, met: {result.met}; {result.note}" if result else "#",
             "target = \"cloud\"" if to == "onnx" else "target = \"edge\""]
    if calibration:
        lines.append(f"calibration = {q(calibration)}")
    if validation:
        lines.append(f"validation = {q(validation)}")
    lines += ["", "[quantize]", f"{to} = [\"int8\"]", f"{'tflite' if to == 'onnx' else 'onnx'} = []",
              f"samples = {samples}"]
    if to == "onnx":
        lines += [f"method = {q(chosen.method)}", f"per_channel = {'true' if chosen.per_channel else 'false'}",
                  f"activations = {q(chosen.activations)}",
                  f"symmetric_activations = {'true' if chosen.symmetric_activations else 'false'}",
                  f"weight_ops_only = {'true' if chosen.weight_ops_only else 'false'}",
                  "exclude = [" + ", ".join(q(e) for e in chosen.exclude) + "]"]
    else:
        lines += ["denylist = [" + ", ".join(q(e) for e in chosen.denylist) + "]"]
    if result is not None and result.budget is not None:
        lines += ["", "[validate]", f"max_accuracy_drop = {result.budget}"]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Searched:
    """What --debug-layers / --accuracy-budget found for one int8 artifact, and how to put it in its report record."""

    to: str
    search: SearchResult | None
    debug: LayerDebug | None
    chosen: Any
    data: str
    calibration: str | None
    samples: int

    def attach(self, record, out_dir: Path) -> None:
        from mdeploy.passes.core.fsio import write_text_atomic
        from mdeploy.passes.report.sections import AccuracySearch, LayerErrors

        if self.debug is not None:
            record.layer_errors = LayerErrors.from_dict(self.debug.to_dict())
        if self.search is None:
            return
        stem = Path(record.path).name.rsplit(".", 1)[0]
        recipe_path = Path(out_dir) / self.to / f"{stem}.recipe.toml"
        write_text_atomic(recipe_path, reproducing_recipe(self.to, self.chosen, self.calibration, None, self.samples,
                                                          self.search))
        record.accuracy_search = AccuracySearch.from_dict(
            {**{k: v for k, v in self.search.to_dict().items() if k != "debug"}, "data": self.data,
             "calibration": self.calibration, "recipe": str(recipe_path.relative_to(out_dir))})


def optimize_searches(produced: dict[str, Artifact], inputs: dict[str, Artifact], recipe, ctx: Context, steps: list,
                      image, stage) -> dict[str, Searched]:
    """optimize's int8 artifacts searched (and/or measured per layer) as `quantize` does; a chosen setting that differs
    from the recipe's is quantized into the artifact's place (a step of its own), so validation and bench see it."""
    from mdeploy.calibration.sources import DataSpec
    from mdeploy.passes.core.pipeline import run_pass
    from mdeploy.passes.quantize.tflite import QuantizeTflite

    q, v = recipe.quantize, recipe.validate
    spec = recipe.validation or recipe.calibration
    if spec is None or spec == "random" or recipe.calibration is None:
        ctx.warn("--accuracy-budget / --debug-layers need calibration and labelled validation data: skipped")
        return {}
    heldout = DataSpec(spec, image=image)
    calibration = DataSpec(recipe.calibration, take=q.samples, image=image)
    thresholds = Thresholds(**bounds_of(v))
    base = inputs.get("pruned") or inputs["source"]
    found: dict[str, Searched] = {}
    for name in ("onnx-int8", "tflite-int8"):
        artifact = produced.get(name)
        if artifact is None:
            continue
        if name == "onnx-int8":
            parent = produced.get("onnx-sim") or produced.get("onnx") or base
            source = parent
            qpass: Any = QuantizeOnnx(mode="int8", format=q.format, per_channel=q.per_channel, method=q.method,
                                      exclude=q.exclude, activations=q.activations,
                                      symmetric_activations=q.symmetric_activations,
                                      weight_ops_only=q.weight_ops_only, calibration=calibration)
        else:
            parent, source = produced.get("tflite"), produced.get("savedmodel") or base
            if parent is None:
                continue
            qpass = QuantizeTflite(mode="int8", io=q.io, denylist=q.denylist, calibration=calibration)
        search = debug = None
        chosen = qpass
        with tempfile.TemporaryDirectory(prefix="mdeploy-accuracy-") as work:
            if q.accuracy_budget is not None:
                search, chosen, notes = accuracy_search(source, parent, qpass, heldout, thresholds, q.accuracy_budget,
                                                        Path(work), seed=ctx.seed, on_stage=stage)
                ctx.warnings.extend(n for n in notes if n not in ctx.warnings)
                debug = search.debug
            if q.debug_layers and debug is None:
                stage(f"measuring each layer's quantization error ({name})")
                debug = debug_layers(source, parent, qpass, heldout, Path(work), ctx.seed, stage)
        if chosen != qpass:
            produced[name] = run_pass(chosen, source, dataclasses.replace(ctx, force=True), steps)
        found[name] = Searched(name.split("-")[0], search, debug, chosen, spec, recipe.calibration, q.samples)
    return found
