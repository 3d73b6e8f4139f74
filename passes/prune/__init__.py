"""Magnitude pruning: PruneKeras (keras.py) and PruneOnnx (onnx.py), the masks they share (masks.py), and what
a pruned file measures (sparsity.py). Structured pruning: PruneStructured (structured.py). Both Keras pruners hold one
FineTuning value (fine_tuning.py).
"""
from __future__ import annotations

from typing import Any

from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.prune.fine_tuning import FineTuning, fine_tuning_from
from mdeploy.passes.prune.keras import PruneKeras
from mdeploy.passes.prune.onnx import PruneOnnx
from mdeploy.passes.prune.sparsity import measure_sparsity, sparsity_survival
from mdeploy.passes.prune.summary import compressed_size, pruning_summary

__all__ = ["FineTuning", "PruneKeras", "fine_tuning_from", "PruneOnnx", "compressed_size", "measure_sparsity", "pruning_pass", "pruning_summary",
           "sparsity_survival"]


def pruning_pass(format: str, **params: Any):
    """The pruning pass for a format: PruneKeras for keras, PruneOnnx for onnx."""
    if format == "keras":
        return PruneKeras(**params)
    if format == "onnx":
        if params.pop("fine_tuning", None) is not None:
            raise BadInput("ONNX models are pruned one-shot: --fine-tune needs the Keras model",
                           "prune the .keras model with --fine-tune, then convert or quantize the result")
        for key in ("initial_sparsity", "begin_step", "end_step", "frequency"):  # the fine-tuning schedule's
            params.pop(key, None)
        return PruneOnnx(**params)
    raise BadInput(f"mdeploy prunes keras and onnx models, not {format}",
                   "prune the Keras (or ONNX) model before converting it to TFLite; quantize composes after pruning")


