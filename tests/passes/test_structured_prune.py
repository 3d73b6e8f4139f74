"""Structured (filter) pruning: channel groups through Add, DepthwiseConv and Concatenate, the rebuilt smaller model,
FLOPs targets, and the pruned model converting to ONNX and TFLite with parity."""
from __future__ import annotations

import json

import numpy as np
import pytest


def _tiny_residual(keras):
    """stem conv+BN (8) -> Add with a 1x1 branch+BN (8), then DepthwiseConv and a 1x1 side conv (6) concatenated,
    a 1x1 mix (12), pooling and the classifier (4, never pruned)."""
    i = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(i)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(8, 1, name="branch")(x)
    y = keras.layers.BatchNormalization(name="branch_bn")(y)
    x = keras.layers.Add(name="res")([x, y])
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    e = keras.layers.Conv2D(6, 1, activation="relu", name="side")(x)
    c = keras.layers.Concatenate(name="cat")([d, e])
    c = keras.layers.Conv2D(12, 1, activation="relu", name="mix")(c)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(c)
    return keras.Model(i, keras.layers.Dense(4, activation="softmax", name="cls")(g))


# the first half of every group's filters: what ratio 0.5 removes once their kernels are zero
_DEAD = {"stem": 4, "branch": 4, "side": 3, "mix": 6}


@pytest.fixture(scope="module")
def residual_model(tmp_path_factory):
    """The tiny residual model with the first half of each group's filters zeroed (in both producers of the Add), so
    removing exactly those must leave every output unchanged: a test of the surgery, not of the ranking."""
    import keras

    keras.utils.set_random_seed(0)
    model = _tiny_residual(keras)
    for name, n in _DEAD.items():
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        kernel[..., :n] = 0
        bias[:n] = 0
        layer.set_weights([kernel, bias])
    for name in ("stem_bn", "branch_bn"):  # trained-looking BN statistics on the kept channels
        bn = model.get_layer(name)
        gamma, beta, mean, var = bn.get_weights()
        rng = np.random.default_rng(1)
        gamma[4:], beta[4:] = rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4)
        mean[4:], var[4:] = rng.normal(0, 0.1, 4), rng.uniform(0.5, 1.5, 4)
        bn.set_weights([gamma, beta, mean, var])
    path = tmp_path_factory.mktemp("residual") / "residual.keras"
    model.save(path)
    x = np.random.default_rng(0).random((8, 12, 12, 3), dtype=np.float32)
    data = tmp_path_factory.mktemp("residual_data") / "inputs.npz"
    np.savez(data, image=x)
    return path, data


@pytest.fixture(scope="module")
def residual_pruned(tmp_path_factory, residual_model):
    from mdeploy.passes.workflows.prune import prune_structured

    path, _ = residual_model
    out = tmp_path_factory.mktemp("residual_pruned")
    report = prune_structured(path, out, ratio=0.5, latency_runs=0, multiple=1)  # exactly half of every group
    return out, report.artifacts[-1]


def test_groups_tie_the_add_and_freeze_the_classifier(residual_model):
    import keras

    from mdeploy.passes.prune.channels import ChannelGraph

    graph = ChannelGraph(keras.models.load_model(residual_model[0]))
    groups = {tuple(sorted(graph.groups[g].producers)): graph.groups[g] for g in graph.roots()}
    assert set(groups) == {("branch", "stem"), ("side",), ("mix",), ("cls",)}
    assert groups[("cls",)].frozen and "output" in groups[("cls",)].frozen
    assert all(groups[k].frozen is None for k in [("branch", "stem"), ("side",), ("mix",)])
    # the depthwise conv follows its input's group; the concatenation lays the two groups side by side
    assert [graph.find(s.gid) for s in graph.layer_out["dw"]] == [graph.find(graph.owned["stem"])]
    assert [s.n for s in graph.layer_in["mix"]] == [8, 6]


def test_removing_dead_filters_keeps_every_output(residual_model, residual_pruned):
    import keras

    path, data = residual_model
    out, record = residual_pruned
    small = keras.models.load_model(out / record.path)
    original = keras.models.load_model(path)
    widths = {layer.name: int(layer.output.shape[-1]) for layer in small.layers}
    assert widths["stem"] == widths["branch"] == widths["res"] == widths["dw"] == 4  # one shared mask across the Add
    assert widths["side"] == 3 and widths["cat"] == 7 and widths["mix"] == 6 and widths["cls"] == 4
    x = np.load(data)["image"]
    np.testing.assert_allclose(small.predict(x, verbose=0), original.predict(x, verbose=0), atol=1e-5)
    s = record.structured
    assert s.flops_after < 0.5 * s.flops_before and s.params_after < s.params_before
    assert s.size_bytes_after < s.size_bytes_before
    tied = [g for g in s.groups if g["tied"]]
    assert len(tied) == 1 and sorted(tied[0]["producers"]) == ["branch", "stem"] and tied[0]["kept"] == 4


def test_flops_target_is_met_and_counted_on_the_rebuilt_model(tmp_path, residual_model):
    import keras

    from mdeploy.passes.prune.flops import model_flops
    from mdeploy.passes.workflows.prune import prune_structured

    path, _ = residual_model
    report = prune_structured(path, tmp_path, flops_target=0.4, latency_runs=0, criterion="bn")
    s = report.artifacts[-1].structured
    assert s.flops_after <= 0.4 * s.flops_before
    assert s.flops_after > 0.2 * s.flops_before  # the smallest ratio that meets the target, not the largest
    assert model_flops(keras.models.load_model(tmp_path / report.artifacts[-1].path))["flops"] == s.flops_after
    saved = json.loads((tmp_path / "report.json").read_text())["artifacts"][-1]["structured"]
    assert saved["flops_after"] == s.flops_after and saved["criterion"] == "bn"


