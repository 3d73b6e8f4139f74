"""Opening a model file as an Artifact: recognise the format, read the input/output signature.

ONNX is read with the onnx package alone, so `inspect`/`simplify` on an .onnx never import TensorFlow.
"""
from __future__ import annotations

from pathlib import Path

from mdeploy.passes.backends.runtimes import (
    keras_signature,
    litert_interpreter,
    load_keras_model,
    load_savedmodel,
    savedmodel_signature,
    tflite_signature,
)
from mdeploy.passes.core.artifact import Artifact, TensorSpec, detect_format
from mdeploy.passes.core.errors import BadInput

_ONNX_ELEM = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
              11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16", 8: "str"}


def load_onnx_model(path: Path, load_external_data: bool = True):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as e:
        raise BadInput(f"{path} is not a valid ONNX model ({type(e).__name__}: {str(e).strip()[:200] or 'unreadable protobuf'})",
                       "the file is truncated or not ONNX; re-export it") from e


def onnx_signature(model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    init = {i.name for i in model.graph.initializer}

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        return TensorSpec(v.name, dims, _ONNX_ELEM.get(t.elem_type, str(t.elem_type)))

    if not model.graph.node and not model.graph.output:
        raise BadInput("the ONNX file holds no graph", "the file is truncated or not an ONNX model; re-export it")
    return (tuple(spec(v) for v in model.graph.input if v.name not in init), tuple(spec(v) for v in model.graph.output))


def open_artifact(path: Path | str, *, trusted: bool = False) -> Artifact:
    """An Artifact for a model on disk, with its signature. Raises BadInput for anything unreadable.
    `trusted`: the user allows this model's code to run (--unsafe-keras); artifacts derived from it inherit that."""
    fmt, real = detect_format(Path(path))
    if fmt == "onnx":
        inputs, outputs = onnx_signature(load_onnx_model(real, load_external_data=False))
    elif fmt == "tflite":
        _, inputs, outputs = tflite_signature(litert_interpreter(real))
    elif fmt == "keras":
        inputs, outputs = keras_signature(load_keras_model(real, trusted=trusted))
    else:
        _, inputs, outputs = savedmodel_signature(load_savedmodel(real))
    return Artifact(format=fmt, path=real, inputs=inputs, outputs=outputs, name="source",
                    meta={"precision": "float32"}, trusted=trusted)
