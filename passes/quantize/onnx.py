"""QuantizeOnnx: static int8 (after quant_pre_process, QDQ or QOperator, calibrated), dynamic int8 weights, or fp16.

All through onnxruntime (quantization, and the float16 converter it ships in onnxruntime.transformers),
so no new dependency and no TensorFlow. Every result is loaded and run once before it is published.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mdeploy.calibration.adapters import OrtCalibrationReader
from mdeploy.calibration.shapes import model_batch_limit
from mdeploy.calibration.sources import DataSpec
from mdeploy.passes.backends.onnxruntime import import_ort, load_onnx_model, onnx_signature
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput, PassFailed
from mdeploy.passes.core.fsio import atomic_output
from mdeploy.passes.core.pipeline import Context, pass_params
from mdeploy.passes.quantize import PRECISION, check_mode, quantized_file_name, require_calibration, run_once
from mdeploy.passes.quantize.onnx_prepare import prepare_for_quantization

FORMATS = ("qdq", "qoperator")
WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
METHODS = ("minmax", "entropy", "percentile")


CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class QuantizeOnnx:
    """ONNX -> quantized ONNX.

    mode: int8 (static, calibrated) | dynamic (int8 weights, activations quantized at run time) | fp16.
    format: qdq (QuantizeLinear/DequantizeLinear pairs, the default) | qoperator (QLinearConv, ...); int8 only.
    per_channel: per-channel weight scales (int8 and dynamic).
    method: calibration method for int8: minmax | entropy | percentile.
    activations: uint8 (the default: uint8 activations with int8 weights, ONNX Runtime's fast U8S8 path on
        x86; MobileNetV2 QDQ runs 2.3x faster than float, where int8 activations ran 1.1x, and as QOperator 8x
        slower) | int8 (S8S8, for targets that need signed activations). Weights are always symmetric int8,
        so a pruned zero stays exactly zero.
    symmetric_activations: symmetric activation ranges (zero point at the middle) instead of min/max-fitted ones.
    weight_ops_only: int8 only: quantize only the weight ops (Conv, MatMul, Gemm), where int8 saves time, and keep
        every other op in float. A graph exported with its normalisations and activations spelled out as element-wise
        ops (jax2tf's LayerNorm/GELU in magika) loses ~80 points when those are int8 too, and under 1 this way.
    exclude: node names or op types to keep in float (node names as in the model, or as onnxruntime's
        pre-processing names them: what `--debug-layers` lists).
    calibration: the calibration data (int8 only), as a DataSpec window.
    keep_io_float: fp16 keeps float32 inputs and outputs (the default), casting inside the graph.
    compact_names: rename internal tensors and nodes to short ids in the result. Converter-made names
        ("model_1/dense_1/Cast/ReadVariableOp:0_quantized_scale") are a sixth of a small int8 model;
        graph inputs and outputs keep their names.
    file_name: output under OUTDIR/onnx/ (default model.<mode>.onnx).
    """

    name: ClassVar[str] = "quantize.onnx"
    failure_hint: ClassVar[str] = "--exclude the op or node named above to keep it in float, or try --per-tensor or --mode fp16"
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "onnx"
    mode: str = "int8"
    format: str = "qdq"
    per_channel: bool = True
    method: str = "minmax"
    activations: str = "uint8"
    symmetric_activations: bool = False
    weight_ops_only: bool = False
    exclude: tuple[str, ...] = ()
    calibration: DataSpec | None = None
    keep_io_float: bool = True
    compact_names: bool = True
    file_name: str | None = None

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.format not in FORMATS:
            raise BadInput(f"unknown ONNX quantization format '{self.format}'", f"choose from {', '.join(FORMATS)}")
        if self.method not in METHODS:
            raise BadInput(f"unknown calibration method '{self.method}'", f"choose from {', '.join(METHODS)}")
        if self.activations not in ("uint8", "int8"):
            raise BadInput(f"unknown activation type '{self.activations}'", "choose uint8 (fast on x86) or int8")
        if self.mode != "int8":
            static_only = [flag for flag, given in (
                ("--method", self.method != "minmax"), ("--format", self.format != "qdq"),
                ("--activations", self.activations != "uint8"), ("--symmetric-activations", self.symmetric_activations),
                ("--weight-ops-only", self.weight_ops_only), ("--per-tensor", self.mode == "fp16" and not self.per_channel))
                if given]
            if static_only:
                raise BadInput(f"{', '.join(static_only)} {'applies' if len(static_only) == 1 else 'apply'} to --mode int8 "
                               f"(got --mode {self.mode}, which has no activation calibration)",
                               "use --mode int8, or drop " + ("that flag" if len(static_only) == 1 else "those flags"))

    def output_path(self, ctx: Context) -> Path:
        return Path(ctx.out_dir) / "onnx" / (self.file_name or quantized_file_name(self.mode, ".onnx"))

    def run(self, artifact: Artifact, ctx: Context) -> Artifact:
        final = self.output_path(ctx)
        model = load_onnx_model(artifact.path)
        names, types = self._exclusions(model)
        if self.mode != "int8":
            self._check_names(names, [model])
        with tempfile.TemporaryDirectory(prefix="mdeploy-quant-") as work, atomic_output(final, ctx.force) as tmp, quiet_quantizer():
            notes: list[str] = []
            if self.mode == "fp16":
                self._fp16(model, tmp)
                smoke = run_once(tmp, "onnx", artifact, self.calibration)
            else:
                source, notes = prepare_for_quantization(Path(artifact.path), Path(work))
                smoke, fallback = self._quantize_with_fallbacks(artifact, source, Path(work), tmp, names, types, ctx)
                notes += fallback
            if self.compact_names:
                compact_tensor_names(tmp)
            for note in notes + ([smoke] if smoke else []):
                ctx.warn(f"{self.name}: {note}")
        derived = artifact.derive(format="onnx", path=final, name=f"onnx-{self.mode}", precision=PRECISION[self.mode],
                                  produced_by={"pass": self.name, "params": pass_params(self)},
                                  calibration=self.calibration.spec if self.calibration and self.mode == "int8" else None,
                                  quantize_notes=notes)
        inputs, outputs = onnx_signature(load_onnx_model(final, load_external_data=False))
        return dataclasses.replace(derived, inputs=inputs, outputs=outputs)

    def _attempts(self) -> list[tuple[bool, dict, bool, str | None]]:
        """(per_channel, extra options, weight ops only, what the report says) in the order an expert tries them."""
        failed = "quantization failed inside onnxruntime ({cause})"
        attempts: list[tuple[bool, dict, bool, str | None]] = [(self.per_channel, {}, False, None)]
        if self.per_channel:
            if self.mode == "int8":
                attempts.append((True, {"QDQDisableWeightAdjustForInt32Bias": True}, False,
                                 f"per-channel {failed}; quantized per-channel with QDQDisableWeightAdjustForInt32Bias"))
            attempts.append((False, {}, False, f"per-channel {failed}; quantized per-tensor"))
        if self.mode == "dynamic":  # each static attempt recalibrates; this one is for dynamic's Gather/Loop trouble
            # Gather/Loop-body quantization trips over outer-scope tensors in recurrent graphs (Keras GRU via tf2onnx)
            attempts.append((False, {}, True, f"{failed}; quantized only the weight ops ({', '.join(WEIGHT_OPS)}) per-tensor"))
        return attempts

    def _quantize_with_fallbacks(self, artifact: Artifact, source: Path, work: Path, out: Path, names, types,
                                 ctx: Context) -> tuple[str | None, list[str]]:
        first: Exception | None = None
        for per_channel, extra, weights_only, note in self._attempts():
            try:
                if self.mode == "dynamic":
                    self._dynamic(source, out, names, types, per_channel, weights_only)
                else:
                    self._static(artifact, source, work, out, names, types, ctx, per_channel, extra, weights_only)
                smoke = run_once(out, "onnx", artifact, self.calibration)
            except BadInput:
                raise
            except Exception as e:  # noqa: BLE001 - onnxruntime.quantization raises anything; kept for the next attempt
                first = first or e
                continue
            return smoke, ([note.format(cause=_cause(first))] if note and first else [])
        assert first is not None
        if isinstance(first, PassFailed):
            raise first
        raise PassFailed(f"onnxruntime's {self.mode} quantizer failed (every fallback too): "
                         f"{_cause(first)}", "--exclude the op or node named above to keep it in float, or try --mode fp16") from first
    def _exclusions(self, model) -> tuple[list[str], set[str]]:
        """Split --exclude into node names and op types. A name that is neither may be one onnxruntime's
        pre-processing gives a fused node: it is checked against that graph (see _check_names)."""
        op_types = {n.op_type for n in model.graph.node}
        return [e for e in self.exclude if e not in op_types], {e for e in self.exclude if e in op_types}

    @staticmethod
    def _check_names(names: list[str], graphs: list) -> None:
        """Refuse an --exclude name that no node has in the model or its pre-processed form, naming it."""
        known = {n.name for g in graphs for n in g.graph.node}
        unknown = [e for e in names if e not in known]
        if unknown:
            op_types = sorted({n.op_type for g in graphs for n in g.graph.node})
            raise BadInput(f"--exclude {', '.join(unknown)}: no node or op type of that name in the model",
                           f"op types present: {', '.join(op_types)}; --debug-layers lists the node names")

    def _op_types(self, types: set[str], static: bool, weights_only: bool = False) -> list[str] | None:
        if weights_only:
            return [t for t in WEIGHT_OPS if t not in types]
        if not types:
            return None
        from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

        if not static:
            registry = IntegerOpsRegistry
        else:
            registry = QDQRegistry if self.format == "qdq" else QLinearOpsRegistry
        return sorted(t for t in registry if t not in types)

    def _fp16(self, model, out: Path) -> None:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        converted = convert_float_to_float16(model, keep_io_types=self.keep_io_float,
                                             node_block_list=[n.name for n in model.graph.node if n.name in self.exclude] or None,
                                             op_block_list=sorted({n.op_type for n in model.graph.node if n.op_type in self.exclude}) or None)
        onnx.save(converted, str(out))

    def _dynamic(self, source: Path, out: Path, names: list[str], types: set[str], per_channel: bool,
                 weights_only: bool = False) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        import_ort()  # its logger quiet before calibration sessions are made

        quantize_dynamic(str(source), str(out), per_channel=per_channel, weight_type=QuantType.QInt8,
                         nodes_to_exclude=names or None, op_types_to_quantize=self._op_types(types, static=False, weights_only=weights_only))

    def _static(self, artifact: Artifact, source: Path, work: Path, out: Path, names: list[str], types: set[str],
                ctx: Context, per_channel: bool, extra: dict, weights_only: bool = False) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        import_ort()  # its logger quiet before calibration sessions are made

        calibration = require_calibration(self.calibration, self.name)
        source = str(Path(source).resolve())
        pre = self._pre_processed(Path(source), work, ctx)
        if names:
            import onnx

            self._check_names(names, [onnx.load(source, load_external_data=False), onnx.load(str(pre), load_external_data=False)])
        # ORT calibrates on a copy of the graph that outputs every intermediate tensor, so peak memory grows
        # with the batch: MobileNetV2 at 32 images needs ~3.5 GB, at 8 under 1 GB, for the same ranges.
        limit = model_batch_limit(artifact.inputs) or CALIBRATION_BATCH  # a model's fixed batch is what it takes
        calibration = dataclasses.replace(calibration, batch_size=min(calibration.batch_size, CALIBRATION_BATCH, limit))
        reader = OrtCalibrationReader(calibration.open(artifact.inputs))
        if len(reader) == 0:
            raise BadInput(f"{calibration.spec}: no calibration samples", "give calibration data with at least one sample")
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.method]
        op_types = self._op_types(types, static=True, weights_only=weights_only or self.weight_ops_only)
        cache = self._calibration_cache(ctx, pre, calibration, op_types)
        if cache is not None and cache.is_file():
            reader = None  # ranges from an earlier run with the same model, data and calibration settings
        quantize_static(str(pre), str(out), reader,
                        quant_format=QuantFormat.QDQ if self.format == "qdq" else QuantFormat.QOperator,
                        per_channel=per_channel, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8 if self.activations == "uint8" else QuantType.QInt8,
                        calibrate_method=method, nodes_to_exclude=names or None, op_types_to_quantize=op_types,
                        calibration_cache_path=cache,
                        # a stride of one batch bounds memory (ranges/histograms are merged batch by batch instead
                        # of after holding every batch's activations), and ORT's histogram collector needs
                        # equal-sized batches within a stride
                        extra_options={"CalibStridedMinMax": 1, **extra,
                                       **({"ActivationSymmetric": True} if self.symmetric_activations else {})})


    @staticmethod
    def _pre_processed(source: Path, work: Path, ctx: Context) -> Path:
        """pre_process(source), once per source file's bytes when the context keeps a cache (a search's trials all
        quantize the same parent: onnxruntime's pre-processing was ~2 s of each magika trial)."""
        if ctx.calibration_cache is None:
            return pre_process(source, work, ctx.warn)
        import hashlib

        cached = Path(ctx.calibration_cache) / f"pre-{hashlib.sha256(source.read_bytes()).hexdigest()[:32]}.onnx"
        if cached.is_file():
            return cached
        pre = pre_process(source, work, ctx.warn)
        if [p for p in Path(work).iterdir() if p.is_file() and p != pre and p.suffix != ".onnx"]:
            return pre  # saved with external data beside it: a single-file cache entry would lose it
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.partial")
        shutil.copyfile(pre, partial)
        os.replace(partial, cached)
        return cached

    def _calibration_cache(self, ctx: Context, pre: Path, calibration: DataSpec, op_types) -> Path | None:
        """ctx.calibration_cache/<key>.json: the key is everything that decides the ranges (the pre-processed graph's
        bytes, the data window, the method, symmetric activations, which op types are calibrated), and nothing that
        does not (nodes kept in float, per-channel weights, the output format)."""
        if ctx.calibration_cache is None:
            return None
        import hashlib
        import json

        digest = hashlib.sha256(Path(pre).read_bytes())
        digest.update(json.dumps([dataclasses.asdict(calibration), self.method, self.symmetric_activations, op_types],
                                 default=str).encode())
        Path(ctx.calibration_cache).mkdir(parents=True, exist_ok=True)
        return Path(ctx.calibration_cache) / f"{digest.hexdigest()[:32]}.json"


def pre_process(source: Path, work: Path, warn) -> Path:
    """onnxruntime's quant_pre_process of `source` into `work`/preprocessed.onnx: the graph (and node names) the
    quantizer sees, which `--debug-layers` measures against."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre, source = (Path(work) / "preprocessed.onnx").resolve(), str(Path(source).resolve())
    # ORT's symbolic shape inference saves sym_shape_infer_temp.onnx (and .data files) in the working directory
    # when it gives up: run it in our temporary directory, with absolute paths, so nothing lands in the user's.
    with contextlib.chdir(work):
        try:
            quant_pre_process(source, str(pre))
        except Exception as e:  # noqa: BLE001 - symbolic shape inference fails on some graphs; the plain route still works
            warn(f"quant_pre_process failed ({type(e).__name__}: {str(e).strip()[:200]}); quantizing without symbolic shape inference")
            quant_pre_process(source, str(pre), skip_symbolic_shape=True)
    return pre


def _cause(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


@contextlib.contextmanager
def quiet_quantizer():
    """onnxruntime.quantization print()s progress; the library never prints, and --json promises a clean stdout.
    (Its advice on the root logger is silenced, or not, by configure_logging at the CLI edge.)"""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def compact_tensor_names(path: Path) -> None:
    """Rename every internal tensor and node of the model at `path` to a short id, in place (graph I/O untouched)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return  # subgraphs capture outer names implicitly; leave such models alone
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for v in graph.value_info:
        v.name = short(v.name)
    onnx.save(model, str(path))
