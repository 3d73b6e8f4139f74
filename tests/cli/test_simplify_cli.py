"""`mdeploy simplify` through the real entry point: summary, JSON, fallback, --strict, --input-shape, corrupt input."""
from __future__ import annotations

import json

import pytest


def test_simplify_prints_summary_and_writes_report(mdeploy, tiny_dynamic_onnx, tmp_path):
    out = tmp_path / "sim.onnx"
    r = mdeploy("simplify", tiny_dynamic_onnx, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "before" in r.stdout and "nodes" in r.stdout and "simplified:" in r.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    a = report["artifacts"][0]
    assert a["simplify"]["simplified"] and a["inputs"][0]["shape"] == [None, None, 4]
    assert report["steps"][0]["status"] == "ok"
    again = mdeploy("simplify", tiny_dynamic_onnx, "-o", out)
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_json_and_input_shape(mdeploy, tiny_dynamic_onnx, tmp_path):
    r = mdeploy("simplify", tiny_dynamic_onnx, "-o", tmp_path / "p.onnx", "--input-shape", "x:2,7,4", "--json")
    assert r.exit_code == 0
    a = json.loads(r.stdout)["artifacts"][0]
    assert a["inputs"][0]["shape"] == [2, 7, 4]
    bad = mdeploy("simplify", tiny_dynamic_onnx, "-o", tmp_path / "q.onnx", "--input-shape", "x=2")
    assert bad.exit_code == 2 and "NAME:D1,D2" in bad.stderr


def test_input_shape_of_the_wrong_rank_or_fixed_dim_is_exit_2_before_onnxsim(mdeploy, tiny_dynamic_onnx, tmp_path):
    # (the skipped / --strict fallback itself is tested on the pass: tests/passes/test_simplify.py)
    r = mdeploy("simplify", tiny_dynamic_onnx, "-o", tmp_path / "f.onnx", "--input-shape", "x:2,5")
    assert r.exit_code == 2 and "has rank 2" in r.stderr and "hint:" in r.stderr
    fixed = mdeploy("simplify", tiny_dynamic_onnx, "-o", tmp_path / "g.onnx", "--input-shape", "x:2,5,3")
    assert fixed.exit_code == 2 and "fixed dimension 2" in fixed.stderr
    assert not (tmp_path / "f.onnx").exists() and not (tmp_path / "g.onnx").exists()
    kept = mdeploy("simplify", tiny_dynamic_onnx, "-o", tmp_path / "k.onnx", "--input-shape", "x:?,7,4", "--json")
    assert kept.exit_code == 0
    assert json.loads(kept.stdout)["artifacts"][0]["inputs"][0]["shape"] == [None, 7, 4]


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage-not-onnx" * 10])
def test_corrupt_input_is_exit_2_never_simplified(mdeploy, tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    r = mdeploy("simplify", bad, "-o", tmp_path / "out.onnx")
    assert r.exit_code == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_data_check_uses_given_data_and_bad_data_is_exit_2(mdeploy, tiny_dynamic_onnx, tmp_path):
    import numpy as np

    np.savez(tmp_path / "ok.npz", x=np.ones((3, 5, 4), np.float32))
    assert mdeploy("simplify", tiny_dynamic_onnx, "-o", tmp_path / "a.onnx", "--data", tmp_path / "ok.npz").exit_code == 0
    np.savez(tmp_path / "bad.npz", x=np.ones((3, 5, 9), np.float32))
    r = mdeploy("simplify", tiny_dynamic_onnx, "-o", tmp_path / "b.onnx", "--data", tmp_path / "bad.npz")
    assert r.exit_code == 2 and "input 'x' expects shape [?, ?, 4]" in r.stderr and not (tmp_path / "b.onnx").exists()


@pytest.mark.slow
def test_mobilenet_simplify_keeps_batch_dynamic(mdeploy, mobilenet_model, tmp_path):
    from mdeploy.passes.workflows.convert import convert

    convert(mobilenet_model, ["onnx"], tmp_path)
    r = mdeploy("simplify", tmp_path / "onnx" / "model.onnx", "-o", tmp_path / "sim.onnx", "--json")
    assert r.exit_code == 0, r.stderr
    a = json.loads(r.stdout)["artifacts"][-1]
    assert a["simplify"]["simplified"] and a["inputs"][0]["shape"][0] is None
    assert a["simplify"]["after"]["nodes"] <= a["simplify"]["before"]["nodes"]
