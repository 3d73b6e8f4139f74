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

from mdeploy.calibration.batches import LABELS, CalibrationSource
from mdeploy.passes.quantize.debug import QDQ_OPS, SENSITIVITY_SAMPLES, quantized_nodes, sqnr_db
TAG = "mdeploy_alone::"


def sensitivity_feeds(heldout: CalibrationSource, input_types: dict[str, str], limit: int = SENSITIVITY_SAMPLES) -> dict[str, np.ndarray]:
    """The first `limit` held-out samples as one feed dict (labels dropped)."""
    parts: dict[str, list[np.ndarray]] = {}
    n = 0
    for batch in heldout:
        rows = min(limit - n, len(next(iter(v for k, v in batch.items() if k != LABELS))))
        for k, v in batch.items():
            if k != LABELS:
                parts.setdefault(k, []).append(np.asarray(v[:rows], dtype=np.float32 if input_types.get(k) == "tensor(float)" else None))
        n += rows
        if n >= limit:
            break
    return {k: np.concatenate(v) for k, v in parts.items()}


def alone_variant(float_model, qdq_model, node_name: str):
    """The float model with only `node_name` quantized as the QDQ model quantizes it (module docstring), or None when
    the node's quantization cannot be carried over (a name or tensor the float graph lacks)."""
    import onnx

    q_graph = qdq_model.graph
    q_inits = {i.name: i for i in q_graph.initializer}
    producer = {o: n for n in q_graph.node for o in n.output}
    q_node = next((n for n in q_graph.node if n.name == node_name), None)
    variant = onnx.ModelProto()
    variant.CopyFrom(float_model)
    g = variant.graph
    f_node = next((n for n in g.node if n.name == node_name), None)
    if q_node is None or f_node is None or len(q_node.input) != len(f_node.input):
        return None
    f_tensors = {v.name for v in g.input} | {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
    added: set[str] = set()

    def copy_init(name: str) -> str:
        if name and name in q_inits and TAG + name not in added:
            t = g.initializer.add()
            t.CopyFrom(q_inits[name])
            t.name = TAG + name
            added.add(TAG + name)
        return TAG + name if name in q_inits else name

    def qdq(src: str, q, dq, tag: str) -> str:
        """src -> QuantizeLinear(q's parameters) -> DequantizeLinear(dq's parameters); returns the output name."""
        qo, do = f"{TAG}{tag}::q", f"{TAG}{tag}::dq"
        g.node.add().CopyFrom(onnx.helper.make_node("QuantizeLinear", [src, *map(copy_init, q.input[1:])], [qo],
                                                    name=qo, **_attrs(q)))
        g.node.add().CopyFrom(onnx.helper.make_node("DequantizeLinear", [qo, *map(copy_init, dq.input[1:])], [do],
                                                    name=do, **_attrs(dq)))
        return do

    for pos, name in enumerate(q_node.input):
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        if dq.input[0] in q_inits:  # int8 weight (or int32 bias): dequantize the QDQ model's own
            out = f"{TAG}{node_name}::in{pos}"
            g.node.add().CopyFrom(onnx.helper.make_node("DequantizeLinear", list(map(copy_init, dq.input)), [out],
                                                        name=out, **_attrs(dq)))
            f_node.input[pos] = out
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in f_tensors:
            return None
        f_node.input[pos] = qdq(q.input[0], q, dq, f"{node_name}::in{pos}")
    consumers_q = [n for n in q_graph.node if n.op_type == "QuantizeLinear" and n.input[0] == q_node.output[0]]
    if consumers_q:  # the int8 model quantizes this output before anything reads it
        q = consumers_q[0]
        dq = next((n for n in q_graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]), None)
        if dq is not None:
            raw = f"{TAG}{node_name}::raw"
            out = f_node.output[0]
            f_node.output[0] = raw
            last = qdq(raw, q, dq, f"{node_name}::out")
            g.node.add().CopyFrom(onnx.helper.make_node("Identity", [last], [out], name=f"{TAG}{node_name}::id"))
    for o in qdq_model.opset_import:  # per-channel QuantizeLinear needs the QDQ model's opset
        have = next((x for x in variant.opset_import if x.domain == o.domain), None)
        if have is None:
            variant.opset_import.add().CopyFrom(o)
        elif have.version < o.version:
            have.version = o.version
    variant.ir_version = max(float_model.ir_version, qdq_model.ir_version)
    _topological(g)
    return variant


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _topological(g) -> None:
    """Re-order the graph's nodes so every input is produced before it is read (the added nodes went at the end)."""
    available = {v.name for v in g.input} | {i.name for i in g.initializer} | {""}
    pending = list(g.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # an input nothing produces (an outer-scope name): keep the rest as they were
            ordered += rest
            break
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)


def node_sensitivity(float_model, qdq_model, heldout: CalibrationSource, work: Path,
                     limit: int = SENSITIVITY_SAMPLES, on_node=None) -> dict[str, float]:
    """node -> the worst float output's SQNR (dB) when only that node is int8; -inf when the outputs go NaN/Inf.
    `on_node(done, total)` is called after each node."""
    import onnx

    from mdeploy.passes.backends.onnxruntime import onnx_session

    path = Path(work) / "alone.onnx"
    onnx.save(float_model, str(path))
    sess = onnx_session(path)
    feeds = sensitivity_feeds(heldout, {i.name: i.type for i in sess.get_inputs()}, limit)
    names = [o.name for o in sess.get_outputs()]
    reference = dict(zip(names, sess.run(names, feeds)))
    del sess
    out: dict[str, float] = {}
    nodes = [n for n in quantized_nodes(qdq_model) if n.op_type not in QDQ_OPS]
    for done, node in enumerate(nodes, 1):
        if on_node is not None:
            on_node(done, len(nodes))
        variant = alone_variant(float_model, qdq_model, node.name)
        if variant is None:
            continue
        onnx.save(variant, str(path))
        try:
            got = dict(zip(names, onnx_session(path).run(names, feeds)))
        except Exception:  # noqa: BLE001 - a variant ONNX Runtime will not run says nothing about the node: unranked
            continue
        worst = math.inf
        for k, ref in reference.items():
            if np.asarray(ref).dtype.kind != "f" or np.shape(ref) != np.shape(got[k]):
                continue  # labels and indices: the float outputs beside them carry the error
            a, b = np.asarray(ref, dtype=np.float64), np.asarray(got[k], dtype=np.float64)
            if not np.all(np.isfinite(b)):
                worst = -math.inf
                break
            worst = min(worst, sqnr_db(float(np.sum(a * a)), float(np.sum((a - b) ** 2))))
        out[node.name] = worst
    path.unlink(missing_ok=True)
    return out
