"""ONNX graphs the quantizers refuse as exported by other frameworks: weights in Constant nodes, initializers as inputs."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mdeploy.passes.quantize.onnx_prepare import computed_weights, initializer_inputs, prepare_for_quantization


def _old_style_model(path):
    w = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    b = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    const = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w_value"))
    mm = helper.make_node("MatMul", ["x", "w"], ["y0"])
    add = helper.make_node("Add", ["y0", "b"], ["y"])
    graph = helper.make_graph([const, mm, add], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [8])],  # an initializer listed as input
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))


def test_constant_weights_become_initializers_and_inputs_are_only_inputs(tmp_path):
    src = tmp_path / "m.onnx"
    _old_style_model(src)
    before = onnx.load(str(src))
    assert computed_weights(before) == ["w"] and initializer_inputs(before) == ["b"]
    out, notes = prepare_for_quantization(src, tmp_path)
    after = onnx.load(str(out))
    assert computed_weights(after) == [] and initializer_inputs(after) == []
    assert len(notes) == 2 and src.read_bytes() == before.SerializeToString()  # the input file is untouched
    import onnxruntime as ort
    x = np.ones((2, 4), np.float32)
    ref = ort.InferenceSession(str(src)).run(None, {"x": x, "b": np.zeros(8, np.float32)})[0]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_a_clean_model_is_left_as_is(tiny_dynamic_onnx, tmp_path):
    out, notes = prepare_for_quantization(tiny_dynamic_onnx, tmp_path)
    assert out == tiny_dynamic_onnx and notes == []
