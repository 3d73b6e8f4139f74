"""Magnitude pruning: PruneKeras (keras.py) and PruneOnnx (onnx.py), the masks they share (masks.py), and what
a pruned file measures (sparsity.py).
"""
from __future__ import annotations

from typing import Any

from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.prune.keras import PruneKeras
from mdeploy.passes.prune.onnx import PruneOnnx
from mdeploy.passes.prune.sparsity import measure_sparsity, sparsity_survival
from mdeploy.passes.prune.summary import compressed_size, pruning_summary

__all__ = ["PruneKeras", "PruneOnnx", "compressed_size", "measure_sparsity", "pruning_pass", "pruning_summary",
           "sparsity_survival"]


def pruning_pass(format: str, **params: Any):
    """The pruning pass for a format: PruneKeras for keras, PruneOnnx for onnx."""
    if format == "keras":
        return PruneKeras(**params)
    if format == "onnx":
        for key in ("fine_tune", "epochs", "batch_size", "learning_rate", "loss", "metric", "initial_sparsity",
                    "begin_step", "end_step", "frequency", "seed"):
            if key == "fine_tune" and params.get(key):
                raise BadInput("ONNX models are pruned one-shot: --fine-tune needs the Keras model",
                               "prune the .keras model with --fine-tune, then convert or quantize the result")
            params.pop(key, None)
        return PruneOnnx(**params)
    raise BadInput(f"mdeploy prunes keras and onnx models, not {format}",
                   "prune the Keras (or ONNX) model before converting it to TFLite; quantize composes after pruning")


