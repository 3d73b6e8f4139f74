"""Sparsity as measured in files: the per-layer summary both pruners report, compressed size, and
`measure_sparsity`, which reads the weight sparsity of a Keras, ONNX or TFLite artifact (float or int8) so that
quantization can be checked to keep a pruned model's zeros.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.passes.backends import open_artifact, weight_tensors
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput

# --------------------------------------------------------------------------- measuring any artifact


def measure_sparsity(artifact: Artifact | Path | str) -> dict[str, Any]:
    """Weight sparsity of a model file: {format, sparsity, params, zeros, tensors: [{name, shape, dtype, params,
    zeros, sparsity}]}. Weights are the kernels of Dense/Conv/Embedding (keras) or the weight inputs of
    Conv/Gemm/MatMul and their quantized forms (onnx, tflite). A quantized weight counts as zero when it equals
    its zero point, i.e. when it dequantizes to exactly 0.0 (symmetric int8 weights: the zero point is 0)."""
    if not isinstance(artifact, Artifact):
        artifact = open_artifact(artifact)
    tensors = weight_tensors(artifact)
    if tensors is None:
        raise BadInput(f"measuring sparsity needs a keras, onnx or tflite model, not {artifact.format}",
                       "convert it first with `mdeploy convert --to onnx`")
    params = sum(t["params"] for t in tensors)
    zeros = sum(t["zeros"] for t in tensors)
    return {"format": artifact.format, "path": str(artifact.path), "sparsity": round(zeros / params, 6) if params else 0.0,
            "params": params, "zeros": zeros, "tensors": tensors}


def sparsity_survival(pruned: Artifact | Path | str, quantized: Artifact | Path | str) -> dict[str, Any]:
    """Did the zeros of a pruned model survive its quantization? Compares weight zero counts (the tensors'
    layouts differ between formats, so positions are not matched): survived when the quantized model has at least
    as many zero weights over the same number of weights. Quantization may add zeros (tiny weights round to 0)."""
    before, after = measure_sparsity(pruned), measure_sparsity(quantized)
    return {"sparsity_before": before["sparsity"], "sparsity_after": after["sparsity"], "params": after["params"],
            "zeros_before": before["zeros"], "zeros_after": after["zeros"],
            "survived": after["params"] == before["params"] and after["zeros"] >= before["zeros"]}
