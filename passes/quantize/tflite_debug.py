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
from mdeploy.passes.quantize.debug import RANK_SAMPLES, LayerDebug, LayerError, rank_layers, sqnr_db


def _float_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a if a.dtype.kind == "f" else b).astype(np.float64)


# The debugger's own mean_squared_error (of NumericVerify's differences) is the noise; the signal is the float op's
# output, which layer_direct_compare_metrics hands over (with the quantized one, in an order that varies by op).
METRICS = {"signal": lambda f, q, s, z: float(np.mean(np.square(_float_of(f, q))))}


def input_order(interpreter, names: list[str]) -> list[str]:
    """`names` in the order the interpreter lists its inputs, which is how the debugger feeds them (positionally):
    the converter may order a multi-input model's inputs differently from its signature (meta before image)."""
    try:
        detail = interpreter.get_signature_runner(
            "serving_default" if "serving_default" in interpreter.get_signature_list() else None).get_input_details()
        by_index = {d["index"]: name for name, d in detail.items()}
        order = [by_index.get(d["index"]) for d in interpreter.get_input_details()]
    except (ValueError, KeyError):  # no signature: the converter keeps the source's order
        return names
    return order if sorted(o for o in order if o) == sorted(names) and None not in order else names


def debug_dataset(source: CalibrationSource, names: list[str], limit: int | None):
    """The debugger feeds inputs positionally, one sample at a time, in the order of `names` when it runs."""
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


def tflite_layer_errors(source: Artifact, qpass, heldout: CalibrationSource, work: Path, limit: int | None = RANK_SAMPLES,
                        float_tflite: Path | None = None) -> LayerDebug:
    """Measure every quantized op of the int8 TFLite model `qpass` makes from `source` on up to `limit` held-out samples;
    with `float_tflite` (the float model converted from the same source) also each op's weight error."""
    from mdeploy.passes.convert.tflite import converter_failure, fixed_batch_one, is_tensor_list_failure, tflite_converter
    from mdeploy.passes.quantize.tflite import recurrent_int8_failure

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
        order = [t.name for t in source.inputs]  # set to the debug model's input order once it exists
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore")
            try:
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=debug_dataset(heldout, order, limit), debug_options=options)
            except Exception as e:
                if is_tensor_list_failure(e) and fixed_batch_one(source) is not None:
                    raise recurrent_int8_failure() from e
                raise converter_failure(e) from e
            order[:] = input_order(debugger._quant_interpreter, order)  # noqa: SLF001 - the model it feeds
            debugger.run()
        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
        plain = workdir / "int8.tflite"
        plain.write_bytes(debugger.get_nondebug_quantized_model())
        producers = op_producers(plain)
        weights = weight_errors(float_tflite, plain) if float_tflite is not None else {}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    layers = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        signal, noise, scale = float(row["signal"]), float(row["mean_squared_error"]), float(row["scale"] or 0)
        rmse = math.sqrt(noise) if noise >= 0 else math.nan
        layers.append(LayerError(node=row["tensor_name"], op=row["op_name"], output=row["tensor_name"],
                                 sqnr_db=sqnr_db(signal, noise),
                                 rel_rmse=math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else math.inf),
                                 scale_rmse=rmse / scale if scale else None,
                                 weight_sqnr_db=weights.get(row["tensor_name"], (None, None))[0],
                                 weight_rel_rmse=weights.get(row["tensor_name"], (None, None))[1]))
    return LayerDebug("tflite", heldout.description, samples,
                      "tf.lite.experimental.QuantizationDebugger: each int8 op vs the float op on its dequantized inputs",
                      rank_layers(layers, producers), time.perf_counter() - t0)


def op_producers(path: Path) -> dict[str, set[str]]:
    """op (its output tensor name) -> the ops whose outputs it reads, in the int8 model at `path`
    (through QUANTIZE/DEQUANTIZE ops)."""
    from mdeploy.passes.backends.litert import litert_interpreter, litert_ops

    interp = litert_interpreter(path)
    ops = litert_ops(interp)
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    producer = {int(o): op for op in ops for o in op["outputs"]}

    def source(index: int):
        op = producer.get(index)
        while op is not None and op["op_name"] in ("QUANTIZE", "DEQUANTIZE") and len(op["inputs"]):
            op = producer.get(int(op["inputs"][0]))
        return op

    out: dict[str, set[str]] = {}
    for op in ops:
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") or not len(op["outputs"]):
            continue
        srcs = {names.get(int(src["outputs"][0])) for i in op["inputs"] if (src := source(int(i))) is not None}
        if srcs - {None}:
            out[names.get(int(op["outputs"][0]))] = srcs - {None}
    return out


WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")


def _weights_by_op(path: Path) -> dict[str, tuple[np.ndarray, dict]]:
    from mdeploy.passes.backends.litert import litert_interpreter, litert_ops

    interp = litert_interpreter(path)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    out = {}
    for op in litert_ops(interp):
        if op["op_name"] in WEIGHT_OPS and len(op["inputs"]) > 1 and len(op["outputs"]):
            w = details.get(int(op["inputs"][1]))
            try:
                out[details[int(op["outputs"][0])]["name"]] = (np.asarray(interp.get_tensor(w["index"])), w)
            except (ValueError, KeyError, TypeError):  # not a constant: no weight to compare
                continue
    return out


def weight_errors(float_path: Path, int8_path: Path) -> dict[str, tuple[float, float]]:
    """op -> (SQNR dB, relative RMSE) of its int8 weights dequantized (per channel) against the float model's."""
    floats, ints = _weights_by_op(float_path), _weights_by_op(int8_path)
    out = {}
    for name, (q, detail) in ints.items():
        if name not in floats or q.dtype.kind not in "iu" or floats[name][0].shape != q.shape:
            continue
        params = detail.get("quantization_parameters") or {}
        scales, zps = np.asarray(params.get("scales", [])), np.asarray(params.get("zero_points", []))
        if scales.size == 0:
            continue
        shape = [1] * q.ndim
        axis = int(params.get("quantized_dimension", 0))
        if scales.size > 1:
            shape[axis] = -1
        deq = (q.astype(np.float64) - zps.reshape(shape if zps.size > 1 else [1] * q.ndim)) * scales.reshape(shape)
        w = floats[name][0].astype(np.float64)
        noise, power = float(np.sum((w - deq) ** 2)), float(np.sum(w ** 2))
        out[name] = (sqnr_db(power, noise), math.sqrt(noise / power) if power > 0 else 0.0)
    return out
