"""The runtime table's batching: static batch sizes are honoured wherever outputs are collected."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from mdeploy.passes.backends import load_runner, run_batched


def test_run_batched_feeds_a_static_batch_model_one_row_at_a_time(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "static", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "static.onnx"
    onnx.save(model, str(path))
    runner = load_runner("onnx", path)
    feeds = {"x": np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3)}
    out = run_batched(runner, feeds, batch_size=64)
    assert out["y"].shape == (5, 3)
    np.testing.assert_array_equal(out["y"], np.maximum(feeds["x"], 0))
