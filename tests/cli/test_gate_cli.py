"""The gate-case corpus, through the real entry point: each case ends in the right exit code, its `error:` line
names the real cause, and the verdict report.md shows equals the exit code.

Models are built here with onnx.helper (no TensorFlow needed) so that int8 goes wrong in a known way:
- `near_tie.onnx`: a 2-class classifier whose logits differ by ~1e-4, so int8 weight rounding decides the class
  and top-1 agreement falls to about half;
- `two_heads.onnx`: a well-separated regression head beside that near-tie classifier head;
- `linear_regressor.onnx`: y = x.w, calibrated on a range 20x narrower than the data, so int8 clips.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

N_FEATURES = 16


def _onnx_model(path: Path, outputs: dict[str, np.ndarray]) -> Path:
    """x (batch, 16) float32 -> one MatMul per output with the given weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outs = [], [], []
    for name, w in outputs.items():
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}_w"))
        nodes.append(helper.make_node("MatMul", ["x", f"{name}_w"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", w.shape[1]]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", N_FEATURES])],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("gate_corpus")
    w = rng.normal(size=(N_FEATURES, 1))
    tie = np.concatenate([w, w + 1e-4 * rng.normal(size=w.shape)], axis=1)
    x = rng.uniform(-1, 1, size=(200, N_FEATURES)).astype(np.float32)
    files = {
        "near_tie": _onnx_model(d / "near_tie.onnx", {"cls": tie}),
        "two_heads": _onnx_model(d / "two_heads.onnx", {"score": rng.normal(size=(N_FEATURES, 1)), "cls": tie}),
        "regressor": _onnx_model(d / "linear_regressor.onnx", {"y": w}),
        "big": _onnx_model(d / "big.onnx", {"cls": rng.normal(size=(N_FEATURES, 4096))}),  # 256 KB of weights
    }
    np.savez(d / "cal.npz", x=x[:100])
    np.savez(d / "val.npz", x=x[100:])  # no labels
    np.savez(d / "narrow_cal.npz", x=x[:100] / 20)
    np.savez(d / "reg_val.npz", x=x[100:], labels=(x[100:] @ w).astype(np.float32) + 0.01)
    np.savez(d / "string_labels.npz", x=x[100:], labels=np.array(["cat", "dog"] * 50))
    np.savez(d / "range_labels.npz", x=x[100:], labels=np.array([0, 1, 7] + [1] * 97))
    np.savez(d / "onehot_labels.npz", x=x[100:], labels=np.eye(2, dtype=np.float32)[np.arange(100) % 2])
    files.update({k: d / f"{k}.npz" for k in ("cal", "val", "narrow_cal", "reg_val", "string_labels", "range_labels",
                                              "onehot_labels")})
    return files


def md_verdict(out: Path) -> int | None:
    """The exit code report.md states, or None when there is no report.md."""
    md = out / "report.md"
    if not md.is_file():
        return None
    m = re.search(r"Overall: \*\*(passed|FAILED)\*\* \(exit (\d)\)", md.read_text())
    assert m, md.read_text()
    assert (m.group(1) == "passed") == (m.group(2) == "0")
    return int(m.group(2))


def report_md(mdeploy, out: Path) -> int:
    """Render OUTDIR's report as Markdown with `mdeploy report` (quantize writes report.json only)."""
    r = mdeploy("report", out, "--format", "markdown", "-o", out / "report.md", "--force")
    assert r.exit_code == 0, r.stderr
    return md_verdict(out)


def error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


# --------------------------------------------------------------------------- measured failures: exit 1

def test_unlabelled_classifier_at_half_agreement_is_rejected(mdeploy, corpus, tmp_path):
    out = tmp_path / "q"
    r = mdeploy("quantize", corpus["near_tie"], "--to", "onnx", "--calibration", corpus["cal"],
                "--validation", corpus["val"], "-o", out)
    assert r.exit_code == 1, r.stderr
    assert "top1_agreement" in error_line(r.stderr) and "classifier without labels" in r.stderr
    assert report_md(mdeploy, out) == 1
    import json

    q = json.loads((out / "report.json").read_text())["artifacts"][-1]["quality"]
    assert q["top1_agreement"] < 0.9 and q["passed"] is False
    # --no-gate measures the same and does not fail
    r = mdeploy("quantize", corpus["near_tie"], "--to", "onnx", "--calibration", corpus["cal"],
                "--validation", corpus["val"], "-o", tmp_path / "q2", "--no-gate")
    assert r.exit_code == 0, r.stderr


