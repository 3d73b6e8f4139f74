"""Pruning passes on real models: masks, the schedule, Keras one-shot / fine-tuned / 2:4, ONNX, and measure_sparsity."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.prune.masks import (
    check_nm,
    check_sparsity,
    global_masks,
    magnitude_mask,
    nm_mask,
    parse_pattern,
    polynomial_sparsity,
    schedule_updates,
    select_layers,
)

# --------------------------------------------------------------------------- pure masks


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 400), sparsity=st.floats(0, 0.99), seed=st.integers(0, 10))
def test_magnitude_mask_prunes_exact_count_of_smallest(size, sparsity, seed):
    w = np.random.default_rng(seed).normal(size=size).astype(np.float32)
    keep = magnitude_mask(w, sparsity)
    assert np.count_nonzero(~keep) == round(sparsity * size)
    if keep.any() and (~keep).any():
        assert np.abs(w[keep]).min() >= np.abs(w[~keep]).max()


def test_global_masks_use_one_threshold_across_layers():
    rng = np.random.default_rng(0)
    weights = {"small": rng.normal(scale=0.1, size=(40, 10)), "large": rng.normal(scale=1.0, size=(40, 10))}
    masks = global_masks(weights, 0.5)
    pruned = sum(np.count_nonzero(~m) for m in masks.values())
    assert pruned == 400
    kept_min = min(np.abs(weights[k][masks[k]]).min() for k in weights)
    pruned_max = max(np.abs(weights[k][~masks[k]]).max() for k in weights)
    assert kept_min >= pruned_max
    # the small-scale layer loses far more than half its weights
    assert np.count_nonzero(~masks["small"]) > 300


@pytest.mark.parametrize("shape,axis", [((16, 8), 0), ((3, 3, 16, 8), -2), ((8, 3, 3, 12), 3), ((2, 8, 4), 1)])
def test_nm_mask_keeps_two_largest_of_every_four_along_the_input_axis(shape, axis):
    w = np.random.default_rng(1).normal(size=shape)
    keep = nm_mask(w, 2, 4, axis)
    pruned = w * keep
    groups = np.moveaxis(pruned, axis, -1).reshape(-1, 4)
    orig = np.moveaxis(w, axis, -1).reshape(-1, 4)
    assert np.all(np.count_nonzero(groups, axis=1) == 2)
    for g, o in zip(groups, orig):  # the survivors are the two largest magnitudes of their group
        assert set(np.flatnonzero(g)) == set(np.argsort(-np.abs(o))[:2])
    assert check_nm(pruned, 2, 4, axis) and not check_nm(w, 2, 4, axis)


def test_nm_mask_refuses_an_input_dimension_it_does_not_divide():
    with pytest.raises(BadInput, match="does not divide the input dimension of conv1/kernel: 6"):
        nm_mask(np.ones((3, 3, 6, 8)), 2, 4, -2, "conv1/kernel", "conv1")


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), "half"])
def test_sparsity_outside_unit_interval_is_bad_input(bad):
    with pytest.raises(BadInput, match=r"\[0, 1\)"):
        check_sparsity(bad)


@pytest.mark.parametrize("bad", ["2", "4:2", "0:4", "a:b", "2:4:8"])
def test_malformed_pattern_is_bad_input(bad):
    with pytest.raises(BadInput, match="--pattern"):
        parse_pattern(bad)


def test_polynomial_schedule_follows_zhu_gupta():
    kw = dict(initial=0.1, final=0.8, begin_step=10, end_step=110)
    assert polynomial_sparsity(0, **kw) == 0.1
    assert polynomial_sparsity(10, **kw) == pytest.approx(0.1)
    assert polynomial_sparsity(60, **kw) == pytest.approx(0.8 + (0.1 - 0.8) * 0.5 ** 3)
    assert polynomial_sparsity(110, **kw) == 0.8 and polynomial_sparsity(500, **kw) == 0.8
    values = [polynomial_sparsity(t, **kw) for t in range(0, 120)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    # fast early, slow late: the first half of the window prunes most of the way
    assert polynomial_sparsity(60, **kw) > 0.1 + 0.8 * (0.8 - 0.1)
    assert schedule_updates(100, 0, 45, 10) == [0, 10, 20, 30, 40, 45]


def test_first_last_policy_and_unmatched_exclude():
    layers = ["conv1", "conv2", "dense1", "probs"]
    selected, skipped, unmatched = select_layers(layers, ("dense*", "nope*"))
    assert selected == ["conv2"]
    assert set(skipped) == {"conv1", "probs", "dense1"} and unmatched == ["nope*"]
    selected, _, _ = select_layers(layers, (), prune_first_last=True)
    assert selected == layers


# --------------------------------------------------------------------------- Keras


def _accuracy(artifact, validation):
    from mdeploy.passes.workflows.prune import labelled_accuracy

    return labelled_accuracy(artifact, str(validation))


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def digits_source(digits_model):
    from mdeploy.passes.backends import open_artifact

    return open_artifact(digits_model)


def test_keras_50_percent_one_shot_keeps_accuracy_and_exact_sparsity(tmp_path, digits_model, digits_source, digits_validation):
    from mdeploy.passes.backends.tensorflow import load_keras_model
    from mdeploy.passes.core.pipeline import Context
    from mdeploy.passes.prune import PruneKeras

    before_hash = _sha(digits_model)
    out = PruneKeras(sparsity=0.5).run(digits_source, Context(out_dir=tmp_path))
    p = out.meta["pruning"]
    assert out.path == tmp_path / "keras" / "model.pruned.keras" and out.format == "keras"
    assert abs(p["achieved_sparsity"] - 0.5) <= 0.01 and out.meta["sparsity"] == p["achieved_sparsity"]
    pruned_layers = {layer["name"]: layer for layer in p["layers"] if layer["pruned"]}
    assert set(pruned_layers) == {"conv2", "dense1"}  # first and last stay dense by policy
    assert all(abs(layer["achieved"] - 0.5) <= 0.01 for layer in pruned_layers.values())
    assert p["gzip_bytes_after"] < 0.8 * p["gzip_bytes_before"]
    acc_before, acc_after = _accuracy(digits_source, digits_validation), _accuracy(out, digits_validation)
    assert acc_after >= acc_before - 0.02
    # biases and the dense-by-policy layers are untouched; the input file too
    src, new = load_keras_model(digits_model), load_keras_model(out.path)
    for a, b in zip(src.layers, new.layers):
        for va, vb in zip(a.weights, b.weights):
            if va.name == "bias" or a.name in ("conv1", "probs"):
                np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert _sha(digits_model) == before_hash


def test_keras_80_percent_with_fine_tuning_keeps_accuracy(tmp_path, digits_source, digits_validation, digits_train_npz):
    from mdeploy.passes.core.pipeline import Context
    from mdeploy.passes.prune import FineTuning, PruneKeras, measure_sparsity

    one_shot = PruneKeras(sparsity=0.8).run(digits_source, Context(out_dir=tmp_path / "oneshot"))
    tuned = PruneKeras(sparsity=0.8, fine_tuning=FineTuning(str(digits_train_npz), epochs=3)).run(
        digits_source, Context(out_dir=tmp_path / "ft"))
    p = tuned.meta["pruning"]
    assert abs(p["achieved_sparsity"] - 0.8) <= 0.01
    acc_before = _accuracy(digits_source, digits_validation)
    acc_tuned = _accuracy(tuned, digits_validation)
    assert acc_tuned >= acc_before - 0.02
    assert acc_tuned > _accuracy(one_shot, digits_validation)  # fine-tuning recovered what one-shot lost
    updates = p["schedule"]["mask_updates"]
    assert updates[0] == [0, 0.0] and updates[-1][1] == 0.8
    assert all(b[1] >= a[1] for a, b in zip(updates, updates[1:]))
    assert p["schedule"]["loss"] == "sparse_categorical_crossentropy"  # from the model's compile config
    # the zeros are really in the saved file, not only in memory
    measured = {t["name"]: t for t in measure_sparsity(tuned)["tensors"]}
    assert abs(measured["dense1/kernel"]["sparsity"] - 0.8) <= 0.01


def test_keras_2_4_pattern_every_group_of_four(tmp_path, digits_source, digits_validation):
    from mdeploy.passes.backends.tensorflow import load_keras_model
    from mdeploy.passes.core.pipeline import Context
    from mdeploy.passes.prune import PruneKeras

    out = PruneKeras(pattern="2:4").run(digits_source, Context(out_dir=tmp_path))
    model = load_keras_model(out.path)
    for name, axis in (("conv2", -2), ("dense1", 0)):
        kernel = model.get_layer(name).kernel.numpy()
        groups = np.moveaxis(kernel, axis, -1).reshape(-1, 4)
        assert np.all(np.count_nonzero(groups, axis=1) == 2), name
    assert out.meta["pruning"]["achieved_sparsity"] == 0.5
    assert _accuracy(out, digits_validation) >= _accuracy(digits_source, digits_validation) - 0.02


def test_keras_global_scope_hits_the_overall_target_with_uneven_layers(tmp_path, digits_source):
    from mdeploy.passes.core.pipeline import Context
    from mdeploy.passes.prune import PruneKeras

    p = PruneKeras(sparsity=0.7, scope="global", prune_first_last=True).run(digits_source, Context(out_dir=tmp_path)).meta["pruning"]
    assert abs(p["achieved_sparsity"] - 0.7) <= 0.001
    achieved = [layer["achieved"] for layer in p["layers"]]
    assert max(achieved) - min(achieved) > 0.05  # one threshold, so layers differ


def test_separable_depthwise_embedding_pruned_normalization_untouched(tmp_path):
    import keras

    from mdeploy.passes.backends import open_artifact
    from mdeploy.passes.backends.tensorflow import load_keras_model
    from mdeploy.passes.core.pipeline import Context
    from mdeploy.passes.prune import PruneKeras

    keras.utils.set_random_seed(0)
    tokens = keras.Input((16,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(50, 16, name="embed")(tokens)
    x = keras.layers.Reshape((4, 4, 16))(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, name="head")(x)
    path = tmp_path / "mixed.keras"
    keras.Model(tokens, out).save(path)
    result = PruneKeras(sparsity=0.6, prune_first_last=True).run(open_artifact(path), Context(out_dir=tmp_path / "o"))
    layers = {layer["weight"]: layer for layer in result.meta["pruning"]["layers"]}
    assert set(layers) == {"embed/embeddings", "dw/kernel", "sep/depthwise_kernel", "sep/pointwise_kernel", "head/kernel"}
    assert all(abs(layer["achieved"] - 0.6) <= 0.02 for layer in layers.values())
    src, new = load_keras_model(path), load_keras_model(result.path)
    for v_src, v_new in zip(src.get_layer("bn").weights, new.get_layer("bn").weights):
        np.testing.assert_array_equal(v_src.numpy(), v_new.numpy())
    # an N:M pattern skips kernels without an input reduction (depthwise, embedding), with a warning
    ctx = Context(out_dir=tmp_path / "nm")
    nm = PruneKeras(pattern="2:4", prune_first_last=True).run(open_artifact(path), ctx).meta["pruning"]
    assert {layer["weight"] for layer in nm["layers"] if layer["pruned"]} == {"sep/pointwise_kernel", "head/kernel"}
    assert any("dw" in w for w in ctx.warnings) and any("embed" in w for w in ctx.warnings)


def test_fine_tuning_needs_labels_and_a_loss(tmp_path, digits_source, tiny_keras, rng):
    from mdeploy.passes.backends import open_artifact
    from mdeploy.passes.core.pipeline import Context
    from mdeploy.passes.prune import FineTuning, PruneKeras

    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, image=rng.random((8, 8, 8, 1), dtype=np.float32))
    with pytest.raises(BadInput, match="no labels"):
        PruneKeras(fine_tuning=FineTuning(str(unlabelled))).run(digits_source, Context(out_dir=tmp_path / "a"))
    tiny = open_artifact(tiny_keras)  # saved uncompiled
    data = tmp_path / "t.npz"
    np.savez(data, features=rng.random((8, 6), dtype=np.float32), extra=rng.random((8, 4), dtype=np.float32),
             labels=np.zeros(8, dtype=np.int64))
    with pytest.raises(BadInput, match="without a compiled loss") as e:
        PruneKeras(fine_tuning=FineTuning(str(data)), prune_first_last=True).run(tiny, Context(out_dir=tmp_path / "b"))
    assert "--loss" in e.value.hint


# --------------------------------------------------------------------------- ONNX


def test_onnx_pruning_on_the_digits_export(tmp_path, digits_converted, digits_validation):
    import onnx
    from onnx import numpy_helper

    from mdeploy.passes.backends import open_artifact
    from mdeploy.passes.core.pipeline import Context
    from mdeploy.passes.prune import PruneOnnx

    src_path = digits_converted / "onnx" / "model.onnx"
    before_hash = _sha(src_path)
    source = open_artifact(src_path)
    out = PruneOnnx(sparsity=0.5).run(source, Context(out_dir=tmp_path))
    p = out.meta["pruning"]
    assert out.path == tmp_path / "onnx" / "model.pruned.onnx"
    assert abs(p["achieved_sparsity"] - 0.5) <= 0.01
    assert sorted(layer["kind"] for layer in p["layers"] if layer["pruned"]) == ["Conv", "MatMul"]
    assert p["gzip_bytes_after"] < 0.8 * p["gzip_bytes_before"]
    assert _accuracy(out, digits_validation) >= _accuracy(source, digits_validation) - 0.02
    # biases (1-D initializers) are untouched
    old = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(src_path)).graph.initializer}
    new = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out.path)).graph.initializer}
    for name, arr in old.items():
        if arr.ndim == 1:
            np.testing.assert_array_equal(arr, new[name])
    assert _sha(src_path) == before_hash

    nm = PruneOnnx(pattern="2:4").run(source, Context(out_dir=tmp_path / "nm"))
    model = onnx.load(str(nm.path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    checked = 0
    for layer in nm.meta["pruning"]["layers"]:
        if layer["pruned"]:
            axis = 1 if layer["kind"] == "Conv" else 0  # Conv (M, C, kh, kw); MatMul (K, N)
            groups = np.moveaxis(inits[layer["weight"]], axis, -1).reshape(-1, 4)
            assert np.all(np.count_nonzero(groups, axis=1) == 2)
            checked += 1
    assert checked == 2


# --------------------------------------------------------------------------- sparsity after int8 quantization


def test_sparsity_survives_int8_onnx_and_tflite(tmp_path, digits_pruned, digits_calibration):
    """Quantize the pruned model with the plain toolchains and check measure_sparsity reads the zeros back."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from mdeploy.passes.prune import measure_sparsity
    from mdeploy.passes.workflows.convert import convert

    pruned = digits_pruned / "keras" / "model.pruned.keras"
    keras_measure = measure_sparsity(pruned)
    assert keras_measure["zeros"] > 0.45 * keras_measure["params"]
    convert(pruned, ["onnx"], tmp_path)
    onnx_int8 = tmp_path / "model.int8.onnx"
    quantize_dynamic(str(tmp_path / "onnx" / "model.onnx"), str(onnx_int8), weight_type=QuantType.QInt8)
    onnx_measure = measure_sparsity(onnx_int8)
    assert {t["dtype"] for t in onnx_measure["tensors"]} == {"int8"}
    assert onnx_measure["params"] == keras_measure["params"]
    assert onnx_measure["zeros"] >= keras_measure["zeros"]  # zeros stay zero; tiny weights may round to zero too

    import tensorflow as tf

    from mdeploy.passes.backends import open_artifact
    from mdeploy.passes.convert import tflite_converter

    calib = np.load(digits_calibration)["image"][:64]
    (tmp_path / "work").mkdir()
    converter = tflite_converter(open_artifact(pruned), tmp_path / "work")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    tflite_int8 = tmp_path / "model.int8.tflite"
    tflite_int8.write_bytes(converter.convert())
    tflite_measure = measure_sparsity(tflite_int8)
    assert {t["dtype"] for t in tflite_measure["tensors"]} == {"int8"}
    assert tflite_measure["params"] == keras_measure["params"]
    assert tflite_measure["zeros"] >= keras_measure["zeros"]


def test_sparse_kernel_candidates_follow_xnnpack_pattern(digits_pruned):
    """Only 1x1 Conv2D kernels at >= 2/3 sparsity fit XNNPACK's sparse inference; the note says no speed was measured."""
    import json

    from mdeploy.passes.prune.summary import sparse_kernel_candidates

    layers = [{"name": "pw", "kind": "Conv2D", "shape": [1, 1, 8, 16], "achieved": 0.7},
              {"name": "pw_low", "kind": "Conv2D", "shape": [1, 1, 8, 16], "achieved": 0.5},
              {"name": "k3", "kind": "Conv2D", "shape": [3, 3, 8, 16], "achieved": 0.9},
              {"name": "fc", "kind": "Dense", "shape": [8, 16], "achieved": 0.9}]
    found = sparse_kernel_candidates(layers)
    assert found["qualifying_layers"] == ["pw"] and "no measured speedup" in found["note"]
    record = json.loads((digits_pruned / "report.json").read_text())["artifacts"][-1]
    assert record["pruning"]["sparse_kernels"]["qualifying_layers"] == []  # digits has 3x3 convs and Dense only
