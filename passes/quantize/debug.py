"""Per-layer quantization error: which nodes (ONNX) lose the most when quantized, measured on held-out data.

onnxruntime's qdq_loss_debug pairs each float activation with its QDQ twin, but in the *quantized* model every
tensor already carries the error of all layers before it, so a layer late in the graph looks bad for what earlier
layers did. Here each layer is isolated instead, in one pass over the data: a probe graph holds the float model and
a copy of the QDQ model whose every activation QuantizeLinear reads the *float* tensor. Each copied node then sees
float inputs quantized exactly as the int8 model quantizes them, with its int8 weights, so the difference between
its output and the float node's output is the error that node's quantization adds (SQNR, relative RMSE, and that
RMSE in units of the output's quantization scale). The weight error (int8 weights dequantized vs the float ones)
is reported beside it. Node names are the ones `--exclude` (onnxruntime's nodes_to_exclude) takes.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.calibration.batches import LABELS, CalibrationSource
from mdeploy.passes.backends.onnxruntime import load_onnx_model, onnx_session

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
PROBE = "mdeploy_probe::"


@dataclass
class LayerError:
    """One layer's quantization error. Lower SQNR / higher relative RMSE is worse; `rank` 1 is the worst."""

    node: str
    op: str
    output: str
    sqnr_db: float
    rel_rmse: float
    scale_rmse: float | None = None  # RMSE of the output error / the output's quantization scale (steps)
    weight_sqnr_db: float | None = None
    weight_rel_rmse: float | None = None
    rank: int = 0
    # what the ranking used: the worse of this layer's own SQNR and its consumers' (a tensor stays in float only
    # when its producer and its consumers do, so a consumer hurt by this layer's output ranks this layer with it)
    rank_sqnr_db: float | None = None
    via: str | None = None  # the consumer whose error ranked this layer, when it is not the layer's own
    # the worst model output's SQNR when this layer alone is int8 (passes/quantize/sensitivity.py); ranks before
    # the layer's own error when measured
    alone_sqnr_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass
class LayerDebug:
    """The ranked per-layer errors of one quantized model, and the data and method that measured them."""

    format: str
    data: str
    samples: int
    method: str
    layers: list[LayerError] = field(default_factory=list)
    seconds: float = 0.0

    def ranking(self) -> list[str]:
        return [layer.node for layer in self.layers]

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "data": self.data, "samples": self.samples, "method": self.method,
                "seconds": round(self.seconds, 3), "layers": [layer.to_dict() for layer in self.layers]}


def sqnr_db(signal_power: float, noise_power: float) -> float:
    if noise_power <= 0:
        return math.inf
    if signal_power <= 0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


def rank_layers(layers: list[LayerError], producers: dict[str, set[str]] | None = None) -> list[LayerError]:
    """Worst first. A layer ranks by the worse of its own SQNR and that of the layers reading its output
    (`producers`: layer -> the layers whose outputs it reads); ties put the layer that erred itself first."""
    def own(layer: LayerError) -> float:
        value = layer.alone_sqnr_db if layer.alone_sqnr_db is not None else layer.sqnr_db
        return value if not math.isnan(value) else -math.inf

    by_name = {layer.node: layer for layer in layers}
    for layer in layers:
        layer.rank_sqnr_db, layer.via = own(layer), None
    for consumer, sources in (producers or {}).items():
        c = by_name.get(consumer)
        for name in sources:
            p = by_name.get(name)
            if c is not None and p is not None and own(c) < p.rank_sqnr_db:
                p.rank_sqnr_db, p.via = own(c), consumer
    ranked = sorted(layers, key=lambda x: (x.rank_sqnr_db, own(x), x.sqnr_db if not math.isnan(x.sqnr_db) else -math.inf,
                                           -x.rel_rmse))
    for i, layer in enumerate(ranked, 1):
        layer.rank = i
    return ranked


def _is_activation_q(node, initializers: set[str]) -> bool:
    return node.op_type == "QuantizeLinear" and node.input[0] not in initializers


def quantized_nodes(qdq_model) -> list:
    """The compute nodes the QDQ model quantized: every non-Q/DQ node that reads a DequantizeLinear output."""
    dq_out = {o for n in qdq_model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n for n in qdq_model.graph.node if n.op_type not in QDQ_OPS and n.name and any(i in dq_out for i in n.input)]