def test_optimize_keeps_the_passing_float_artifact_and_names_the_rejected_int8(mdeploy, corpus, tmp_path):
    out = tmp_path / "o"
    # an ONNX source defaults to target cloud: no edge artifact is demanded
    r = mdeploy("optimize", corpus["near_tie"], "--calibration", corpus["cal"], "--validation", corpus["val"],
                "--no-bench", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert md_verdict(out) == 0
    md = (out / "report.md").read_text()
    assert re.search(r"onnx-int8 \|.*rejected \(top1_agreement = [0-9.]+ < min 0\.99\)", md), md


def test_optimize_fails_when_every_artifact_of_a_target_is_rejected(mdeploy, digits_model, digits_calibration,
                                                                    digits_validation, tmp_path):
    # a converted float TFLite model is close to its Keras source, but not 1000 dB close
    out = tmp_path / "o"
    r = mdeploy("optimize", digits_model, "--target", "edge", "--calibration", digits_calibration,
                "--validation", digits_validation, "--no-bench", "--min-sqnr", "1000", "-o", out)
    assert r.exit_code == 1, r.stderr
    line = error_line(r.stderr)
    assert "no edge artifact passed the gate" in line and "sqnr_db" in line and "accuracy" not in line
    assert "--min-sqnr" in r.stderr and md_verdict(out) == 1


def test_regressor_with_a_clipping_int8_is_rejected_on_its_error_increase(mdeploy, corpus, tmp_path):
    out = tmp_path / "q"
    r = mdeploy("quantize", corpus["regressor"], "--to", "onnx", "--calibration", corpus["narrow_cal"],
                "--validation", corpus["reg_val"], "-o", out)
    assert r.exit_code == 1, r.stderr
    assert re.search(r"(mse|mae)_increase = [0-9.e+]+ > max 0\.05", error_line(r.stderr)), r.stderr
    assert "regression with labels" in r.stderr
    assert report_md(mdeploy, out) == 1


def test_multi_output_model_names_its_bad_head(mdeploy, corpus, tmp_path):
    out = tmp_path / "q"
    r = mdeploy("quantize", corpus["two_heads"], "--to", "onnx", "--calibration", corpus["cal"],
                "--validation", corpus["val"], "-o", out)
    assert r.exit_code == 1, r.stderr
    line = error_line(r.stderr)
    assert "top1_agreement [cls]" in line and "[score]" not in line
    assert report_md(mdeploy, out) == 1


def test_strict_fails_a_run_nothing_could_gate(mdeploy, corpus, tmp_path):
    out = tmp_path / "o"
    r = mdeploy("optimize", corpus["regressor"], "--calibration", "random", "--no-bench", "--strict", "-o", out)
    assert r.exit_code == 1, r.stderr
    assert "nothing could be gated" in error_line(r.stderr) and md_verdict(out) == 1
    r = mdeploy("optimize", corpus["regressor"], "--calibration", "random", "--no-bench", "-o", tmp_path / "loud")
    assert r.exit_code == 0 and "NOTHING GATED" in r.stderr


# --------------------------------------------------------------------------- the user's input or environment: exit 2

@pytest.mark.parametrize("labels, cause", [("string_labels", r"labels are strings \(first: 'cat'\)"),
                                           ("range_labels", r"label 7 \(sample 2\) is outside 0\.\.1")])
def test_labels_that_cannot_be_right_are_bad_input(mdeploy, corpus, tmp_path, labels, cause):
    r = mdeploy("validate", corpus["near_tie"], corpus["near_tie"], "--data", corpus[labels])
    assert r.exit_code == 2, r.stderr
    line = error_line(r.stderr)
    assert re.search(cause, line) and Path(corpus[labels]).name in line
    out = tmp_path / "o"
    r = mdeploy("optimize", corpus["near_tie"], "--calibration", corpus["cal"], "--validation", corpus[labels],
                "--no-bench", "-o", out)
    assert r.exit_code == 2 and re.search(cause, error_line(r.stderr)) and md_verdict(out) is None


def test_one_hot_labels_are_accepted(mdeploy, corpus):
    r = mdeploy("validate", corpus["near_tie"], corpus["near_tie"], "--data", corpus["onehot_labels"])
    assert r.exit_code == 0, r.stderr
    assert "classification with labels" in r.stdout


def test_missing_calibration_is_bad_input_inside_optimize(mdeploy, corpus, tmp_path):
    out = tmp_path / "o"
    r = mdeploy("optimize", corpus["near_tie"], "--calibration", tmp_path / "nonexist.npz", "--no-bench", "-o", out)
    assert r.exit_code == 2, r.stderr
    assert "nonexist.npz" in error_line(r.stderr) and "gate" not in r.stderr
    assert md_verdict(out) is None


def test_existing_output_is_bad_input_and_leaves_the_last_report(mdeploy, corpus, tmp_path):
    # A file this OUTDIR's report lists is mdeploy's own and a re-run may replace it (issue 13: a re-run with
    # --no-cache keeps the report); a file the report does not list is the user's, and is never overwritten.
    out = tmp_path / "o"
    float_only = tmp_path / "float_only.toml"
    float_only.write_text("[quantize]\nonnx = []\n")
    args = ("optimize", corpus["near_tie"], "--calibration", corpus["cal"], "--validation", corpus["val"],
            "--no-bench", "--no-cache", "-o", out)
    assert mdeploy(*args, "--recipe", float_only).exit_code == 0
    (out / "onnx" / "model.int8.onnx").write_bytes(b"the user's own file")
    before = (out / "report.md").stat().st_mtime_ns
    r = mdeploy(*args)
    assert r.exit_code == 2, r.stderr
    assert "exists" in error_line(r.stderr) and "--force" in r.stderr and "gate" not in r.stderr
    assert (out / "report.md").stat().st_mtime_ns == before and md_verdict(out) == 0  # the last run's, untouched
    assert (out / "onnx" / "model.int8.onnx").read_bytes() == b"the user's own file"


def test_outdir_that_is_a_file_is_bad_input(mdeploy, corpus, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        r = mdeploy("optimize", corpus["near_tie"], "--calibration", corpus["cal"], "--no-bench", "-o", out)
        assert r.exit_code == 2, r.stderr
        line = error_line(r.stderr)
        assert str(blocker) in line and "opset" not in r.stderr


@contextlib.contextmanager
def _mounted(args: list[str], where: Path):
    where.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", *args, str(where)], capture_output=True).returncode != 0:
        pytest.skip("needs mount (root): root ignores file permissions, so only a mount makes a directory unwritable")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


def test_read_only_outdir_is_bad_input(mdeploy, corpus, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    with _mounted(["--bind", "-o", "ro", str(base)], tmp_path / "ro") as ro:
        r = mdeploy("optimize", corpus["near_tie"], "--calibration", corpus["cal"], "--no-bench", "-o", ro / "out")
    assert r.exit_code == 2, r.stderr
    assert "Read-only file system" in error_line(r.stderr) and "writable" in r.stderr and "opset" not in r.stderr


def test_full_disk_is_bad_input(mdeploy, corpus, tmp_path):
    with _mounted(["-t", "tmpfs", "-o", "size=48k", "tmpfs"], tmp_path / "full") as full:
        r = mdeploy("optimize", corpus["big"], "--calibration", corpus["cal"], "--no-bench", "--no-cache",
                    "-o", full / "out")
        assert r.exit_code == 2, r.stderr
        assert "No space left on device" in error_line(r.stderr) and "space" in r.stderr.split("hint:")[1]


# --------------------------------------------------------------------------- a pass that fails on good input: exit 3

def test_failed_pass_is_exit_3_naming_the_op(mdeploy, tmp_path):
    """CategoryEncoding lowers to tf.DenseBincount, which TFLite has no builtin for: the edge branch cannot succeed."""
    import keras

    ids = keras.Input((4,), dtype="int32", name="ids")
    model = keras.Model(ids, keras.layers.Dense(2, name="out")(keras.layers.CategoryEncoding(8, output_mode="count")(ids)))
    model.save(tmp_path / "bincount.keras")
    np.savez(tmp_path / "cal.npz", ids=np.random.default_rng(0).integers(0, 8, size=(20, 4)).astype(np.int32))
    out = tmp_path / "o"
    r = mdeploy("optimize", tmp_path / "bincount.keras", "--target", "edge", "--calibration", tmp_path / "cal.npz",
                "--no-bench", "-o", out)
    assert r.exit_code == 3, r.stderr
    line = error_line(r.stderr)
    assert "DenseBincount" in line and "gate" not in line and "opset" not in r.stderr
    assert md_verdict(out) == 3


def test_zoo_manifest_passes_every_gate_key_to_optimize(tmp_path):
    from mdeploy.passes.workflows.zoo_manifest import load_manifest

    manifest = tmp_path / "zoo.toml"
    manifest.write_text('[defaults]\nmin_sqnr = 25.0\nstrict = true\n\n[[model]]\npath = "a.onnx"\nmax_rel_error = 0.02\n'
                        'max_accuracy_drop = 0.005\nmin_agreement = 0.98\nmax_abs_error = 0.5\n')
    (model,) = load_manifest(manifest).models
    args = model.optimize_args(tmp_path / "out")
    for flag, value in (("--min-sqnr", "25.0"), ("--max-rel-error", "0.02"), ("--max-accuracy-drop", "0.005"),
                        ("--min-agreement", "0.98"), ("--max-abs-error", "0.5")):
        assert args[args.index(flag) + 1] == value
    assert "--strict" in args
