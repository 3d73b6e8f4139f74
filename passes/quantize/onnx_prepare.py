"""Make an ONNX graph quantizable the way an expert would before calling onnxruntime's quantizers.

Two things third-party exports often have that onnxruntime.quantization cannot take: initializers also
listed as graph inputs (old IR; quant_pre_process then asks for them as "required inputs"), and Conv/MatMul/
Gemm weights computed by Identity/Cast/... nodes instead of stored as initializers ("Expected W to be an
initializer"). Both are fixed on a copy; the caller's file is never changed.
"""
from __future__ import annotations

from pathlib import Path

WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1}
MIN_IR_WITHOUT_INIT_INPUTS = 4  # IR 4 is the first where an initializer need not also be a graph input


def initializer_inputs(model) -> list[str]:
    init = {i.name for i in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name in init]


def computed_weights(model) -> list[str]:
    """Conv/MatMul/Gemm weight tensors that some node computes (not initializers, not graph inputs)."""
    init = {i.name for i in model.graph.initializer}
    graph_inputs = {v.name for v in model.graph.input}
    produced = {o for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        idx = WEIGHT_OPS.get(node.op_type)
        if idx is not None and len(node.input) > idx:
            w = node.input[idx]
            if w in produced and w not in init and w not in graph_inputs:
                out.append(w)
    return out


def prepare_for_quantization(path: Path, work: Path) -> tuple[Path, list[str]]:
    """A copy of the model at `path` that the quantizers accept, and what was done to it (empty: the file as is)."""
    import onnx

    model = onnx.load(str(path))
    done: list[str] = []
    dropped = initializer_inputs(model)
    if dropped:
        keep = [v for v in model.graph.input if v.name not in set(dropped)]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        model.ir_version = max(model.ir_version, MIN_IR_WITHOUT_INIT_INPUTS)
        done.append(f"removed {len(dropped)} initializer(s) from the graph inputs (IR {MIN_IR_WITHOUT_INIT_INPUTS}+ form)")
    computed = computed_weights(model)
    if computed:
        constants_to_initializers(model)
        if computed_weights(model):
            model = fold_constants(model)
        left = computed_weights(model)
        done.append(f"folded constants so that {len(computed) - len(left)} of {len(computed)} computed weight(s) "
                    "became initializers")
    if not done:
        return Path(path), done
    out = work / "prepared.onnx"
    onnx.save(model, str(out))
    return out, done


def constants_to_initializers(model) -> None:
    """Constant nodes holding a tensor (`value`) become initializers of the same name, in place."""
    keep = []
    for node in model.graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is None or len(node.output) != 1:
            keep.append(node)
            continue
        tensor = model.graph.initializer.add()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def fold_constants(model):
    """onnxsim's constant folding with every dynamic dimension kept; the model unchanged if onnxsim fails."""
    import onnxsim

    try:
        folded, ok = onnxsim.simplify(model, check_n=0, perform_optimization=False)
    except Exception:  # noqa: BLE001 - onnxsim raises anything; the quantizer's own error will then name the weight
        return model
    return folded if ok else model
