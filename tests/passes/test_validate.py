"""validate(): real runtimes on the digits sample in every format, a corrupted kernel, layouts and bad inputs."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from mdeploy.calibration import open_source
from mdeploy.passes.backends import open_artifact
from mdeploy.passes.checks.validate import Failure, Thresholds, validate
from mdeploy.passes.core.errors import BadInput

sys.path.insert(0, str(Path(__file__).parent))
from _validate_models import corrupt_largest_kernel, nchw_front, wrong_head  # noqa: E402


def named(path, name):
    return dataclasses.replace(open_artifact(path), name=name)


def artifacts(out: Path) -> dict[str, Path]:
    return {"savedmodel": out / "savedmodel" / "digits" / "1", "onnx": out / "onnx" / "model.onnx",
            "tflite": out / "tflite" / "model.tflite"}


def test_float_artifacts_pass_against_the_source(digits_model, digits_converted, digits_validation):
    ref = named(digits_model, "source")
    cands = [named(p, n) for n, p in artifacts(digits_converted).items()]
    result = validate(ref, cands, open_source(str(digits_validation), ref.inputs, batch_size=64), Thresholds())
    assert result, [str(f) for f in result.failures]
    assert result.samples == 300 and result.labels
    assert result.reference_accuracy > 0.9
    for c in result.candidates:
        assert c.passed
        assert c.accuracy == pytest.approx(result.reference_accuracy, abs=0.01)
        assert abs(c.accuracy_drop) <= 0.01
        m = c.outputs["probs"]
        assert m["top1_agreement"] == 1.0 and m["top5_agreement"] == 1.0
        assert m["max_abs_error"] < 1e-4 and m["cosine_similarity"] > 0.9999 and m["sqnr_db"] > 60
        assert m["nan_count"] == 0 and m["inf_count"] == 0
    d = result.to_dict()
    assert d["passed"] and len(d["candidates"]) == 3
    # labelled classification: the accuracy drop, at the task's default bound
    assert d["candidates"][0]["gates"]["probs"] == {"task": "classification", "metrics": {"accuracy_drop": 0.01},
                                                    "why": "classification with labels: accuracy_drop <= 0.01 (default)"}


def test_a_corrupted_kernel_fails_the_gate(tmp_path, digits_converted, digits_validation):
    onnx_path = artifacts(digits_converted)["onnx"]
    broken = tmp_path / "broken.onnx"
    corrupt_largest_kernel(onnx_path, broken)
    ref = named(onnx_path, "onnx")
    result = validate(ref, [named(broken, "broken")], open_source(str(digits_validation), ref.inputs),
                      Thresholds(min_agreement=0.99))  # an explicit bound applies beside the task's default
    assert not result
    metrics = {f.metric for f in result.failures}
    assert {"top1_agreement", "accuracy_drop"} <= metrics
    f = next(f for f in result.failures if f.metric == "top1_agreement")
    assert f.candidate == "broken" and f.value < 0.99 and f.threshold == 0.99
    assert "broken: top1_agreement" in str(f) and "< min 0.99" in str(f)


def test_thresholds_can_be_switched_on_and_off(digits_converted, digits_validation):
    paths = artifacts(digits_converted)
    ref = named(paths["onnx"], "onnx")
    source = open_source(str(digits_validation), ref.inputs)
    strict = validate(ref, [named(paths["tflite"], "tflite")], source, Thresholds(max_abs_error=0.0, min_sqnr=1000.0))
    assert not strict
    got = {f.metric: f for f in strict.failures}
    assert set(got) == {"max_abs_error", "sqnr_db"}
    assert got["max_abs_error"].threshold == 0.0 and got["max_abs_error"].value > 0
    off = validate(ref, [named(paths["tflite"], "tflite")], source, Thresholds(enabled=False))
    assert off and off.candidates[0].outputs["probs"]["max_abs_error"] > 0 and not off.candidates[0].gates


def test_nchw_candidate_inputs_are_transposed(tmp_path, digits_converted, digits_validation):
    onnx_path = artifacts(digits_converted)["onnx"]
    nchw = tmp_path / "nchw.onnx"
    nchw_front(onnx_path, nchw)
    assert open_artifact(nchw).inputs[0].shape[1:] == (1, 8, 8)
    ref = named(onnx_path, "onnx")
    result = validate(ref, [named(nchw, "nchw")], open_source(str(digits_validation), ref.inputs), Thresholds())
    assert result
    c = result.candidates[0]
    assert c.layout and "NHWC->NCHW" in c.layout
    assert c.outputs["probs"]["max_abs_error"] == 0.0


def test_multi_output_models_get_metrics_per_output(tiny_keras):
    ref = named(tiny_keras, "ref")
    result = validate(ref, [named(tiny_keras, "same")], open_source("random", ref.inputs, samples=16), Thresholds())
    assert result
    outs = result.candidates[0].outputs
    assert set(outs) == {"cls", "reg"}
    assert "top1_agreement" in outs["cls"] and "top1_agreement" not in outs["reg"]
    assert result.candidates[0].accuracy is None  # no labels in generated data


def test_data_that_does_not_fit_the_model_is_bad_input(tmp_path, digits_converted):
    data = tmp_path / "flat.npz"
    np.savez(data, image=np.zeros((4, 64), np.float32))
    ref = named(artifacts(digits_converted)["onnx"], "onnx")
    with pytest.raises(BadInput, match="expects shape"):
        validate(ref, [named(artifacts(digits_converted)["tflite"], "tflite")], open_source(str(data), ref.inputs), Thresholds())


def test_different_output_shapes_are_bad_input(tmp_path, digits_converted, digits_validation):
    other = tmp_path / "five.onnx"
    wrong_head(other, classes=5)
    ref = named(artifacts(digits_converted)["onnx"], "onnx")
    with pytest.raises(BadInput, match=r"five: .*'probs' has \[\d+, 5\]"):
        validate(ref, [named(other, "five")], open_source(str(digits_validation), ref.inputs), Thresholds())


def test_no_candidates_is_bad_input(digits_converted, digits_validation):
    ref = named(artifacts(digits_converted)["onnx"], "onnx")
    with pytest.raises(BadInput, match="no candidate"):
        validate(ref, [], open_source(str(digits_validation), ref.inputs), Thresholds())


def test_failure_reads_as_candidate_metric_value_threshold():
    f = Failure("int8", "accuracy_drop", 0.05, 0.01)
    assert str(f) == "int8: accuracy_drop = 0.05 > max 0.01"
    assert Failure("a", "sqnr_db", 10.0, 20.0, "logits").to_dict()["output"] == "logits"


def test_reference_outputs_run_the_reference_once_and_change_no_verdict(tmp_path, digits_converted, digits_validation):
    """The accuracy search compares many trials with one float parent: with ReferenceOutputs the parent runs on the
    first call only (here its file is gone before the second), and every metric equals a plain validate()'s."""
    import shutil

    from mdeploy.passes.checks.validate import ReferenceOutputs

    onnx_path = artifacts(digits_converted)["onnx"]
    copy = tmp_path / "reference.onnx"
    shutil.copy(onnx_path, copy)
    broken = tmp_path / "broken.onnx"
    corrupt_largest_kernel(onnx_path, broken)
    ref, cands = named(copy, "onnx"), [named(broken, "broken"), named(onnx_path, "same")]
    memo = ReferenceOutputs()
    first = validate(ref, cands[:1], open_source(str(digits_validation), ref.inputs, batch_size=64), Thresholds(), reference_outputs=memo)
    copy.unlink()
    again = validate(ref, cands, open_source(str(digits_validation), ref.inputs, batch_size=64), Thresholds(), reference_outputs=memo)
    plain = validate(named(onnx_path, "onnx"), cands, open_source(str(digits_validation), ref.inputs, batch_size=64), Thresholds())
    assert first.candidates[0].outputs == again.candidates[0].outputs == plain.candidates[0].outputs
    assert again.candidates[1].outputs == plain.candidates[1].outputs and again.reference_accuracy == plain.reference_accuracy
    assert not again.candidates[0].passed and again.candidates[1].passed