def layer_producers(qdq_model) -> dict[str, set[str]]:
    """quantized node -> the quantized nodes whose outputs it reads (through their QuantizeLinear/DequantizeLinear)."""
    producer = {o: n for n in qdq_model.graph.node for o in n.output}
    names = {n.name for n in quantized_nodes(qdq_model)}
    out: dict[str, set[str]] = {}
    for node in quantized_nodes(qdq_model):
        for x in node.input:
            src = producer.get(x)
            while src is not None and src.op_type in QDQ_OPS:
                src = producer.get(src.input[0])
            if src is not None and src.name in names:
                out.setdefault(node.name, set()).add(src.name)
    return out


def build_probe(float_model, qdq_model):
    """The probe graph (see the module docstring) and the (node, op, float tensor, probe tensor) pairs it outputs."""
    import onnx

    f_graph, q_graph = float_model.graph, qdq_model.graph
    q_inits = {i.name for i in q_graph.initializer}
    graph_inputs = {v.name for v in f_graph.input}
    f_tensors = graph_inputs | {o for n in f_graph.node for o in n.output} | {i.name for i in f_graph.initializer}

    def renamed(name: str) -> str:
        return name if not name or name in graph_inputs else PROBE + name

    probe = onnx.ModelProto()
    probe.CopyFrom(float_model)
    g = probe.graph
    for init in q_graph.initializer:
        t = g.initializer.add()
        t.CopyFrom(init)
        t.name = renamed(init.name)
    for node in q_graph.node:
        copy = g.node.add()
        copy.CopyFrom(node)
        copy.name = PROBE + node.name if node.name else ""
        rewire = _is_activation_q(node, q_inits) and node.input[0] in f_tensors
        copy.input[:] = [x if (rewire and i == 0) else renamed(x) for i, x in enumerate(node.input)]
        copy.output[:] = [renamed(x) for x in node.output]
    f_out = {o for n in f_graph.node for o in n.output}
    # the int8 model quantizes a node's output before anything reads it (and may drop a Relu that the output's
    # zero point then does), so a copied node's output goes through that same QuantizeLinear/DequantizeLinear
    output_q = {n.input[0]: n for n in q_graph.node if _is_activation_q(n, q_inits)}
    pairs = []
    for node in quantized_nodes(qdq_model):
        out = node.output[0]
        if out not in f_out:
            continue
        compared = renamed(out)
        q = output_q.get(out)
        if q is not None:
            params = [renamed(x) for x in q.input[1:]]
            g.node.add().CopyFrom(onnx.helper.make_node("QuantizeLinear", [compared, *params], [compared + "::q"],
                                                        name=PROBE + node.name + "::q"))
            g.node.add().CopyFrom(onnx.helper.make_node("DequantizeLinear", [compared + "::q", *params], [compared + "::qdq"],
                                                        name=PROBE + node.name + "::dq"))
            compared += "::qdq"
        pairs.append((node.name, node.op_type, out, compared))
    known = {v.name for v in g.output}
    for _, _, f, q in pairs:
        for name in (f, q):
            if name not in known:
                g.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    adopt_opsets(probe, qdq_model)
    return probe, pairs


def adopt_opsets(model, qdq_model) -> None:
    """Raise `model` (a copy of the float model holding QDQ nodes) to the QDQ model's opsets and IR version: per-channel
    QuantizeLinear and the com.microsoft domain may need newer ones than the float model has."""
    have = {o.domain: o for o in model.opset_import}
    for o in qdq_model.opset_import:
        if o.domain not in have:
            model.opset_import.add().CopyFrom(o)
        elif have[o.domain].version < o.version:
            have[o.domain].version = o.version
    model.ir_version = max(model.ir_version, qdq_model.ir_version)


