"""`micro`: a .tflite model as firmware sources for TFLite Micro: the aligned C array, the op resolver registrations,
and a tensor arena size measured (not guessed) in the TFLM interpreter and verified; then a crosscheck of TFLM
against LiteRT on validation data, in quantization steps."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.passes.core.errors import BadInput, PassFailed
from mdeploy.passes.core.fsio import atomic_output, ensure_writable, write_text_atomic
from mdeploy.passes.defaults import DEFAULT_MARGIN
from mdeploy.passes.micro.carray import c_identifier, default_identifier, model_header, model_source, resolver_header
from mdeploy.passes.micro.model import IoTensor, read_io
from mdeploy.passes.micro.ops import resolver_methods

MAX_MARGIN = 0.15
ALIGN = 16
# a float result may differ by rounding between TFLM's reference kernels and LiteRT's XNNPACK: relative to its range
FLOAT_TOLERANCE = 1e-4


@dataclass
class OutputAgreement:
    name: str
    step: float | None  # one quantization step of this output, None for a float result
    max_abs_diff: float
    max_steps: float | None  # max difference in quantization steps (None for a float result)
    ok: bool


@dataclass
class MicroReport:
    model: str
    name: str
    files: list[str]
    ops: list[str]  # the resolver's Add* methods
    model_bytes: int
    arena_measured: int  # the smallest arena with which the model allocates and runs in TFLM (16-byte steps)
    arena_recorded: int  # what TFLM's RecordingMicroAllocator reports allocating (without the allocator's own use)
    arena_bytes: int  # what the header declares: measured + margin, rounded up to 16
    margin: float
    arena_verified: bool  # the crosscheck ran with exactly arena_bytes
    data: str
    samples: int
    outputs: list[OutputAgreement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.arena_verified and all(o.ok for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def arena_with_margin(need: int, margin: float) -> int:
    """`need` plus `margin`, rounded up to 16 bytes, never more than 15% above `need`."""
    arena = int(math.ceil(need * (1 + margin) / ALIGN)) * ALIGN
    return max(need, min(arena, int(need * (1 + MAX_MARGIN)) // ALIGN * ALIGN))


def _probe(*args: str, timeout: float = 600) -> dict[str, Any]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mdeploy.passes.micro.probe", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": f"the TFLite Micro worker died ({tail[:200]})"}
    return json.loads(lines[-1])


def _feeds(model: Path, inputs: list[IoTensor], data: str | None, samples: int) -> tuple[dict[str, np.ndarray], str]:
    from mdeploy.calibration import open_source
    from mdeploy.calibration.batches import LABELS, collect
    from mdeploy.passes.backends import open_artifact

    artifact = open_artifact(model)
    quantized = {t.name for t in inputs if t.dtype.kind in "iu" and t.scale}
    # a quantized input takes float data, quantized with its scale and zero point as LiteRT's runner does
    specs = tuple(replace(s, dtype="float32") if s.name in quantized else s for s in artifact.inputs)
    source = open_source(data or "random", specs, batch_size=64, samples=samples if data is None else None)
    batch = collect(source, limit=samples)
    batch.pop(LABELS, None)
    return batch, source.description


def _compare(ref: np.ndarray, got: np.ndarray, out: IoTensor) -> OutputAgreement:
    diff = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) if ref.size else 0.0
    if out.step:
        steps = diff / out.step
        return OutputAgreement(out.name, out.step, diff, round(steps, 4), steps <= 1 + 1e-6)
    bound = FLOAT_TOLERANCE * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    return OutputAgreement(out.name, None, diff, None, diff <= bound)


def _require_tflite_micro() -> None:
    import importlib.util

    if importlib.util.find_spec("tflite_micro") is None:
        raise BadInput("the tflite-micro package is not installed; `mdeploy micro` runs the model in its interpreter",
                       "pip install 'mdeploy[micro]' (Linux x86_64/aarch64 wheels; -e '.[micro]' in a clone)")


def micro(model: Path, out_dir: Path, *, name: str | None = None, data: str | None = None, samples: int = 1000,
          margin: float = DEFAULT_MARGIN, force: bool = False) -> MicroReport:
    model = Path(model)
    if not model.is_file() or model.suffix.lower() != ".tflite":
        raise BadInput(f"{model}: not a .tflite file", "convert or quantize the model to TFLite first "
                       "(`mdeploy quantize MODEL --to tflite --mode int8 --io int8` for a microcontroller)")
    if not 0 <= margin <= MAX_MARGIN:
        raise BadInput(f"--margin {margin} is outside 0..{MAX_MARGIN}", "the arena margin is a fraction, at most 0.15")
    _require_tflite_micro()
    ident = c_identifier(name) if name else default_identifier(model)
    files = {f"{ident}_model_data.cc": None, f"{ident}_model_data.h": None, f"{ident}_model_ops.h": None,
             "micro.json": None}
    for f in files:
        ensure_writable(Path(out_dir) / f, force)

    from mdeploy.passes.backends.litert import read_flatbuffer

    flat = read_flatbuffer(model)
    methods = resolver_methods(flat["ops"], str(model))
    inputs, outputs = read_io(model)

    measured = _probe("need", str(model))
    if "error" in measured:
        raise PassFailed(f"{model}: TFLite Micro cannot run this model: {measured['error']}",
                         "TFLM's kernels accept less than LiteRT's (no float16 weights, few int64 ops, narrower "
                         "ranges of quantization scales): quantize to int8 with representative --calibration data "
                         "(`mdeploy quantize --to tflite --mode int8`) and try again")
    need = int(measured["need"])
    arena = arena_with_margin(need, margin)

    feeds, description = _feeds(model, inputs, data, samples)
    n = len(next(iter(feeds.values())))
    for t in inputs:
        sample_shape = tuple(np.shape(feeds[t.name])[1:])
        if t.shape[:1] != (1,) or tuple(t.shape[1:]) != sample_shape:
            raise BadInput(f"input '{t.name}': TFLite Micro runs shape {list(t.shape)}, the data has samples of "
                           f"{list(sample_shape)}", "give data that matches the model's input, one sample per row")

    from mdeploy.passes.backends import load_runner, run_batched

    reference = run_batched(load_runner("tflite", model), feeds)
    with tempfile.TemporaryDirectory(prefix="mdeploy-micro-") as tmp:
        np.savez(Path(tmp) / "in.npz", **{f"input_{t.position}": t.quantize(feeds[t.name]) for t in inputs})
        ran = _probe("run", str(model), str(arena), str(Path(tmp) / "in.npz"), str(Path(tmp) / "out.npz"))
        if "error" in ran:
            raise PassFailed(f"{model}: TFLite Micro failed with the {arena}-byte arena it was measured to need: "
                             f"{ran['error']}", "report this: the measured arena did not hold on a second run")
        with np.load(Path(tmp) / "out.npz") as z:
            got = {o.name: o.dequantize(z[f"output_{o.position}"]) for o in outputs}
    agreements = [_compare(np.asarray(reference[o.name]).reshape(got[o.name].shape), got[o.name], o) for o in outputs]

    data_bytes = model.read_bytes()
    guard = f"{ident.upper()}_MODEL_DATA_H_"
    texts = {
        f"{ident}_model_data.cc": model_source(data_bytes, ident, f"{ident}_model_data.h"),
        f"{ident}_model_data.h": model_header(ident, len(data_bytes), arena, need, (arena - need) / need, guard),
        f"{ident}_model_ops.h": resolver_header(ident, methods, f"{ident.upper()}_MODEL_OPS_H_"),
    }
    report = MicroReport(str(model), ident, sorted(files), methods, len(data_bytes), need, int(measured.get("recorded", 0)),
                         arena, round((arena - need) / need, 4), True, description, n, agreements)
    for fname, text in texts.items():
        with atomic_output(Path(out_dir) / fname, force=force) as tmp_path:
            tmp_path.write_text(text)
    write_text_atomic(Path(out_dir) / "micro.json", json.dumps(report.to_dict(), indent=2) + "\n")
    return report
