"""Small ONNX models built with onnx.helper for validate's edge cases: a corrupted kernel, an NCHW front, a wrong head."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def corrupt_largest_kernel(src: Path, dst: Path, seed: int = 0) -> str:
    """Copy an ONNX model with its largest float initializer replaced by noise; returns the initializer's name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    init = max((i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT),
               key=lambda i: int(np.prod(i.dims)))
    w = numpy_helper.to_array(init)
    noise = np.random.default_rng(seed).normal(0, float(np.std(w)) * 3, w.shape).astype(np.float32)
    init.CopyFrom(numpy_helper.from_array(noise, init.name))
    onnx.save(model, str(dst))
    return init.name


def nchw_front(src: Path, dst: Path) -> None:
    """The same model taking its image as (N, C, H, W): a Transpose to NHWC in front of the original graph."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    g = model.graph
    old = g.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in old.type.tensor_type.shape.dim]
    n, h, w, c = dims
    inner = old.name + "_nhwc"
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == old.name:
                node.input[i] = inner
    g.node.insert(0, helper.make_node("Transpose", [old.name], [inner], perm=[0, 2, 3, 1]))
    new = helper.make_tensor_value_info(old.name, old.type.tensor_type.elem_type, [n or "N", c, h, w])
    g.input.remove(old)
    g.input.insert(0, new)
    onnx.save(model, str(dst))


def wrong_head(dst: Path, classes: int = 5, input_name: str = "image", output_name: str = "probs") -> None:
    """An (N, 8, 8, 1) -> (N, classes) model: same input as the digits sample, a different output shape."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, classes)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "shape")
    nodes = [helper.make_node("Reshape", [input_name, "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], [output_name], axis=1)]
    graph = helper.make_graph(nodes, "wrong_head",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 8, 8, 1])],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", classes])],
                              initializer=[w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(dst))
