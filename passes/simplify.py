"""The Simplify pass: onnxsim (constant folding, shape inference, fusions), checked against the input with ONNX Runtime.

When onnxsim fails or its result does not match, the unsimplified model is kept (copied to the output)
and the step is recorded as skipped with the reason; `strict=True` makes that a PassFailed instead.
Dynamic dimensions stay dynamic unless `input_shapes` pins them. No TensorFlow here.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.calibration.batches import LABELS, collect
from mdeploy.calibration.shapes import pin_input_shapes
from mdeploy.calibration.sources import DataSpec, open_source
from mdeploy.passes.backends import load_runner, run_batched
from mdeploy.passes.backends.onnxruntime import load_onnx_model, onnx_signature
from mdeploy.passes.checks.parity import parity_check
from mdeploy.passes.core.artifact import Artifact, TensorSpec
from mdeploy.passes.core.errors import BadInput, MdeployError, PassFailed, first_line
from mdeploy.passes.core.fsio import atomic_output
from mdeploy.passes.core.pipeline import Context, PassResult, pass_params

CHECK_SAMPLES = 8
CHECK_TOLERANCE = 1e-4


def graph_summary(model, path: Path | None = None) -> dict[str, Any]:
    """Op counts by type, node count, initializer count and (when written) size: one side of the before/after table."""
    ops = Counter(n.op_type for n in model.graph.node)
    return {"nodes": len(model.graph.node), "initializers": len(model.graph.initializer),
            "ops": dict(sorted(ops.items())), "size_bytes": Path(path).stat().st_size if path else model.ByteSize()}


def _dynamic_dims(specs: tuple[TensorSpec, ...]) -> dict[str, list[int]]:
    return {t.name: [i for i, d in enumerate(t.shape) if d is None] for t in specs}


def pin_graph_inputs(model, shapes) -> None:
    """Set the given dimensions of the graph inputs in place (None leaves a dimension as it is)."""
    pinned = dict(shapes)
    for v in model.graph.input:
        for dim, value in zip(v.type.tensor_type.shape.dim, pinned.get(v.name, ())):
            if value is not None:
                dim.dim_value = int(value)


@dataclass(frozen=True)
class Simplify:
    """ONNX -> simplified ONNX.

    file_name: output name under OUTDIR/onnx/ (an absolute path is used as is).
    input_shapes: ((input name, (dims...)), ...) to pin (None keeps that dimension dynamic); empty keeps every one.
    data: inputs for the check (a DataSpec); None uses the Context's parity data, else generated inputs.
    strict: a failed simplification or check raises PassFailed instead of keeping the input.
    """

    name: ClassVar[str] = "simplify"
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "onnx"
    file_name: str = "model.sim.onnx"
    input_shapes: tuple[tuple[str, tuple[int | None, ...]], ...] = ()
    data: DataSpec | None = None
    strict: bool = False

    def output_path(self, ctx: Context) -> Path:
        return Path(ctx.out_dir) / "onnx" / self.file_name

    def run(self, artifact: Artifact, ctx: Context) -> PassResult:
        import onnx

        final = self.output_path(ctx)
        before_model = load_onnx_model(artifact.path)
        before = graph_summary(before_model, artifact.path)
        names = {t.name for t in artifact.inputs}
        for name, _ in self.input_shapes:
            if name not in names:
                raise BadInput(f"--input-shape names '{name}', which is not an input (inputs: {', '.join(sorted(names))})",
                               "spell it NAME:D1,D2,... with a name from `mdeploy inspect MODEL`")
        feeds = self._check_feeds(artifact, ctx)  # bad data is the user's error (exit 2), not onnxsim's
        reference = self._runner(artifact)  # an input the runtime refuses is refused, never copied on
        t0 = time.perf_counter()
        problem: str | None = None
        with atomic_output(final, ctx.force) as tmp:
            try:
                simplified = self._simplify(before_model)
                onnx.save(simplified, str(tmp))
                problem = self._check(artifact, tmp, feeds, reference)
            except Exception as e:  # noqa: BLE001 - onnxsim raises anything; the cause goes in the warning
                text = str(e).strip().splitlines()
                problem = f"onnxsim failed: {type(e).__name__}: {text[0][:300] if text else ''}"
            if problem is not None:
                if self.strict:
                    raise PassFailed(f"simplification of {Path(artifact.path).name} failed: {problem}",
                                     "drop --strict to keep the unsimplified model, or report the onnxsim failure")
                shutil.copyfile(artifact.path, tmp)
        seconds = time.perf_counter() - t0
        after_model = load_onnx_model(final)
        inputs, outputs = onnx_signature(after_model)
        summary = {"before": before, "after": graph_summary(after_model, final), "seconds": round(seconds, 3),
                   "simplified": problem is None}
        derived = artifact.derive(format="onnx", path=final, name="onnx-simplified",
                                  produced_by={"pass": self.name, "params": pass_params(self)}, simplify=summary)
        derived = dataclasses.replace(derived, inputs=inputs, outputs=outputs)
        if problem is None:
            return PassResult(derived)
        note = f"kept the unsimplified model: {problem}"
        ctx.warn(f"simplify: {note}")
        return PassResult(derived, status="skipped", note=note)

    def _simplify(self, model):
        import onnxsim

        pin_graph_inputs(model, self.input_shapes)
        simplified, ok = onnxsim.simplify(model, check_n=0)
        if not ok:
            raise RuntimeError("onnxsim reported its own check as failed")
        return simplified

    def _check_feeds(self, artifact: Artifact, ctx: Context) -> dict:
        try:
            specs = pin_input_shapes(artifact.inputs, self.input_shapes)
        except BadInput:  # the workflow refuses such shapes up front; a pass given them lets onnxsim fail and falls back
            specs = artifact.inputs
        if self.data is not None:
            source = self.data.open(specs)
        else:
            source = open_source(ctx.parity_data or "random", specs, samples=CHECK_SAMPLES, seed=ctx.seed)
        batch = min([CHECK_SAMPLES] + [dims[0] for _, dims in self.input_shapes if dims and dims[0]])  # a pinned batch is exact
        feeds = collect(source, limit=batch)
        feeds.pop(LABELS, None)
        return feeds

    def _runner(self, artifact: Artifact):
        """The input model on ONNX Runtime; BadInput (exit 2) when ONNX Runtime cannot load it."""
        try:
            runner = load_runner("onnx", artifact.path)
        except MdeployError:
            raise
        except Exception as e:  # noqa: BLE001 - ORT raises its own types; the first line names the op or input
            raise BadInput(f"ONNX Runtime cannot load {Path(artifact.path).name}: {first_line(e)}",
                           "fix or re-export the model (`mdeploy inspect` lists its ops); simplify needs a model that runs") from e
        return runner

    def _check(self, artifact: Artifact, candidate: Path, feeds: dict, runner) -> str | None:
        """Why the candidate is not a faithful simplification, or None. Runs both models on ONNX Runtime."""

        inputs, _ = onnx_signature(load_onnx_model(candidate, load_external_data=False))
        pinned = {n for n, _ in self.input_shapes}
        want, got = _dynamic_dims(artifact.inputs), _dynamic_dims(inputs)
        lost = [f"{n}[{i}]" for n, dims in want.items() if n not in pinned for i in dims if i not in got.get(n, [])]
        if lost:
            return f"dynamic dimension(s) became static: {', '.join(lost)}"
        try:
            load_runner("onnx", candidate)
        except Exception as e:  # noqa: BLE001
            return f"ONNX Runtime cannot load the result ({getattr(e, 'message', e)})"
        reference = run_batched(runner, feeds)  # may fail on pinned shapes: then a problem, like onnxsim's own
        result = parity_check(reference, artifact.derive(format="onnx", path=candidate, name="candidate", produced_by={}),
                              feeds, CHECK_TOLERANCE)
        if not result["passed"]:
            return f"the simplified model's outputs differ from the input's (max abs error {result['max_abs_error']:.3g})"
        return None
