"""`mdeploy prune` through the real entry point: the report's numbers, files written, bad input, and composition
with `mdeploy quantize` and `mdeploy validate`."""
from __future__ import annotations

import json

import numpy as np
import pytest


def _bad(result, *needles):
    assert result.exit_code == 2, result.stderr
    assert "error:" in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for n in needles:
        assert n in result.stderr, result.stderr


def test_prune_50_json_report(mdeploy, tmp_path, digits_model, digits_validation):
    out = tmp_path / "out"
    r = mdeploy("prune", digits_model, "--sparsity", "0.5", "-o", out, "--data", digits_validation, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)  # stdout is only JSON
    record = data["artifacts"][-1]
    assert record["name"] == "pruned-keras" and record["path"] == "keras/model.pruned.keras"
    p = record["pruning"]
    assert p["target_sparsity"] == 0.5 and abs(p["achieved_sparsity"] - 0.5) <= 0.01
    assert record["sparsity"] == p["achieved_sparsity"] and record["precision"] == "float32"
    assert p["scope"] == "layer" and p["pattern"] is None
    assert {layer["name"] for layer in p["layers"]} == {"conv1", "conv2", "dense1", "probs"}
    assert all({"name", "target", "achieved", "params"} <= set(layer) for layer in p["layers"])
    assert p["params"] == 38282 and 0 < p["zeros"] < p["params"]
    assert p["size_bytes_after"] == p["size_bytes_before"]  # a dense file does not shrink ...
    assert p["gzip_bytes_after"] < 0.8 * p["gzip_bytes_before"]  # ... but it compresses
    assert "only after compression" in p["note"]
    assert p["accuracy_after"] >= p["accuracy_before"] - 0.02
    assert (out / "keras" / "model.pruned.keras").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["artifacts"][-1]["pruning"]["achieved_sparsity"] == p["achieved_sparsity"]


def test_prune_table_says_zeros_pay_off_after_compression(mdeploy, tmp_path, digits_model):
    r = mdeploy("prune", digits_model, "--sparsity", "0.6", "--scope", "global", "-o", tmp_path)
    assert r.exit_code == 0, r.stderr
    assert "gzip:" in r.stdout and "only after compression" in r.stdout
    assert "dense1" in r.stdout and "60.0%" in r.stdout


