"""The Simplify pass on real onnxsim and ONNX Runtime: folding, dynamic dims kept, pinning, fallback and strict."""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from mdeploy.passes.backends import load_runner, open_artifact
from mdeploy.passes.core.errors import BadInput, PassFailed
from mdeploy.passes.core.pipeline import Context, run_pass
from mdeploy.passes.simplify import Simplify


def test_folds_constants_keeps_dynamic_dims_and_outputs(tiny_dynamic_onnx, tmp_path):
    source = open_artifact(tiny_dynamic_onnx)
    steps = []
    out = run_pass(Simplify(), source, Context(out_dir=tmp_path), steps)
    summary = out.meta["simplify"]
    assert summary["simplified"] and summary["before"]["nodes"] == 4 and summary["before"]["ops"]["Add"] == 2
    assert summary["after"]["ops"].get("Add", 0) <= 1  # the constant Add is folded (onnxsim may also fuse into Gemm)
    import onnx

    assert "fold_me" not in {n.name for n in onnx.load(str(out.path)).graph.node}
    assert out.inputs[0].shape == (None, None, 4) and out.outputs[0].shape == (None, None, 3)
    assert steps[0].status == "ok" and out.path == tmp_path / "onnx" / "model.sim.onnx"
    x = np.random.default_rng(1).random((3, 5, 4), dtype=np.float32)
    want = load_runner("onnx", source.path)({"x": x})["y"]
    assert np.allclose(load_runner("onnx", out.path)({"x": x})["y"], want, atol=1e-6)
    pickle.loads(pickle.dumps(Simplify(strict=True)))


def test_input_shape_pins_only_what_is_asked(tiny_dynamic_onnx, tmp_path):
    out = run_pass(Simplify(input_shapes=(("x", (2, 7, 4)),)), open_artifact(tiny_dynamic_onnx), Context(out_dir=tmp_path), [])
    assert out.inputs[0].shape == (2, 7, 4)
    with pytest.raises(BadInput, match="'nope', which is not an input"):
        run_pass(Simplify(input_shapes=(("nope", (1,)),), file_name="b.onnx"), open_artifact(tiny_dynamic_onnx),
                 Context(out_dir=tmp_path), [])


def test_failure_keeps_the_input_as_skipped_and_strict_fails(tiny_dynamic_onnx, tmp_path):
    source = open_artifact(tiny_dynamic_onnx)
    bad_shape = (("x", (2, 5)),)  # wrong rank: onnxsim (or the check) fails
    ctx = Context(out_dir=tmp_path)
    steps = []
    out = run_pass(Simplify(input_shapes=bad_shape), source, ctx, steps)
    assert steps[0].status == "skipped" and "kept the unsimplified model" in steps[0].note
    assert out.path.read_bytes() == source.path.read_bytes() and not out.meta["simplify"]["simplified"]
    assert any("simplify:" in w for w in ctx.warnings)
    with pytest.raises(PassFailed, match="simplification of tiny_dynamic.onnx failed"):
        run_pass(Simplify(input_shapes=bad_shape, strict=True, file_name="strict.onnx"), source, Context(out_dir=tmp_path), [])
    assert not (tmp_path / "onnx" / "strict.onnx").exists()
    assert not list((tmp_path / "onnx").glob(".*partial*"))


def test_simplify_pass_never_imports_tensorflow(tiny_dynamic_onnx, tmp_path):
    code = ("import sys; from mdeploy.passes.simplify import Simplify; from mdeploy.passes.backends import open_artifact;"
            "from mdeploy.passes.core.pipeline import Context, run_pass;"
            f"run_pass(Simplify(), open_artifact({str(tiny_dynamic_onnx)!r}), Context(out_dir={str(tmp_path)!r}), []);"
            "print('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