def test_pruned_model_converts_with_parity(tmp_path, residual_model, residual_pruned):
    from mdeploy.passes.workflows.convert import convert

    out, record = residual_pruned
    report = convert(out / record.path, ["onnx", "tflite"], tmp_path, data=str(residual_model[1]))
    assert report.ok
    assert {a.format for a in report.artifacts} == {"onnx", "tflite"}
    assert all(a.checks.passed for a in report.artifacts)


def test_sequential_flatten_dense(tmp_path):
    """A Sequential CNN whose conv channels reach a Dense through Flatten: the Dense rows follow the kept channels."""
    import keras

    from mdeploy.passes.prune.channels import ChannelGraph, rebuild
    from mdeploy.passes.prune.structured import channel_scores, masks_for_ratio

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="c"),
                              keras.layers.MaxPooling2D(name="p"), keras.layers.Flatten(name="f"),
                              keras.layers.Dense(5, name="d")])
    kernel, bias = model.get_layer("c").get_weights()
    kernel[..., ::2] = 0
    model.get_layer("c").set_weights([kernel, bias])
    graph = ChannelGraph(model)
    graph.set_masks(masks_for_ratio(graph, channel_scores(graph, "l2"), 0.5))
    small = rebuild(graph, keras)
    assert small.get_layer("c").filters == 4 and small.get_layer("d").kernel.shape == (16, 5)
    x = np.random.default_rng(0).random((4, 6, 6, 1), dtype=np.float32)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_cli_structured(mdeploy, tmp_path, residual_model):
    path, _ = residual_model
    result = mdeploy("prune", path, "--structured", "--ratio", "0.25", "--latency-runs", "3", "-o", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "FLOPs" in result.stdout and "left whole: cls" in result.stdout and "latency p50" in result.stdout
    record = json.loads((tmp_path / "report.json").read_text())["artifacts"][-1]
    assert record["structured"]["latency_ms_after"] > 0 and record["produced_by"]["pass"] == "prune.structured"


@pytest.mark.parametrize("args, words", [
    (["--ratio", "0.5"], "--structured"),
    (["--structured"], "--flops-target"),
    (["--structured", "--ratio", "0.5", "--flops-target", "0.5"], "exactly one"),
    (["--structured", "--flops-target", "1.5"], "(0, 1)"),
    (["--structured", "--ratio", "0.5", "--sparsity", "0.5"], "--sparsity"),
])
def test_cli_structured_bad_usage(mdeploy, tmp_path, residual_model, args, words):
    result = mdeploy("prune", residual_model[0], *args, "-o", tmp_path)
    assert result.exit_code == 2 and words in result.stderr
    assert not (tmp_path / "keras").exists()


@pytest.mark.slow
def test_mobilenet_half_flops_converts(tmp_path, mobilenet_model):
    from mdeploy.passes.workflows.convert import convert
    from mdeploy.passes.workflows.prune import prune_structured

    report = prune_structured(mobilenet_model, tmp_path / "p", flops_target=0.5, latency_runs=0)  # default: auto
    s = report.artifacts[-1].structured
    assert s.flops_after <= 0.5 * s.flops_before and s.params_after < 0.8 * s.params_before
    # every MobileNetV2 width is a multiple of 8, and so is every pruned one (the fast path on ONNX Runtime)
    assert all(g["channels"] % 8 == 0 and g["kept"] % 8 == 0 for g in s.groups if not g["frozen"])
    assert not s.warnings
    tied = [g for g in s.groups if g["tied"]]
    assert len(tied) >= 4  # the inverted-residual stages
    assert [g["producers"] for g in s.groups if g["frozen"]] == [["predictions"]]
    converted = convert(tmp_path / "p" / report.artifacts[-1].path, ["onnx", "tflite"], tmp_path / "c")
    assert converted.ok


def test_optimize_structured_then_int8_beside_dense(tmp_path, digits_model, digits_calibration, digits_validation,
                                                    digits_train_npz):
    """One recipe: structured prune -> fine-tune -> int8, with the dense float and int8 artifacts beside it."""
    from mdeploy.passes.workflows.optimize import optimize
    from mdeploy.passes.workflows.recipe import load_recipe

    recipe = load_recipe(None, {"target": "edge", "calibration": str(digits_calibration),
                                "validation": str(digits_validation), "bench.enabled": False,
                                "prune.structured": True, "prune.flops_target": 0.5,
                                "prune.fine_tune": str(digits_train_npz), "prune.epochs": 2,
                                "quantize.tflite": ["int8"]})
    report = optimize(digits_model, tmp_path, recipe)
    by_name = {a.name: a for a in report.artifacts}
    assert {"structured-keras", "tflite", "tflite-int8", "pruned-tflite", "pruned-tflite-int8"} <= set(by_name)
    assert by_name["pruned-tflite-int8"].size_bytes < by_name["tflite-int8"].size_bytes
    assert by_name["pruned-tflite"].size_bytes < 0.9 * by_name["tflite"].size_bytes
    s = by_name["structured-keras"].structured
    assert s.flops_after <= 0.5 * s.flops_before and s.fine_tune["epochs"] == 2
    assert by_name["pruned-tflite"].structured is None  # the section stays on the model it describes
    assert report.verdict.ok
    # fine-tuned: the gate (accuracy within 1 point of the source) passed for the pruned float and int8 TFLite
    assert report.verdict.artifacts["pruned-tflite"].status == "ok"
    assert report.verdict.artifacts["pruned-tflite-int8"].status == "ok"