def _output_scales(qdq_model) -> dict[str, float]:
    """tensor -> the scalar scale of the QuantizeLinear that quantizes it (per-tensor activations)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in qdq_model.graph.initializer}
    out: dict[str, float] = {}
    for n in qdq_model.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 1 and n.input[1] in inits:
            s = numpy_helper.to_array(inits[n.input[1]])
            if s.size == 1:
                out.setdefault(n.input[0], float(s.reshape(())))
    return out


def weight_errors(float_model, qdq_model) -> dict[str, tuple[float, float]]:
    """node -> (SQNR dB, relative RMSE) of its int8 weights dequantized against the float model's weights."""
    from onnx import numpy_helper

    q_inits = {i.name: i for i in qdq_model.graph.initializer}
    f_inits = {i.name: i for i in float_model.graph.initializer}
    f_nodes = {n.name: n for n in float_model.graph.node if n.name}
    producers = {o: n for n in qdq_model.graph.node for o in n.output}
    out: dict[str, tuple[float, float]] = {}
    for node in quantized_nodes(qdq_model):
        fnode = f_nodes.get(node.name)
        if fnode is None:
            continue
        for pos, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in q_inits or pos >= len(fnode.input):
                continue
            w_name = fnode.input[pos]
            if w_name not in f_inits or pos == 2:  # the int32 bias is exact enough; weights are what lose bits
                continue
            w = numpy_helper.to_array(f_inits[w_name]).astype(np.float64)
            wq = _dequantize(dq, q_inits)
            if wq is None or wq.shape != w.shape:
                continue
            noise = float(np.sum((w - wq) ** 2))
            power = float(np.sum(w ** 2))
            out[node.name] = (sqnr_db(power, noise), math.sqrt(noise / power) if power > 0 else 0.0)
            break
    return out


def _dequantize(dq, inits) -> np.ndarray | None:
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    if len(dq.input) < 2 or dq.input[1] not in inits:
        return None
    scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
    zp = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] in inits else 0.0
    if np.size(scale) > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zp = np.reshape(zp, shape) if np.size(zp) > 1 else zp
    return (q - zp) * scale


SENSITIVITY_SAMPLES = 32  # the end-to-end ranking's most samples per node (here: sensitivity.py imports this module)
RANK_SAMPLES = 256  # samples the ranking measures at most: SQNR per layer settles long before the gate's data ends
RANK_RUN_BYTES = 256 << 20  # probe outputs one run may hold: the probe outputs two tensors per quantized node


class SampleRuns:
    """The held-out data as the runs an ONNX Runtime session takes, in order, up to `limit` samples.

    A batch is cut along its sample axis into runs of `chunk` samples (the caller may change `chunk` between runs),
    or of exactly the model's fixed batch when its inputs have one (a remainder short of it is left out: such a
    model takes nothing else). A batch with no common sample axis (a scalar input, a recurrent state laid out
    [layers, batch, units]) is one run, never cut: slicing it would feed the model something it never sees."""

    def __init__(self, heldout: CalibrationSource, sess, limit: int | None = None, chunk: int = 1):
        self.heldout, self.limit, self.chunk, self.samples = heldout, limit, chunk, 0
        inputs = sess.get_inputs()
        self.types = {i.name: i.type for i in inputs}
        fixed = {i.shape[0] for i in inputs if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0}
        self.fixed = min(fixed) if fixed else None

    def __iter__(self):
        for batch in self.heldout:
            if self.limit is not None and self.samples >= self.limit:
                return
            feeds = {k: np.asarray(v, dtype=np.float32 if self.types.get(k) == "tensor(float)" else None)
                     for k, v in batch.items() if k != LABELS}
            if not feeds:
                continue
            if not has_sample_axis(feeds):
                rows = next((len(v) for v in feeds.values() if v.ndim), 1)
                self.samples += rows
                yield feeds, rows
                continue
            size = len(next(iter(feeds.values())))
            if self.limit is not None:
                size = min(size, self.limit - self.samples)
            i = 0
            while i < size:
                step = self.fixed or max(1, min(self.chunk, size - i))
                if i + step > size:
                    break
                self.samples += step
                yield {k: v[i:i + step] for k, v in feeds.items()}, step
                i += step


def has_sample_axis(feeds: dict[str, np.ndarray]) -> bool:
    """Every input has a leading axis, of the same length: the samples (what run_batched slices, too)."""
    return all(v.ndim > 0 for v in feeds.values()) and len({len(v) for v in feeds.values()}) == 1


def _power(x: np.ndarray) -> float:
    """sum(x*x) accumulated in float64 without a float64 copy of x."""
    flat = x.reshape(-1)
    return float(sum(np.dot(c.astype(np.float64), c.astype(np.float64)) for c in
                     (flat[i:i + (1 << 20)] for i in range(0, flat.size, 1 << 20))))


