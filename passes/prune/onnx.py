"""Magnitude pruning of an ONNX model's weight initializers (Conv, Gemm, MatMul), one-shot, without fine-tuning.

Reads and writes with the onnx package alone; TensorFlow is never imported. The masks are the same numpy
masks the Keras pruner uses (passes/sparsity.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from mdeploy.passes.backends.onnxruntime import load_onnx_model, onnx_session
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import atomic_output, ensure_writable
from mdeploy.passes.core.pipeline import Context, pass_params
from mdeploy.passes.prune.masks import choose_weights, masks_for
from mdeploy.passes.prune.summary import compressed_size, pruning_summary

_FLOAT_TYPES = {1, 10, 11}  # FLOAT, FLOAT16, DOUBLE


@dataclass
class OnnxWeight:
    """A prunable initializer, the node that consumes it (its `layer`) and its input axis for N:M patterns."""

    layer: str
    kind: str
    initializer: str
    input_axis: int | None

    @property
    def name(self) -> str:
        return self.initializer


def _attr(node, name: str, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def onnx_prunable_weights(model) -> list[OnnxWeight]:
    """Float initializers used as Conv/Gemm/MatMul weights, in graph order; a shared initializer counts once."""
    inits = {i.name: i for i in model.graph.initializer}
    found: dict[str, OnnxWeight] = {}
    for i, node in enumerate(model.graph.node):
        layer = node.name or f"{node.op_type}_{i}"
        candidates: list[tuple[str, int | None]] = []
        if node.op_type == "Conv" and len(node.input) > 1:
            w = node.input[1]
            depthwise = w in inits and _attr(node, "group", 1) > 1 and len(inits[w].dims) > 1 and inits[w].dims[1] == 1
            candidates.append((w, None if depthwise else 1))  # (M, C/group, kH, kW)
        elif node.op_type == "Gemm" and len(node.input) > 1:
            candidates.append((node.input[1], 1 if _attr(node, "transB", 0) else 0))
            candidates.append((node.input[0], 0 if _attr(node, "transA", 0) else 1))
        elif node.op_type == "MatMul" and len(node.input) > 1:
            candidates.append((node.input[1], -2))  # (..., K, N)
            candidates.append((node.input[0], -1))  # (..., M, K)
        for name, axis in candidates:
            init = inits.get(name)
            if init is None or init.data_type not in _FLOAT_TYPES or len(init.dims) < 2 or name in found:
                continue
            found[name] = OnnxWeight(layer, node.op_type, name, axis)
    return list(found.values())


@dataclass(frozen=True)
class PruneOnnx:
    """Zero the smallest-magnitude weights of an ONNX model's Conv/Gemm/MatMul initializers
    -> OUTDIR/onnx/model.pruned.onnx. Same parameters as PruneKeras, minus fine-tuning; layer names are node names.
    """

    name: ClassVar[str] = "prune.onnx"
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "onnx"
    sparsity: float = 0.5
    scope: str = "layer"
    exclude: tuple[str, ...] = ()
    prune_first_last: bool = False
    pattern: str | None = None
    file_name: str = "model.pruned.onnx"

    def output_path(self, ctx: Context) -> Path:
        return Path(ctx.out_dir) / "onnx" / self.file_name

    def run(self, artifact: Artifact, ctx: Context) -> Artifact:
        import onnx
        from onnx import numpy_helper


        final = self.output_path(ctx)
        ensure_writable(final, ctx.force)
        model = load_onnx_model(artifact.path)
        all_weights = onnx_prunable_weights(model)
        if not all_weights:
            raise BadInput(f"{artifact.path}: no Conv, Gemm or MatMul weight initializers to prune",
                           "the weights may be computed at run time or already quantized; prune before quantizing")
        target, pattern, selected, skipped = choose_weights(
            all_weights, sparsity=self.sparsity, pattern=self.pattern, scope=self.scope, exclude=self.exclude,
            prune_first_last=self.prune_first_last, warn=ctx.warn, unit="node")

        inits = {i.name: i for i in model.graph.initializer}
        values = {w.name: numpy_helper.to_array(inits[w.name]) for w in selected}
        masks = masks_for(selected, values, target, self.scope, pattern)
        ctx.stage("pruning initializers")
        for w in selected:
            pruned = (values[w.name] * masks[w.name]).astype(values[w.name].dtype)
            inits[w.name].CopyFrom(numpy_helper.from_array(pruned, w.name))
        with atomic_output(final, ctx.force) as tmp:
            onnx.save(model, str(tmp))
            onnx_session(tmp)  # never publish what ONNX Runtime cannot load

        floats = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type in _FLOAT_TYPES]
        summary = pruning_summary(
            [(w.layer, w.name, w.kind, numpy_helper.to_array(inits[w.name])) for w in all_weights],
            selected={w.name for w in selected}, skipped=skipped, target=target,
            scope="pattern" if pattern else self.scope, pattern=self.pattern,
            total_params=int(sum(a.size for a in floats)), total_zeros=int(sum(np.count_nonzero(a == 0) for a in floats)))
        summary.update(size_bytes_before=artifact.size_bytes(), gzip_bytes_before=compressed_size(artifact.path),
                       size_bytes_after=final.stat().st_size, gzip_bytes_after=compressed_size(final),
                       source_size_bytes=artifact.size_bytes())
        return artifact.derive(format="onnx", path=final, name="pruned-onnx", precision=artifact.precision,
                               sparsity=summary["achieved_sparsity"], pruning=summary,
                               produced_by={"pass": self.name, "params": pass_params(self)})
