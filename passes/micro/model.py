"""What a microcontroller build needs to know of a .tflite file, read from the flatbuffer alone: its I/O tensors
in TFLite Micro's order (with the names LiteRT's signature runner gives them), their quantization, and the
quantization step each output is measured in."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.passes.core.errors import BadInput

_DTYPES = {"FLOAT32": np.float32, "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32,
           "INT64": np.int64, "BOOL": np.bool_, "FLOAT16": np.float16}


@dataclass(frozen=True)
class IoTensor:
    position: int  # index among the subgraph's inputs/outputs: TFLM's set_input/get_output index
    name: str  # the name LiteRT's runner uses (signature name when the model has a signature)
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float  # 0.0 when not quantized
    zero_point: int
    step: float | None  # outputs: one quantization step in the output's (dequantized) units; None for float results

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """A float feed as this tensor stores it (the same rule as the LiteRT runner's)."""
        x = np.asarray(x)
        if self.dtype.kind in "iu" and self.scale and x.dtype.kind == "f":
            info = np.iinfo(self.dtype)
            return np.clip(np.round(x / self.scale + self.zero_point), info.min, info.max).astype(self.dtype)
        return x.astype(self.dtype, copy=False)

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.dtype.kind in "iu" and self.scale:
            return (y.astype(np.float32) - self.zero_point) * np.float32(self.scale)
        return y


def _quant(t) -> tuple[float, int]:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return 0.0, 0
    return float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0


def read_io(path: Path) -> tuple[list[IoTensor], list[IoTensor]]:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    buf = Path(path).read_bytes()
    if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise BadInput(f"{path}: not a TFLite flatbuffer", "pass the .tflite model (convert or quantize it first)")
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    g = model.subgraphs[0]
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sig_in: dict[int, str] = {}
    sig_out: dict[int, str] = {}
    for s in model.signatureDefs or []:
        key = s.signatureKey.decode() if isinstance(s.signatureKey, bytes) else s.signatureKey
        if key in ("serving_default", None) or len(model.signatureDefs) == 1:
            sig_in.update({int(t.tensorIndex): t.name.decode() for t in s.inputs or []})
            sig_out.update({int(t.tensorIndex): t.name.decode() for t in s.outputs or []})
            break
    producer = {}
    for op in g.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        name = builtin.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
        for o in op.outputs if op.outputs is not None else []:
            producer[int(o)] = (name, [int(i) for i in op.inputs] if op.inputs is not None else [])

    def io(position: int, index: int, names: dict[int, str], output: bool) -> IoTensor:
        t = g.tensors[index]
        dtype = np.dtype(_DTYPES.get(types.get(t.type, ""), np.float32))
        scale, zp = _quant(t)
        step = None
        if output:
            if dtype.kind in "iu" and scale:
                step = scale
            else:
                prod = producer.get(index)
                if prod and prod[0] == "DEQUANTIZE" and prod[1]:
                    step = _quant(g.tensors[prod[1][0]])[0] or None
        name = names.get(index) or (t.name.decode() if isinstance(t.name, bytes) else str(t.name))
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        return IoTensor(position, name, shape, dtype, scale, zp, step)

    inputs = [io(i, int(x), sig_in, False) for i, x in enumerate(g.inputs)]
    outputs = [io(i, int(x), sig_out, True) for i, x in enumerate(g.outputs)]
    return inputs, outputs