def test_prune_80_with_fine_tuning(mdeploy, tmp_path, digits_model, digits_validation, digits_train_npz):
    r = mdeploy("prune", digits_model, "--sparsity", "0.8", "--fine-tune", digits_train_npz, "--epochs", "3",
                "--data", digits_validation, "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    p = json.loads(r.stdout)["artifacts"][-1]["pruning"]
    assert abs(p["achieved_sparsity"] - 0.8) <= 0.01
    assert p["accuracy_after"] >= p["accuracy_before"] - 0.02
    assert p["schedule"]["epochs"] == 3 and p["schedule"]["final_sparsity"] == 0.8
    assert p["gzip_bytes_after"] < 0.5 * p["gzip_bytes_before"]


def test_prune_2_4_pattern(mdeploy, tmp_path, digits_model):
    r = mdeploy("prune", digits_model, "--pattern", "2:4", "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    import keras

    model = keras.saving.load_model(tmp_path / "keras" / "model.pruned.keras", compile=False)
    dense = model.get_layer("dense1").kernel.numpy()
    assert np.all(np.count_nonzero(dense.reshape(-1, 4, 64), axis=1) == 2)  # groups of four along the input axis
    conv = model.get_layer("conv2").kernel.numpy()
    assert np.all(np.count_nonzero(np.moveaxis(conv, 2, -1).reshape(-1, 4), axis=1) == 2)


def test_prune_onnx_export(mdeploy, tmp_path, digits_converted, digits_validation):
    r = mdeploy("prune", digits_converted / "onnx" / "model.onnx", "--sparsity", "0.5", "-o", tmp_path,
                "--data", digits_validation, "--json")
    assert r.exit_code == 0, r.stderr
    record = json.loads(r.stdout)["artifacts"][-1]
    assert record["format"] == "onnx" and record["path"] == "onnx/model.pruned.onnx"
    p = record["pruning"]
    assert abs(p["achieved_sparsity"] - 0.5) <= 0.01
    assert p["accuracy_after"] >= p["accuracy_before"] - 0.02
    assert p["gzip_bytes_after"] < 0.8 * p["gzip_bytes_before"]


@pytest.mark.parametrize("value", ["1.0", "1.5", "-0.1"])
def test_sparsity_outside_range(mdeploy, tmp_path, digits_model, value):
    _bad(mdeploy("prune", digits_model, "--sparsity", value, "-o", tmp_path), "[0, 1)")
    assert not (tmp_path / "keras").exists()


def test_pattern_that_does_not_divide_the_input_dimension(mdeploy, tmp_path, digits_model):
    # conv1 sees one input channel: 1 is not a multiple of 4
    _bad(mdeploy("prune", digits_model, "--pattern", "2:4", "--prune-first-last", "-o", tmp_path),
         "does not divide the input dimension of conv1/kernel", "--exclude 'conv1'")
    assert not (tmp_path / "keras").exists()


def test_exclude_matching_nothing_is_a_warning(mdeploy, tmp_path, digits_model):
    r = mdeploy("prune", digits_model, "--sparsity", "0.5", "--exclude", "no_such_layer*", "--exclude", "dense1",
                "-o", tmp_path, "--json")
    assert r.exit_code == 0
    assert "warning:" in r.stderr and "no_such_layer*" in r.stderr and "conv1, conv2, dense1, probs" in r.stderr
    data = json.loads(r.stdout)
    assert any("no_such_layer*" in w for w in data["warnings"])
    layers = {layer["name"]: layer for layer in data["artifacts"][-1]["pruning"]["layers"]}
    assert not layers["dense1"]["pruned"] and layers["dense1"]["achieved"] == 0.0
    assert layers["conv2"]["pruned"]


@pytest.mark.parametrize("args,needle", [
    ((), "--sparsity"),
    (("--pattern", "2-4"), "N:M"),
    (("--pattern", "2:4", "--sparsity", "0.7"), "fixes the sparsity at 0.5"),
    (("--sparsity", "0.5", "--scope", "model"), "--scope"),
])
def test_bad_flags(mdeploy, tmp_path, digits_model, args, needle):
    _bad(mdeploy("prune", digits_model, *args, "-o", tmp_path), needle)


def test_fine_tune_on_onnx_and_tflite_input_are_refused(mdeploy, tmp_path, digits_converted, digits_train_npz):
    _bad(mdeploy("prune", digits_converted / "onnx" / "model.onnx", "--sparsity", "0.5", "--fine-tune", digits_train_npz,
                 "-o", tmp_path), "one-shot")
    _bad(mdeploy("prune", digits_converted / "tflite" / "model.tflite", "--sparsity", "0.5", "-o", tmp_path), "tflite")


def test_never_overwrites_without_force(mdeploy, tmp_path, digits_model):
    assert mdeploy("prune", digits_model, "--sparsity", "0.3", "-o", tmp_path).exit_code == 0
    before = (tmp_path / "keras" / "model.pruned.keras").read_bytes()
    _bad(mdeploy("prune", digits_model, "--sparsity", "0.6", "-o", tmp_path), "already exists", "--force")
    assert (tmp_path / "keras" / "model.pruned.keras").read_bytes() == before
    r = mdeploy("prune", digits_model, "--sparsity", "0.6", "-o", tmp_path, "--force", "--json")
    assert r.exit_code == 0 and abs(json.loads(r.stdout)["artifacts"][-1]["pruning"]["achieved_sparsity"] - 0.6) <= 0.01


# --------------------------------------------------------------------------- composition

def test_pruned_model_quantized_to_int8_keeps_its_zeros_and_validates(mdeploy, tmp_path, digits_pruned,
                                                                      digits_calibration, digits_validation):
    from mdeploy.passes.prune import sparsity_survival

    pruned = digits_pruned / "keras" / "model.pruned.keras"
    out = tmp_path / "q"
    quantized = {}
    for target in ("onnx", "tflite"):
        r = mdeploy("quantize", pruned, "--to", target, "--mode", "int8", "--calibration", digits_calibration,
                    "-o", out, "--json")
        assert r.exit_code == 0, r.stderr
        record = next(a for a in json.loads(r.stdout)["artifacts"] if a["format"] == target and a["precision"] == "int8")
        quantized[target] = out / record["path"]
        assert record["sparsity_survival"]["survived"] and record["sparsity"] >= 0.48  # quantize reports it too
    for target, path in quantized.items():
        survival = sparsity_survival(pruned, path)
        assert survival["survived"], (target, survival)
        assert survival["sparsity_after"] >= 0.48  # 50% of conv2/dense1, first/last dense: 48.97% of all kernels
    r = mdeploy("validate", pruned, quantized["onnx"], quantized["tflite"], "--data", digits_validation, "--json")
    assert r.exit_code == 0, r.stderr + r.stdout
