"""End-to-end sensitivity of each quantized ONNX node: the model's outputs when that node *alone* is int8.

The isolated per-node error (passes/quantize/debug.py) says how much a node's quantization changes its own output;
it cannot say what that change does further on. In a graph whose normalisations are spelled out in element-wise ops
(jax2tf's LayerNorm in magika: Square, ReduceSum, Add eps, Sqrt, Reciprocal) the variance path looks harmless node
by node, yet int8 there drives 1/sqrt(var + eps) to infinity. Ranked by their own error, the nodes magika needs in
float came 40th-45th of 62, and the search spent 52 evaluations; ranked by what each does to the outputs alone, they
come first.

For each quantized node X of the QDQ model, a copy of the float graph gets exactly X's quantization from the QDQ
model: its activation inputs through the same QuantizeLinear/DequantizeLinear (scale, zero point), its int8
weights, and its output through the QuantizeLinear/DequantizeLinear the int8 model puts after it. That copy runs on
a few held-out samples, and the worst output's SQNR against the float model's is X's sensitivity. One model build
and one small run per node: about as much as one full evaluation, for the whole ranking.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mdeploy.calibration.batches import CalibrationSource
from mdeploy.passes.quantize.debug import QDQ_OPS, SENSITIVITY_SAMPLES, SampleRuns, adopt_opsets, quantized_nodes, sqnr_db

TAG = "mdeploy_alone::"
# Every node runs on all of its samples: screening on the first few misses harm that only some samples show. On
# magika, LayerNorm_0's `AddV2` of epsilon measured 59 dB alone on the first 4 samples and -inf on all 32 (a window
# of zero variance), and the nodes kept in float without it missed the budget by 1.5 points.


def worst_output_sqnr(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    """The lowest SQNR (dB) among the float outputs over every run, -inf when any output is NaN/Inf."""
    signal: dict[int, float] = {}
    noise: dict[int, float] = {}
    for ref_run, got_run in zip(reference, got):
        for k, (ref, new) in enumerate(zip(ref_run, got_run)):
            if np.asarray(ref).dtype.kind != "f" or np.shape(ref) != np.shape(new):
                continue  # labels and indices: the float outputs beside them carry the error
            a, b = np.asarray(ref, dtype=np.float64), np.asarray(new, dtype=np.float64)
            if not np.all(np.isfinite(b)):
                return -math.inf
            signal[k] = signal.get(k, 0.0) + float(np.sum(a * a))
            noise[k] = noise.get(k, 0.0) + float(np.sum((a - b) ** 2))
    return min((sqnr_db(signal[k], noise[k]) for k in signal), default=math.inf)


class QdqIndex:
    """The look-ups into the QDQ model that every node's variant needs, built once for all of them."""

    def __init__(self, qdq_model):
        g = qdq_model.graph
        self.model = qdq_model
        self.inits = {i.name: i for i in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.nodes = {n.name: n for n in g.node if n.name}
        self.reader: dict[tuple[str, str], object] = {}  # (QuantizeLinear|DequantizeLinear, tensor) -> that node
        for n in g.node:
            if n.op_type in QDQ_OPS and n.input:
                self.reader.setdefault((n.op_type, n.input[0]), n)


def alone_variant(float_model, index: QdqIndex, node_name: str):
    """The float model with only `node_name` quantized as the QDQ model quantizes it (module docstring), or None when
    the node's quantization cannot be carried over (a name or tensor the float graph lacks). The added nodes go
    right before and after the node, so the graph stays in topological order."""
    import onnx

    q_node = index.nodes.get(node_name)
    variant = onnx.ModelProto()
    variant.CopyFrom(float_model)
    g = variant.graph
    at = next((i for i, n in enumerate(g.node) if n.name == node_name), None)
    if q_node is None or at is None or len(q_node.input) != len(g.node[at].input):
        return None
    f_node = g.node[at]
    f_tensors = {v.name for v in g.input} | {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
    before: list = []
    after: list = []
    added: set[str] = set()

    def copy_init(name: str) -> str:
        if name not in index.inits:
            return name
        if name not in added:
            t = g.initializer.add()
            t.CopyFrom(index.inits[name])
            t.name = TAG + name
            added.add(name)
        return TAG + name

    def copied(node, inputs: list[str], output: str):
        """The QDQ model's own QuantizeLinear/DequantizeLinear (its attributes: axis, ...), rewired."""
        c = onnx.NodeProto()
        c.CopyFrom(node)
        c.input[:], c.output[:], c.name = inputs, [output], output
        return c

    def qdq(src: str, q, dq, tag: str, into: list) -> str:
        """src -> QuantizeLinear(q's parameters) -> DequantizeLinear(dq's parameters); returns the output name."""
        qo, do = f"{TAG}{tag}::q", f"{TAG}{tag}::dq"
        into.extend([copied(q, [src, *map(copy_init, q.input[1:])], qo), copied(dq, [qo, *map(copy_init, dq.input[1:])], do)])
        return do

    for pos, name in enumerate(q_node.input):
        dq = index.producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        if dq.input[0] in index.inits:  # int8 weight (or int32 bias): dequantize the QDQ model's own
            out = f"{TAG}{node_name}::in{pos}"
            before.append(copied(dq, list(map(copy_init, dq.input)), out))
            f_node.input[pos] = out
            continue
        q = index.producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in f_tensors:
            return None
        f_node.input[pos] = qdq(q.input[0], q, dq, f"{node_name}::in{pos}", before)
    q = index.reader.get(("QuantizeLinear", q_node.output[0]))
    dq = index.reader.get(("DequantizeLinear", q.output[0])) if q is not None else None
    if dq is not None:  # the int8 model quantizes this output before anything reads it
        raw, out = f"{TAG}{node_name}::raw", f_node.output[0]
        f_node.output[0] = raw
        last = qdq(raw, q, dq, f"{node_name}::out", after)
        after.append(onnx.helper.make_node("Identity", [last], [out], name=f"{TAG}{node_name}::id"))
    ordered = [*g.node[:at], *before, f_node, *after, *g.node[at + 1:]]
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)
    adopt_opsets(variant, index.model)
    return variant


def node_sensitivity(float_model, qdq_model, heldout: CalibrationSource, work: Path,
                     limit: int = SENSITIVITY_SAMPLES, on_node=None) -> dict[str, float]:
    """node -> the worst float output's SQNR (dB) when only that node is int8; -inf when the outputs go NaN/Inf.
    `on_node(done, total)` is called after each node."""
    import onnx

    from mdeploy.passes.backends.onnxruntime import onnx_session

    path = Path(work) / "alone.onnx"
    onnx.save(float_model, str(path))
    sess = onnx_session(path)
    runs = list(SampleRuns(heldout, sess, limit, chunk=limit))
    names = [o.name for o in sess.get_outputs()]
    reference = [sess.run(names, part) for part, _ in runs]
    del sess
    out: dict[str, float] = {}
    index = QdqIndex(qdq_model)
    nodes = [n for n in quantized_nodes(qdq_model) if n.op_type not in QDQ_OPS]
    for done, node in enumerate(nodes, 1):
        if on_node is not None:
            on_node(done, len(nodes))
        variant = alone_variant(float_model, index, node.name)
        if variant is None:
            continue
        onnx.save(variant, str(path))
        try:
            session = onnx_session(path)
            got = [session.run(names, part) for part, _ in runs]
        except Exception:  # noqa: BLE001 - a variant ONNX Runtime will not run says nothing about the node: unranked
            continue
        out[node.name] = worst_output_sqnr(reference, got)
    path.unlink(missing_ok=True)
    return out
