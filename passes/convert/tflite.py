"""Keras or SavedModel -> TFLite through the TFLite converter (also used by the TFLite quantizer): the converter's
routes (builtins, a fixed batch of 1 for recurrent layers, SELECT_TF_OPS), and publishing only what LiteRT loads."""
from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mdeploy.passes.backends import load_runner
from mdeploy.passes.backends.litert import read_flatbuffer
from mdeploy.passes.backends.tf_env import import_tf, quiet_native_stderr
from mdeploy.passes.convert.serving import serving_function
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import MdeployError, PassFailed, environment_error, last_meaningful_line
from mdeploy.passes.core.fsio import atomic_output
from mdeploy.passes.core.pipeline import Context, pass_params


def savedmodel_for_tflite(artifact: Artifact, workdir: Path) -> Path:
    """The TFLite converter reads SavedModels best; write one from a Keras source when needed."""
    if artifact.format == "savedmodel":
        return Path(artifact.path)

    tf = import_tf()
    serve, module = serving_function(artifact)
    path = workdir / "savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve.get_concrete_function()})
    return path


def tflite_converter(artifact: Artifact, workdir: Path):
    tf = import_tf()
    return tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_for_tflite(artifact, workdir)),
                                                    signature_keys=["serving_default"])


def converter_failure(e: Exception) -> MdeployError:
    """What the TFLite converter's exception `e` means, as one error: unconvertible ops named, a full or read-only
    disk as the user's to fix, recurrent layers' tensor lists (which need static shapes) said so."""
    text = str(e)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither", text)))
    if ops:
        return PassFailed(f"the TFLite converter cannot convert op(s) {', '.join(ops)}: not TFLite builtins",
                          "replace the named op(s) in the model; TFLite has no kernel for them")
    env = environment_error(e)
    if env is not None:
        return env
    if is_tensor_list_failure(e):
        return PassFailed(f"the TFLite converter cannot lower this model's tensor lists (recurrent layers with a "
                          f"dynamic batch): {last_meaningful_line(e)[:200]}", "run with --debug for the converter's full message")
    return PassFailed(f"the TFLite converter failed: {last_meaningful_line(e)}",
                      "run with --debug for the converter's full message")


def is_tensor_list_failure(e: BaseException) -> bool:
    """The converter could not lower TensorList ops (Keras LSTM/GRU with a dynamic batch): a fixed batch fixes it."""
    text = f"{e} {e.__cause__ or ''}"
    return "tensor list" in text.lower() or "TensorListReserve" in text


def write_tflite(converter, final: Path, force: bool, verify=None, check_runtime: bool = True) -> None:
    """Run the converter, check LiteRT loads the result, then publish it atomically.

    `verify(tmp_path)`, when given, runs after the load check and before publishing (quantize runs the model once).
    """

    try:
        with quiet_native_stderr():  # the converter's C++ prints its quantization settings on fd 2
            flatbuffer = converter.convert()
    except Exception as e:
        raise converter_failure(e) from e
    with atomic_output(final, force) as tmp:
        tmp.write_bytes(flatbuffer)
        if check_runtime:
            load_runner("tflite", tmp)  # never publish what LiteRT cannot load
        if verify is not None:
            verify(tmp)


def fixed_batch_one(artifact: Artifact) -> Artifact | None:
    """The artifact with its (dynamic) batch dimension fixed to 1, or None when some input has no dynamic batch."""
    if not artifact.inputs or not all(t.shape and t.shape[0] is None for t in artifact.inputs):
        return None
    return dataclasses.replace(artifact, inputs=tuple(dataclasses.replace(t, shape=(1, *t.shape[1:])) for t in artifact.inputs))


@dataclass(frozen=True)
class ToTflite:
    """Keras or SavedModel -> float32 TFLite through the TFLite converter.

    When the converter cannot lower an op with a dynamic batch (Keras LSTM/GRU: `TensorListReserve` needs a
    static element shape), the model is converted again with a fixed batch of 1, which LiteRT runs one sample
    at a time. select_tf_ops: as a last route, keep what TFLite lacks as TensorFlow ops (SELECT_TF_OPS); such a
    model needs the Flex delegate at run time (the stock LiteRT runtime cannot load it), which the report says.
    """

    name: ClassVar[str] = "convert.tflite"
    failure_hint: ClassVar[str] = "run with --debug for the converter's full message"
    accepts: ClassVar[tuple[str, ...]] = ("keras", "savedmodel")
    produces: ClassVar[str] = "tflite"
    file_name: str = "model.tflite"
    select_tf_ops: bool = False
    sparse_weights: bool = False  # store sparse kernels in TFLite's sparse format (EXPERIMENTAL_SPARSITY)

    def run(self, artifact: Artifact, ctx: Context) -> Artifact:
        final = Path(ctx.out_dir) / "tflite" / self.file_name
        route, first = "builtins", None
        for route, source, select in self._routes(artifact):
            workdir = Path(tempfile.mkdtemp(prefix="mdeploy-tflite-"))
            try:
                converter = tflite_converter(source, workdir)
                if self.sparse_weights:
                    tf = import_tf()
                    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
                if select:
                    tf = import_tf()
                    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
                    converter._experimental_lower_tensor_list_ops = False  # noqa: SLF001 - the converter's documented advice
                write_tflite(converter, final, ctx.force, check_runtime=not select)
                break
            except PassFailed as e:
                first = first or e
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        else:
            assert first is not None
            if not self.select_tf_ops and "SELECT_TF_OPS" in str(first.__cause__ or ""):
                raise PassFailed(first.message, "--tflite-select-ops keeps those ops as TensorFlow ops (the model then "
                                                "needs the Flex delegate at run time)") from first
            raise first
        notes = {"fixed-batch-1": "converted with a fixed batch of 1 (the converter needs static shapes for the "
                                  "recurrent layers); LiteRT runs it one sample at a time",
                 "select-tf-ops": "kept TensorFlow ops (SELECT_TF_OPS): this model needs the Flex delegate at run time; "
                                  "the stock LiteRT runtime cannot load it"}
        if route in notes:
            ctx.warn(f"tflite: {notes[route]}")
        sparse = {"sparse_tensors": read_flatbuffer(final)["sparse_tensors"]} if self.sparse_weights else {}
        return artifact.derive(format="tflite", path=final, name="tflite", precision="float32",
                               produced_by={"pass": self.name, "params": pass_params(self)}, tflite_route=route, **sparse,
                               **({"runtime": "needs the TensorFlow Flex delegate"} if route == "select-tf-ops" else {}))

    def _routes(self, artifact: Artifact):
        yield "builtins", artifact, False
        one = fixed_batch_one(artifact)
        if one is not None:
            yield "fixed-batch-1", one, False
        if self.select_tf_ops:
            yield "select-tf-ops", artifact, True
