"""`mdeploy quantize --accuracy-budget / --debug-layers` on a model whose plain int8 collapses (tests/benchmarks/outlier_model.py)."""
from __future__ import annotations

import json
import math
import tomllib

import pytest

SAMPLES = "64"  # calibration samples: a third of the default's trial time, the same collapse and the same fix


def _args(d, out, *extra):
    return ["quantize", d / "outlier.keras", "--calibration", d / "outlier_calibration.npz", "--samples", SAMPLES,
            "--validation", d / "outlier_validation.npz", "-o", out, *extra]


def _record(out, name):
    report = json.loads((out / "report.json").read_text())
    return report, next(a for a in report["artifacts"] if a["name"] == name)


@pytest.fixture(scope="module")
def onnx_budget_run(outlier_model, tmp_path_factory):
    from mdeploy.cli import run

    out = tmp_path_factory.mktemp("budget-onnx")
    code = run([str(a) for a in _args(outlier_model, out, "--to", "onnx", "--accuracy-budget", "0.01", "--debug-layers")])
    return code, out


def test_onnx_budget_recovers_the_collapsed_int8_keeping_at_most_a_tenth_in_float(onnx_budget_run):
    code, out = onnx_budget_run
    report, a = _record(out, "onnx-int8")
    s = a["accuracy_search"]
    assert code == 0 and report["verdict"]["ok"]
    baseline = s["trials"][0]
    assert baseline["stage"] == "baseline" and not baseline["passed"] and baseline["accuracy_drop"] > 0.05
    assert {t["stage"] for t in s["trials"][1:s["knob_trials"]]} == {"knob"}  # the cheap knobs, each scored
    assert {(t["method"], t["per_channel"], t["symmetric"]) for t in s["trials"][:s["knob_trials"]]} >= {
        ("minmax", True, False), ("entropy", True, False), ("percentile", True, False), ("minmax", False, False),
        ("minmax", True, True)}
    assert s["met"] and a["quality"]["accuracy_drop"] <= 0.01 and a["quality"]["passed"]
    assert 1 <= s["chosen"]["kept_float"] <= 0.1 * s["layers"]
    assert s["full_evaluations"] <= math.log2(s["layers"]) + s["chosen"]["kept_float"] + 2
    assert s["data"].endswith("outlier_validation.npz") and s["calibration"].endswith("outlier_calibration.npz")
    # the ranking is per node, worst first, and blames the layers writing and reading the outlier channels: alone
    # in int8 either one wrecks the outputs, and the one reading them also has the worst error of its own
    layers = a["layer_errors"]["layers"]
    assert [x["rank"] for x in layers] == list(range(1, len(layers) + 1)) and len(layers) == s["layers"]
    top2 = " ".join(x["node"] for x in layers[:2])
    assert "dense5" in top2 and "dense6" in top2
    assert max(x["alone_sqnr_db"] for x in layers[:2]) < min(x["alone_sqnr_db"] for x in layers[2:]) - 10
    assert min(layers, key=lambda x: x["sqnr_db"])["node"] in top2
    assert set(s["chosen"]["exclude"]) <= {x["node"] for x in layers[:4]}
    assert all(x["weight_sqnr_db"] is None or x["weight_sqnr_db"] > 30 for x in layers)  # int8 weights are fine here
    html = (out / "report.html").read_text()
    assert "layer errors and accuracy search" in html and html.count("<svg") >= 4


def test_the_recipe_file_reproduces_the_chosen_artifact(onnx_budget_run, outlier_model, tmp_path, mdeploy):
    _, out = onnx_budget_run
    _, a = _record(out, "onnx-int8")
    recipe = tomllib.loads((out / a["accuracy_search"]["recipe"]).read_text())
    q = recipe["quantize"]
    assert q["exclude"] == a["accuracy_search"]["chosen"]["exclude"] and recipe["validate"]["max_accuracy_drop"] == 0.01
    assert q["samples"] == int(SAMPLES)
    again = tmp_path / "again"
    flags = ["--to", "onnx", "--method", q["method"], "--exclude", ",".join(q["exclude"]), "--samples", str(q["samples"])]
    flags += [] if q["per_channel"] else ["--per-tensor"]
    flags += ["--symmetric-activations"] if q["symmetric_activations"] else []
    result = mdeploy("quantize", out / "onnx" / "model.onnx", "--calibration", outlier_model / "outlier_calibration.npz",
                     "--validation", outlier_model / "outlier_validation.npz", "-o", again, *flags)
    assert result.exit_code == 0, result.stderr
    _, b = _record(again, "onnx-int8")
    params = ("method", "per_channel", "symmetric_activations", "exclude", "activations")
    assert {k: b["produced_by"]["params"][k] for k in params} == {k: a["produced_by"]["params"][k] for k in params}
    # tf2onnx's float ONNX is not byte-for-byte stable across conversions, so compare what the gate measures
    assert b["quality"]["passed"] and abs(b["quality"]["accuracy"] - a["quality"]["accuracy"]) <= 1 / 300 + 1e-9


@pytest.mark.parametrize("flags,message", [
    (["--mode", "fp16", "--accuracy-budget", "0.01"], "apply to --mode int8"),
    (["--accuracy-budget", "1.5"], "must be a fraction"),
    (["--accuracy-budget", "0.01", "--no-gate"], "needs the gate"),
    (["--mode", "dynamic", "--weight-ops-only"], "--weight-ops-only applies to --mode int8"),
    (["--mode", "fp16", "--method", "entropy", "--symmetric-activations"],
     "--method, --symmetric-activations apply to --mode int8"),
])
def test_bad_budget_flags_are_exit_2(mdeploy, outlier_model, tmp_path, flags, message):
    result = mdeploy(*_args(outlier_model, tmp_path / "o", "--to", "onnx", *flags))
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()  # refused before any work


def test_an_unknown_exclude_name_is_exit_2_naming_it(mdeploy, onnx_budget_run, outlier_model, tmp_path):
    _, out = onnx_budget_run
    result = mdeploy("quantize", out / "onnx" / "model.onnx", "--calibration", outlier_model / "outlier_calibration.npz",
                     "-o", tmp_path / "o", "--exclude", "no-such-node")
    assert result.exit_code == 2 and "no-such-node" in result.stderr and "--debug-layers" in result.stderr


@pytest.mark.slow
def test_tflite_budget_recovers_the_collapsed_int8(mdeploy, outlier_model, tmp_path):
    result = mdeploy(*_args(outlier_model, tmp_path / "t", "--to", "tflite", "--accuracy-budget", "0.01", "--debug-layers"))
    assert result.exit_code == 0, result.stderr
    _, a = _record(tmp_path / "t", "tflite-int8")
    s = a["accuracy_search"]
    assert not s["trials"][0]["passed"] and s["met"] and a["quality"]["accuracy_drop"] <= 0.01
    assert 1 <= s["chosen"]["kept_float"] <= 0.1 * s["layers"]
    layers = a["layer_errors"]["layers"]
    assert all(x["scale_rmse"] is None or x["scale_rmse"] >= 0 for x in layers)
    assert any("dense6" in x["node"] for x in layers[:3])
