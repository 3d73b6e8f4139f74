"""`mdeploy validate` through the real entry point: the gate's exit codes, report.json, --json, bad input."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "passes"))
from _validate_models import corrupt_largest_kernel, wrong_head  # noqa: E402

HAS_QUANTIZE = importlib.util.find_spec("mdeploy.cli.quantize") is not None


@pytest.fixture
def outdir(tmp_path, digits_converted) -> Path:
    out = tmp_path / "out"
    shutil.copytree(digits_converted, out)
    return out


def floats(out: Path) -> list[Path]:
    return [out / "savedmodel" / "digits", out / "onnx" / "model.onnx", out / "tflite" / "model.tflite"]


def test_float_artifacts_pass_and_land_in_the_report(mdeploy, outdir, digits_model, digits_validation):
    r = mdeploy("validate", digits_model, *floats(outdir), "--data", digits_validation, "-o", outdir)
    assert r.exit_code == 0, r.stderr
    assert "thresholds: task defaults" in r.stdout
    report = json.loads((outdir / "report.json").read_text())
    # no bound given: each output takes its task's default, recorded per artifact
    assert report["validation_thresholds"] == {"max_accuracy_drop": None, "min_agreement": None,
                                               "max_abs_error": None, "min_sqnr": None, "max_rel_error": None}
    assert all(a["validation"]["gates"]["probs"]["metrics"] == {"accuracy_drop": 0.01} for a in report["artifacts"]
               if "validation" in a)
    assert report["validation"]["passed"] and report["validation"]["samples"] == 300
    assert report["source_metrics"]["accuracy"] > 0.9
    for a in report["artifacts"]:
        v = a["validation"]
        assert v["passed"] and v["reference"] == "source" and v["top1_agreement"] == 1.0
        assert abs(v["accuracy_drop"]) <= 0.01
    assert report["artifacts"][0]["name"] == "savedmodel"  # the TF Serving root was matched to its record


def test_json_puts_only_json_on_stdout(mdeploy, digits_converted, digits_validation):
    r = mdeploy("validate", digits_converted / "onnx" / "model.onnx", digits_converted / "tflite" / "model.tflite",
                "--data", digits_validation, "--json", "--limit", "50")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["passed"] and d["samples"] == 50 and d["candidates"][0]["format"] == "tflite"
    assert d["candidates"][0]["outputs"]["probs"]["cosine_similarity"] > 0.9999


def test_a_corrupted_kernel_exits_1_naming_the_metric(mdeploy, tmp_path, digits_converted, digits_validation):
    onnx_path = digits_converted / "onnx" / "model.onnx"
    broken = tmp_path / "broken.onnx"
    corrupt_largest_kernel(onnx_path, broken)
    r = mdeploy("validate", onnx_path, digits_converted / "tflite" / "model.tflite", broken, "--data", digits_validation,
                "--min-agreement", "0.99")
    assert r.exit_code == 1
    assert "error: validation failed" in r.stderr
    line = next(x for x in r.stderr.replace("\n", " ").split("; ") if "top1_agreement" in x)
    assert str(broken) in line and "< min 0.99" in line
    assert "tflite" not in r.stderr.split("hint:")[0].replace(str(broken), "")  # the healthy candidate is not blamed


def test_data_that_does_not_match_the_model_exits_2(mdeploy, tmp_path, digits_converted):
    data = tmp_path / "wrong.npz"
    np.savez(data, image=np.zeros((4, 8, 8, 3), np.float32))
    r = mdeploy("validate", digits_converted / "onnx" / "model.onnx", digits_converted / "tflite" / "model.tflite",
                "--data", data)
    assert r.exit_code == 2
    assert "expects shape [?, 8, 8, 1] but the data has [4, 8, 8, 3]" in r.stderr and "hint:" in r.stderr


def test_different_output_shapes_exit_2(mdeploy, tmp_path, digits_converted, digits_validation):
    other = tmp_path / "five.onnx"
    wrong_head(other, classes=5)
    r = mdeploy("validate", digits_converted / "onnx" / "model.onnx", other, "--data", digits_validation)
    assert r.exit_code == 2
    assert "'probs'" in r.stderr and ", 5]" in r.stderr and ", 10]" in r.stderr


def test_outdir_without_report_exits_2(mdeploy, tmp_path, digits_converted, digits_validation):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = mdeploy("validate", digits_converted / "onnx" / "model.onnx", digits_converted / "tflite" / "model.tflite",
                "--data", digits_validation, "-o", empty)
    assert r.exit_code == 2 and "has no report.json" in r.stderr
    assert not (empty / "report.json").exists()


@pytest.mark.skipif(not HAS_QUANTIZE, reason="`mdeploy quantize` (cli/quantize.py) is not in this tree yet")
def test_int8_artifacts_report_their_drop(mdeploy, outdir, digits_model, digits_calibration, digits_validation):
    for target in ("onnx", "tflite"):
        q = mdeploy("quantize", digits_model, "--to", target, "--mode", "int8", "--calibration", digits_calibration,
                    "--validation", digits_validation, "-o", outdir)
        assert q.exit_code == 0, q.stderr
    int8 = [outdir / "onnx" / "model.int8.onnx", outdir / "tflite" / "model.int8.tflite"]
    assert all(p.is_file() for p in int8)
    r = mdeploy("validate", digits_model, *floats(outdir), *int8, "--data", digits_validation, "-o", outdir,
                "--max-accuracy-drop", "0.05", "--min-agreement", "0.95")
    assert r.exit_code == 0, r.stderr
    report = json.loads((outdir / "report.json").read_text())
    by_precision = {}
    for a in report["artifacts"]:
        by_precision.setdefault(a["precision"], []).append(a["validation"])
    assert len(by_precision["int8"]) == 2
    for v in by_precision["int8"]:
        # int8 may gain or lose a few images depending on the runtime's kernels: the budget is what holds.
        assert v["accuracy_drop"] is not None and abs(v["accuracy_drop"]) <= 0.05
        assert v["sqnr_db"] < 100  # quantization noise is visible, unlike the float artifacts'
    assert all(v["max_abs_error"] < 1e-4 for v in by_precision["float32"])
    # a gate tighter than int8 can meet fails and names the metric
    strict = mdeploy("validate", digits_model, int8[0], "--data", digits_validation, "--min-sqnr", "80")
    assert strict.exit_code == 1 and "sqnr_db" in strict.stderr and "< min 80" in strict.stderr