def onnx_layer_errors(float_path: Path, qdq_path: Path, heldout: CalibrationSource, work: Path,
                      limit: int | None = RANK_SAMPLES, sensitivity: bool = True, on_node=None) -> LayerDebug:
    """Measure every quantized node of `qdq_path` against `float_path` (the model it was quantized from, with the
    same node and tensor names: quantize with compact_names=False) on up to `limit` samples of `heldout`.

    The probe outputs two tensors per quantized node, for every sample of a run, so memory is bounded by running it
    on sub-batches sized from the first sample's outputs (at most RANK_RUN_BYTES per run) and folding each run into
    per-node sums before the next: magika (6 M activation values per sample) went from 4.5 GB at batch 32 to
    ~0.3 GB. With `sensitivity`, each node is also measured end to end (passes/quantize/sensitivity.py) and ranks by
    that first."""
    import onnx

    t0 = time.perf_counter()
    float_model = load_onnx_model(Path(float_path))
    qdq_model = load_onnx_model(Path(qdq_path))
    probe, pairs = build_probe(float_model, qdq_model)
    probe_path = Path(work) / "probe.onnx"
    onnx.save(probe, str(probe_path))
    sess = onnx_session(probe_path)
    names = sorted({n for _, _, f, q in pairs for n in (f, q)})
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    per_sample: dict[str, int] = {}
    runs = SampleRuns(heldout, sess, limit)  # the first run is one sample; its outputs' size sets the rest
    for part, rows in runs:
        outputs = sess.run(names, part)
        values = dict(zip(names, outputs))
        del outputs
        for node, _, f, q in pairs:
            a, b = values[f], values[q]
            if a.dtype.kind != "f" or a.shape != b.shape:
                continue  # shapes and indices are exact; only float activations lose anything
            signal[node] = signal.get(node, 0.0) + _power(a)
            noise[node] = noise.get(node, 0.0) + _power(np.subtract(a, b, dtype=np.float32))
            per_sample.setdefault(node, max(1, a.size // rows))
        if runs.samples == rows:
            runs.chunk = max(1, int(RANK_RUN_BYTES // max(sum(v.nbytes for v in values.values()) / rows, 1)))
        del values
    n = runs.samples
    del sess
    scales = _output_scales(qdq_model)
    weights = weight_errors(float_model, qdq_model)
    alone, per_node = {}, 0
    if sensitivity:
        from mdeploy.passes.quantize.sensitivity import node_sensitivity

        # about two or three more passes over the data the ranking measured: 16-32 samples per node
        per_node = max(16, min(SENSITIVITY_SAMPLES, (3 * n) // max(len(pairs), 1)))
        alone = node_sensitivity(float_model, qdq_model, heldout, work, limit=per_node, on_node=on_node)
    layers = []
    for node, op, f, _ in pairs:
        if node not in signal:
            continue
        s, e = signal[node], noise[node]
        rmse = math.sqrt(e / max(max(n, 1) * per_sample[node], 1))
        scale = scales.get(f)
        w = weights.get(node)
        layers.append(LayerError(node=node, op=op, output=f, sqnr_db=sqnr_db(s, e),
                                 rel_rmse=math.sqrt(e / s) if s > 0 else (0.0 if e == 0 else math.inf),
                                 scale_rmse=rmse / scale if scale else None,
                                 weight_sqnr_db=w[0] if w else None, weight_rel_rmse=w[1] if w else None,
                                 alone_sqnr_db=alone.get(node)))
    return LayerDebug("onnx", heldout.description if limit is None or n < limit else f"{heldout.description} (first {n})",
                      n, ("ranked by the model's outputs with each node alone in int8 "
                          f"(first {min(n, per_node)} samples), then by each node's own error "
                          "(float inputs quantized as the int8 model does, int8 weights, vs the float node)") if alone else
                      "isolated per node: float inputs quantized as the int8 model does, int8 weights, vs the float node",
                      # measured alone, a node's variant quantizes its inputs and output too: no need to rank a producer
                      # by what its consumers suffer
                      rank_layers(layers, None if alone else layer_producers(qdq_model)), time.perf_counter() - t0)
