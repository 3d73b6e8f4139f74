"""`mdeploy convert` and `mdeploy inspect` through the real entry point."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest


def test_convert_json_and_refuses_overwrite(mdeploy, digits_model, tmp_path):
    out = tmp_path / "out"
    before = digits_model.read_bytes()
    r = mdeploy("convert", digits_model, "--to", "onnx,tflite", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)  # stdout holds only JSON
    assert {a["name"] for a in report["artifacts"]} == {"onnx", "tflite"}
    assert json.loads((out / "report.json").read_text())["artifacts"] == report["artifacts"]
    again = mdeploy("convert", digits_model, "--to", "onnx", "-o", out)
    assert again.exit_code == 2 and "already exists" in again.stderr and "--force" in again.stderr
    forced = mdeploy("convert", digits_model, "--to", "onnx", "-o", out, "--force")
    assert forced.exit_code == 0
    assert digits_model.read_bytes() == before  # the input is untouched
    assert not [p for p in out.rglob("*") if ".partial" in p.name]


def test_convert_with_data_uses_it(mdeploy, digits_model, digits_validation, tmp_path):
    r = mdeploy("convert", digits_model, "--to", "onnx", "-o", tmp_path / "o", "--data", digits_validation, "--json")
    assert r.exit_code == 0, r.stderr
    checks = json.loads(r.stdout)["artifacts"][0]["checks"]
    assert checks["inputs"].startswith("digits_validation.npz") and checks["samples"] == 8


def test_parity_failure_is_exit_1(mdeploy, digits_model, tmp_path):
    # A tolerance no float conversion can meet: the failure must show, not hide.
    r = mdeploy("convert", digits_model, "--to", "onnx", "-o", tmp_path / "o", "--tolerance", "0")
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    if report["artifacts"][0]["checks"]["max_abs_error"] == 0:
        pytest.skip("the conversion happened to be bit-exact")
    assert r.exit_code == 1 and "parity check failed for onnx" in r.stderr
    assert report["ok"] is False and report["artifacts"][0]["checks"]["passed"] is False


@pytest.fixture(scope="module")
def custom_signature_tflite(tmp_path_factory):
    """A .tflite made directly with the TFLite converter, with a custom signature name and keys."""
    import tensorflow as tf

    class Scaler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="reading")])
        def calibrate(self, reading):
            return {"scaled": reading * 2.0 + 1.0}

    m = Scaler()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.calibrate.get_concrete_function()], m)
    path = tmp_path_factory.mktemp("sig") / "custom.tflite"
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def h5_model(tmp_path_factory):
    import keras

    model = keras.Sequential([keras.Input((5,), name="x"), keras.layers.Dense(3, name="out")])
    path = tmp_path_factory.mktemp("h5") / "legacy.h5"
    model.save(path)
    return path


@pytest.mark.parametrize("kind", ["keras", "h5", "savedmodel", "onnx", "tflite", "custom_tflite"])
def test_inspect_each_kind(mdeploy, kind, digits_model, digits_converted, h5_model, custom_signature_tflite):
    path = {"keras": digits_model, "h5": h5_model, "savedmodel": digits_converted / "savedmodel" / "digits",
            "onnx": digits_converted / "onnx" / "model.onnx", "tflite": digits_converted / "tflite" / "model.tflite",
            "custom_tflite": custom_signature_tflite}[kind]
    r = mdeploy("inspect", path, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["size_bytes"] > 0 and info["op_count"] > 0 and info["top_ops"]
    if kind == "custom_tflite":
        assert info["inputs"] == [{"name": "reading", "shape": [None, 3], "dtype": "float32"}]
        assert info["outputs"][0]["name"] == "scaled"
        assert info["signatures"] == ["serving_default"] or info["signatures"]
    elif kind == "h5":
        assert info["format"] == "keras" and info["parameters"] == 18
    else:
        assert info["inputs"][0]["shape"] == [None, 8, 8, 1]
        assert info["parameters"] == 38282
    if kind == "onnx":
        assert info["opset"] == 17 and any(o["op"] == "Conv" for o in info["top_ops"])
    if kind == "tflite":
        assert {"CONV_2D", "FULLY_CONNECTED"} <= {o["op"] for o in info["top_ops"]}


def test_inspect_table_shows_dynamic_dims(mdeploy, digits_converted):
    r = mdeploy("inspect", digits_converted / "onnx" / "model.onnx")
    assert r.exit_code == 0 and "[?, 8, 8, 1]" in r.stdout and "opset 17" in r.stdout


def test_inspect_onnx_imports_no_tensorflow(digits_converted):
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    code = "from mdeploy.cli import run; import sys; sys.exit(run(['inspect', sys.argv[1], '--json']))"
    proc = subprocess.run([sys.executable, "-c", code, str(digits_converted / "onnx" / "model.onnx")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "onnx" in imported and "numpy" in imported  # the profile really was recorded
    assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in imported)


def test_help_imports_no_tensorflow():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mdeploy.cli", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "convert" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "mdeploy.cli" in imported  # the profile really was recorded
    # the package itself, not mdeploy's own passes/backends/tensorflow.py module that imports it lazily
    assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in imported)
    assert not {"numpy", "onnxruntime"} & imported  # every command's --help too: tests/cli/test_startup.py


def _bad_inputs(tmp_path, digits_converted):
    (tmp_path / "notsm").mkdir()
    (tmp_path / "empty.onnx").write_bytes(b"")
    good = (digits_converted / "onnx" / "model.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(good[: len(good) // 3])
    (tmp_path / "noise.tflite").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "text.keras").write_text("definitely not a model\n")
    return {"missing": tmp_path / "nope.keras", "not a savedmodel": tmp_path / "notsm", "empty": tmp_path / "empty.onnx",
            "truncated onnx": tmp_path / "truncated.onnx", "random tflite": tmp_path / "noise.tflite",
            "text keras": tmp_path / "text.keras"}


@pytest.mark.parametrize("case", ["missing", "not a savedmodel", "empty", "truncated onnx", "random tflite", "text keras"])
@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_bad_inputs_exit_2_with_error_and_hint(mdeploy, tmp_path, digits_converted, case, command):
    path = _bad_inputs(tmp_path, digits_converted)[case]
    args = [command, path] + (["-o", tmp_path / "out"] if command == "convert" else [])
    r = mdeploy(*args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.stderr
    assert [ln.split(":")[0] for ln in lines] == ["error", "hint"], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "out").exists()


def test_debug_shows_traceback(mdeploy, tmp_path):
    r = mdeploy("inspect", tmp_path / "missing.onnx", "--debug")
    assert r.exit_code == 2 and "Traceback" in r.stderr and "error:" in r.stderr


def test_unknown_flag_and_target(mdeploy, digits_model, tmp_path):
    r = mdeploy("convert", digits_model, "--bogus")
    assert r.exit_code == 2 and r.stderr.startswith("error:") and "hint:" in r.stderr
    r = mdeploy("convert", digits_model, "--to", "coreml", "-o", tmp_path)
    assert r.exit_code == 2 and "coreml" in r.stderr


def test_version(mdeploy):
    r = mdeploy("--version")
    assert r.exit_code == 0 and r.stdout.startswith("mdeploy ")


def test_no_arguments_shows_the_help_not_an_error(mdeploy):
    """`mdeploy` alone asks what the tool does: the same help as --help, on stdout, exit 0."""
    r = mdeploy()
    assert r.exit_code == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("Usage: mdeploy") and "convert" in r.stdout and "quantize" in r.stdout
    assert r.stdout.strip() == mdeploy("--help").stdout.strip()


@pytest.mark.slow
def test_mobilenet_converts_to_all_three_with_parity(mdeploy, mobilenet_model, tmp_path):
    r = mdeploy("convert", mobilenet_model, "--to", "savedmodel,onnx,tflite", "-o", tmp_path / "mnv2", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert {a["name"] for a in report["artifacts"]} == {"savedmodel", "onnx", "tflite"}
    for a in report["artifacts"]:
        assert a["checks"]["passed"], a["checks"]
        assert a["size_bytes"] > 10_000_000  # 3.5M float32 parameters are really there
        assert a["inputs"][0]["shape"] == [None, 224, 224, 3]


def test_quiet_by_default_and_verbose_lets_tensorflow_speak(digits_model, digits_calibration, tmp_path):
    """Through the installed entry point: TensorFlow's, LiteRT's and the converters' native noise stays hidden."""
    def run(*extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ABSL", "GLOG"))}
        return subprocess.run([sys.executable, "-m", "mdeploy.cli", "quantize", str(digits_model), "--to", "tflite",
                               "--mode", "int8", "--calibration", str(digits_calibration), *extra],
                              capture_output=True, text=True, env=env, timeout=300)

    quiet = run("-o", str(tmp_path / "q"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == "", quiet.stderr
    loud = run("-o", str(tmp_path / "v"), "--verbose")
    assert loud.returncode == 0 and loud.stderr.strip() != ""


@pytest.fixture(scope="module")
def unsupported_op_savedmodel(tmp_path_factory):
    """A SavedModel using Igamma, which neither tf2onnx nor TFLite can convert."""
    import tensorflow as tf

    class Gamma(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.math.igamma(x + 1.0, x + 2.0)}

    m = Gamma()
    path = tmp_path_factory.mktemp("unsupported") / "igamma"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_unsupported_op_is_named_exit_3(mdeploy, unsupported_op_savedmodel, tmp_path, target):
    out = tmp_path / "out"
    r = mdeploy("convert", unsupported_op_savedmodel, "--to", target, "-o", out)
    assert r.exit_code == 3, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert [ln.split(":")[0] for ln in lines] == ["error", "hint"] and "Igamma" in lines[0]
    # nothing half-written left behind: the only file is the report, which records the failed target and no artifact
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["artifacts"] == [] and [s["status"] for s in report["steps"]] == ["failed"]
    from mdeploy.passes.report.model import Report

    verdict = Report.load(out).verdict  # what `mdeploy report` and report.md say agrees with the exit code
    assert not verdict.ok and verdict.exit_code == 3
