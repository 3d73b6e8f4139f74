"""QuantizeTflite: Keras/SavedModel -> TFLite with full-integer int8 (representative dataset), dynamic-range, or fp16 weights.

It converts through convert.tflite_converter, so the signature (input/output names) matches the float TFLite.
TensorFlow is imported only when the pass runs. Each result is loaded and run once on LiteRT before it is published.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mdeploy.calibration.adapters import representative_dataset
from mdeploy.calibration.sources import DataSpec
from mdeploy.passes.backends.litert import litert_interpreter, tflite_signature
from mdeploy.passes.backends.tf_env import import_tf
from mdeploy.passes.convert.tflite import fixed_batch_one, is_tensor_list_failure, tflite_converter, write_tflite
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput, PassFailed
from mdeploy.passes.core.pipeline import Context, pass_params
from mdeploy.passes.quantize import PRECISION, check_mode, quantized_file_name, require_calibration, run_once

IO_TYPES = ("float", "int8")


def recurrent_int8_failure() -> PassFailed:
    """Full-int8 TFLite of a model whose tensor lists need a fixed batch (Keras LSTM/GRU). The fixed-batch route that
    converts its float and dynamic-range TFLite is never tried for int8: TensorFlow 2.21's int8 calibrator dies with
    SIGSEGV on it (Keras LSTM and GRU, token and float inputs), which would take mdeploy down with no message."""
    return PassFailed("TFLite int8 cannot quantize this model's recurrent layers: the converter needs a fixed batch "
                      "for their tensor lists, and TensorFlow's int8 calibrator crashes on the fixed-batch model",
                      "use --mode dynamic (int8 weights, float activations) for TFLite, or --to onnx --mode int8")


@dataclass(frozen=True)
class QuantizeTflite:
    """Keras or SavedModel -> quantized TFLite.

    mode: int8 (full integer: every op int8, calibrated on `calibration`) | dynamic (dynamic-range: int8 weights,
          float activations) | fp16 (float16 weights).
    io: float keeps float32 inputs/outputs (quantized inside the graph); int8 gives integer-only I/O for
        microcontroller-class devices (int8 mode only). LiteRT callers then (de)quantize with each tensor's scale/zero point.
    calibration: the representative dataset for int8, as a DataSpec window.
    per_channel: per-channel weight scales (int8; False is the converter's per-tensor mode).
    denylist: ops to keep in float (int8 only), named as `--debug-layers` lists them: the op's output tensor name
        (TFLite's denylisted_nodes) or a builtin op type such as FULLY_CONNECTED (denylisted_ops).
    file_name: output under OUTDIR/tflite/ (default model.<mode>.tflite).
    """

    name: ClassVar[str] = "quantize.tflite"
    failure_hint: ClassVar[str] = "run with --debug for the full traceback; try another --mode, or --io float"
    accepts: ClassVar[tuple[str, ...]] = ("keras", "savedmodel")
    produces: ClassVar[str] = "tflite"
    mode: str = "int8"
    io: str = "float"
    calibration: DataSpec | None = None
    per_channel: bool = True
    denylist: tuple[str, ...] = ()
    file_name: str | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.io not in IO_TYPES:
            raise BadInput(f"unknown --io '{self.io}'", f"choose from {', '.join(IO_TYPES)}")
        if self.io == "int8" and self.mode != "int8":
            raise BadInput(f"--io int8 needs --mode int8 (got --mode {self.mode})", "integer I/O exists only for full-integer models")

    def output_path(self, ctx: Context) -> Path:
        return Path(ctx.out_dir) / "tflite" / (self.file_name or quantized_file_name(self.mode, ".tflite"))

    def run(self, artifact: Artifact, ctx: Context) -> Artifact:
        final = self.output_path(ctx)
        route = "builtins"
        try:
            self._convert(artifact, final, ctx)
        except PassFailed as e:
            one = fixed_batch_one(artifact)
            if one is None or not is_tensor_list_failure(e.__cause__ or e):
                raise
            if self.mode == "int8":
                raise recurrent_int8_failure() from e
            route = "fixed-batch-1"  # what `mdeploy convert` does for the float TFLite of the same model
            self._convert(one, final, ctx)
            ctx.warn(f"{self.name}: converted with a fixed batch of 1 (the converter needs static shapes for the "
                     "recurrent layers); LiteRT runs it one sample at a time")
        derived = artifact.derive(format="tflite", path=final, name=f"tflite-{self.mode}", precision=PRECISION[self.mode],
                                  produced_by={"pass": self.name, "params": pass_params(self)}, io=self.io,
                                  tflite_route=route,
                                  calibration=self.calibration.spec if self.calibration and self.mode == "int8" else None)
        _, inputs, outputs = tflite_signature(litert_interpreter(final))  # int8 I/O changes the dtypes
        return dataclasses.replace(derived, inputs=inputs, outputs=outputs)

    def _convert(self, artifact: Artifact, final: Path, ctx: Context) -> None:
        tf = import_tf()
        workdir = Path(tempfile.mkdtemp(prefix="mdeploy-tflite-q-"))
        try:
            converter = tflite_converter(artifact, workdir)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if self.mode == "fp16":
                converter.target_spec.supported_types = [tf.float16]
            elif self.mode == "int8":
                calibration = require_calibration(self.calibration, self.name)
                converter.representative_dataset = representative_dataset(
                    calibration.open(artifact.inputs), {t.name: t.dtype for t in artifact.inputs})
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                if not self.per_channel:
                    converter._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only switch for it
                if self.io == "int8":
                    converter.inference_input_type = tf.int8
                    converter.inference_output_type = tf.int8
                if self.denylist:
                    converter = DenylistedConverter(converter, self.denylist, self.per_channel, self.io)
            write_tflite(converter, final, ctx.force, verify=lambda tmp: run_once(tmp, "tflite", artifact, self.calibration))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


class DenylistedConverter:
    """A converter whose convert() keeps the denylisted ops in float: calibrate only, then the MLIR quantizer with
    denylisted_nodes / denylisted_ops, exactly as tf.lite.experimental.QuantizationDebugger does for its
    selectively quantized model (the converter itself has no public switch for it)."""

    def __init__(self, converter, denylist: tuple[str, ...], per_channel: bool, io: str):
        self.converter, self.denylist, self.per_channel, self.io = converter, denylist, per_channel, io

    def convert(self) -> bytes:
        from tensorflow.lite.python import convert as tflite_convert

        tf = import_tf()
        self.converter._experimental_calibrate_only = True  # noqa: SLF001
        calibrated = self.converter.convert()
        ops = [d for d in self.denylist if d.isupper() and ";" not in d and "/" not in d]
        nodes = [d for d in self.denylist if d not in ops]
        io_type = tf.int8 if self.io == "int8" else tf.float32
        return tflite_convert.mlir_quantize(calibrated, disable_per_channel=not self.per_channel,
                                            fully_quantize=self.io == "int8", input_data_type=io_type,
                                            output_data_type=io_type, denylisted_ops=ops or None,
                                            denylisted_nodes=nodes or None)
