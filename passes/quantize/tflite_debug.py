"""Per-op quantization error of a TFLite int8 model, through TensorFlow's own tf.lite.experimental.QuantizationDebugger.

The debugger (which works with Keras 3 / TF 2.21 models through the SavedModel converter mdeploy already uses)
builds a debug model where each quantized op is followed by a NumericVerify op that also runs the float op on the
dequantized inputs: the difference is the error that op's quantization adds, isolated from the layers before it.
Its `layer_direct_compare_metrics` give us the float and quantized outputs, from which SQNR, relative RMSE and the
RMSE in units of the op's output scale are computed. Op names are the op output tensor names that
QuantizationDebugOptions(denylisted_nodes=...) and QuantizeTflite(denylist=...) take. The debugger runs its
models on TensorFlow's (deprecated) tf.lite.Interpreter; the deprecation warning is silenced.
"""
from __future__ import annotations

import csv
import io
import math
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from mdeploy.calibration.adapters import representative_dataset
from mdeploy.calibration.batches import LABELS, CalibrationSource, batch_size_of
from mdeploy.passes.backends.tf_env import import_tf, quiet_native_stderr
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.quantize.debug import LayerDebug, LayerError, rank_layers, sqnr_db


def _float_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a if a.dtype.kind == "f" else b).astype(np.float64)


# The debugger's own mean_squared_error (of NumericVerify's differences) is the noise; the signal is the float op's
# output, which layer_direct_compare_metrics hands over (with the quantized one, in an order that varies by op).
METRICS = {"signal": lambda f, q, s, z: float(np.mean(np.square(_float_of(f, q))))}


def debug_dataset(source: CalibrationSource, names: list[str], limit: int | None):
    """The debugger feeds inputs positionally, one sample at a time."""
    def generate():
        n = 0
        for batch in source:
            feeds = {k: v for k, v in batch.items() if k != LABELS}
            for i in range(batch_size_of(batch)):
                if limit is not None and n >= limit:
                    return
                n += 1
                yield [np.asarray(feeds[k][i:i + 1], dtype=np.float32) for k in names]
    return generate


def tflite_layer_errors(source: Artifact, qpass, heldout: CalibrationSource, work: Path, limit: int | None = None) -> LayerDebug:
    """Measure every quantized op of the int8 TFLite model `qpass` makes from `source` on up to `limit` held-out samples."""
    from mdeploy.passes.convert import tflite_converter

    tf = import_tf()
    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="tflite-debug-", dir=work))
    try:
        converter = tflite_converter(source, workdir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(
            qpass.calibration.open(source.inputs), {t.name: t.dtype for t in source.inputs})
        if not qpass.per_channel:
            converter._experimental_disable_per_channel = True  # noqa: SLF001
        denylist = list(qpass.denylist)
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics=METRICS,
            denylisted_nodes=[d for d in denylist if not d.isupper()] or None,
            denylisted_ops=[d for d in denylist if d.isupper()] or None)
        samples = min(len(heldout), limit) if limit is not None else len(heldout)
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore")
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=debug_dataset(heldout, [t.name for t in source.inputs], limit),
                debug_options=options)
            debugger.run()
        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    layers = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        signal, noise, scale = float(row["signal"]), float(row["mean_squared_error"]), float(row["scale"] or 0)
        rmse = math.sqrt(noise) if noise >= 0 else math.nan
        layers.append(LayerError(node=row["tensor_name"], op=row["op_name"], output=row["tensor_name"],
                                 sqnr_db=sqnr_db(signal, noise),
                                 rel_rmse=math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else math.inf),
                                 scale_rmse=rmse / scale if scale else None))
    return LayerDebug("tflite", heldout.description, samples,
                      "tf.lite.experimental.QuantizationDebugger: each int8 op vs the float op on its dequantized inputs",
                      rank_layers(layers), time.perf_counter() - t0)
