"""`mdeploy quantize` through the real entry point: the digits acceptance figures, report.json, and every bad-data case."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from mdeploy.passes.backends import load_runner


def report_of(out):
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("fixture,fmt", [("digits_onnx_quantized", "onnx"), ("digits_tflite_quantized", "tflite")])
def test_digits_acceptance_every_mode(request, fixture, fmt):
    out = request.getfixturevalue(fixture)
    report = report_of(out)
    by_name = {a["name"]: a for a in report["artifacts"]}
    assert by_name[fmt]["precision"] == "float32"  # the float parent, converted first
    for mode, precision in (("int8", "int8"), ("dynamic", "dynamic-int8"), ("fp16", "float16")):
        a = by_name[f"{fmt}-{mode}"]
        q = a["quality"]
        assert a["precision"] == precision and (out / a["path"]).is_file()
        assert set(q) >= {"size_ratio", "top1_agreement", "max_abs_error", "mean_abs_error", "sqnr_db", "accuracy",
                          "parent_accuracy", "accuracy_drop", "samples", "data"}
        assert q["data"] == "digits_validation.npz" and q["samples"] == 300
        assert q["accuracy_drop"] <= 0.005 and q["top1_agreement"] >= 0.99
        assert q["size_ratio"] <= (0.30 if mode != "fp16" else 0.55)
        runner = load_runner(a["format"], out / a["path"])
        assert next(iter(runner({"image": np.zeros((2, 8, 8, 1), np.float32)}).values())).shape == (2, 10)
    int8 = by_name[f"{fmt}-int8"]
    assert int8["calibration"]["samples"] == 200 and int8["path"] == f"{fmt}/model.int8.{fmt}"
    assert [s["pass"] for s in report["steps"]].count(f"quantize.{fmt}") == 3


def test_json_output_held_out_split_and_no_overwrite(mdeploy, digits_converted, digits_calibration, tmp_path):
    model = digits_converted / "onnx" / "model.onnx"
    out = tmp_path / "q"
    r = mdeploy("quantize", model, "--to", "onnx", "--mode", "int8", "--calibration", digits_calibration,
                "--samples", "500", "--method", "percentile", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)  # stdout carries the JSON and nothing else
    a = next(x for x in data["artifacts"] if x["name"] == "onnx-int8")
    assert a["quality"]["data"] == "digits_calibration.npz[240:300]" and a["quality"]["samples"] == 60
    assert a["calibration"] == {"data": str(digits_calibration), "samples": 240, "method": "percentile"}
    assert any("fewer than --samples 500" in w for w in data["warnings"])
    again = mdeploy("quantize", model, "--to", "onnx", "--mode", "int8", "--calibration", digits_calibration, "-o", out)
    assert again.exit_code == 2 and "already exists" in again.stderr and "--force" in again.stderr
    forced = mdeploy("quantize", model, "--to", "onnx", "--mode", "int8", "--calibration", digits_calibration, "-o", out,
                     "--force", "--format", "qoperator", "--exclude", "Softmax")
    assert forced.exit_code == 0 and "onnx-int8" in forced.stdout


def test_random_calibration_warns_accuracy_not_validated(mdeploy, digits_converted, tmp_path):
    r = mdeploy("quantize", digits_converted / "onnx" / "model.onnx", "--to", "onnx", "--calibration", "random",
                "--samples", "16", "-o", tmp_path / "r")
    assert r.exit_code == 0
    assert "accuracy was not validated" in r.stderr
    report = report_of(tmp_path / "r")
    assert any("accuracy was not validated" in w for w in report["warnings"])
    assert report["artifacts"][-1]["quality"]["accuracy"] is None


def _bad_data(kind, tmp_path):
    path = tmp_path / f"{kind}.npz"
    x = np.random.default_rng(0).random((20, 8, 8, 1), dtype=np.float32)
    if kind == "shape":
        np.savez(path, image=x[..., 0])
    elif kind == "dtype":
        np.savez(path, image=np.full((20, 8, 8, 1), "a"))
    elif kind == "nan":
        x[13, 2, 2, 0] = np.nan
        np.savez(path, image=x)
    elif kind == "empty":
        np.savez(path, image=x[:0])
    elif kind == "pickled":
        np.savez(path, image=np.array([object()] * 2, dtype=object))
    elif kind == "raw-pickle":
        path.write_bytes(pickle.dumps({"image": x}))
    return path


@pytest.mark.parametrize("kind,message", [
    ("shape", "input 'image' expects shape [?, 8, 8, 1] but the data has [20, 8, 8]"),
    ("dtype", "input 'image' expects float32 but the data is"),
    ("nan", "input 'image' contains NaN or Inf"),
    ("empty", "no samples"),
    ("pickled", "pickled"),
    ("raw-pickle", "not a .npz archive"),
])
@pytest.mark.parametrize("to", ["onnx", "tflite"])
def test_bad_data_exits_2_with_one_error_and_hint_and_no_artifact(mdeploy, digits_model, tmp_path, kind, message, to):
    data = _bad_data(kind, tmp_path)
    out = tmp_path / "out"
    r = mdeploy("quantize", digits_model, "--to", to, "--mode", "int8", "--calibration", data, "-o", out)
    assert r.exit_code == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], r.stderr
    assert message in lines[0] and "Traceback" not in r.stderr
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_bad_validation_data_and_flags(mdeploy, digits_model, digits_calibration, tmp_path):
    nan = _bad_data("nan", tmp_path)
    r = mdeploy("quantize", digits_model, "--to", "onnx", "--calibration", digits_calibration, "--validation", nan, "-o", tmp_path / "o")
    assert r.exit_code == 2 and "NaN" in r.stderr and not (tmp_path / "o").exists()
    r = mdeploy("quantize", digits_model, "--to", "onnx", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "needs calibration data" in r.stderr
    r = mdeploy("quantize", digits_model, "--to", "tflite", "--mode", "fp16", "--io", "int8", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "--io int8 needs --mode int8" in r.stderr
    r = mdeploy("quantize", digits_model, "--to", "coreml", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "quantization targets are onnx, tflite" in r.stderr


@pytest.mark.slow
def test_mobilenet_random_calibration_int8_onnx_and_tflite(mdeploy, mobilenet_model, tmp_path):
    out = tmp_path / "mnv2"
    for to in ("onnx", "tflite"):
        r = mdeploy("quantize", mobilenet_model, "--to", to, "--mode", "int8", "--calibration", "random",
                    "--samples", "8", "-o", out, "--json")
        assert r.exit_code == 0, r.stderr
    report = report_of(out)
    for name in ("onnx-int8", "tflite-int8"):
        a = next(x for x in report["artifacts"] if x["name"] == name)
        assert a["quality"]["size_ratio"] <= 0.35
        runner = load_runner(a["format"], out / a["path"])
        y = next(iter(runner({"image": np.zeros((1, 224, 224, 3), np.float32)}).values()))
        assert y.shape == (1, 1000) and np.all(np.isfinite(y))
    assert any("accuracy was not validated" in w for w in report["warnings"])
