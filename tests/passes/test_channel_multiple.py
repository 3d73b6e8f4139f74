"""Structured pruning's channel multiple: `auto` (the default) keeps multiples of 8 in groups whose dense width is one,
meets the FLOPs target (with finer steps only when it must, and says so), records each group's multiple, and reports
a ratio it could not meet."""
from __future__ import annotations

import json

import numpy as np
import pytest


def _mixed_widths(keras):
    """Groups of 24, 12 (not a multiple of 8), 40+40 tied across an Add, 16; the classifier (5) is never pruned."""
    i = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(24, 3, padding="same", name="c24")(i)
    x = keras.layers.BatchNormalization(name="bn24")(x)
    x = keras.layers.ReLU(name="r24")(x)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="c12")(x)
    a = keras.layers.Conv2D(40, 1, name="c40a")(x)
    b = keras.layers.Conv2D(40, 1, name="c40b")(x)
    x = keras.layers.ReLU(name="r40")(keras.layers.Add(name="add")([a, b]))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c16")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(i, keras.layers.Dense(5, activation="softmax", name="cls")(x))


DENSE_WIDTHS = {"c24": 24, "c12": 12, "c40a": 40, "c40b": 40, "c16": 16}


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("mixed") / "mixed.keras"
    _mixed_widths(keras).save(path)
    return path


def _widths(path) -> dict[str, int]:
    import keras

    model = keras.models.load_model(path)
    return {name: int(model.get_layer(name).output.shape[-1]) for name in DENSE_WIDTHS}


def test_auto_keeps_multiples_of_8_and_meets_the_flops_target(tmp_path, mixed_model):
    from mdeploy.passes.workflows.prune import prune_structured

    report = prune_structured(mixed_model, tmp_path / "auto", flops_target=0.5, latency_runs=0)  # the default
    record = report.artifacts[-1]
    s = record.structured
    assert s.flops_after <= 0.5 * s.flops_before and s.channel_multiple == "auto"
    widths = _widths(tmp_path / "auto" / record.path)
    for name, dense in DENSE_WIDTHS.items():
        if dense % 8 == 0:
            assert widths[name] % 8 == 0, (name, widths[name])
    assert any(widths[n] < d for n, d in DENSE_WIDTHS.items() if d % 8 == 0)  # pruned, not merely left whole
    assert widths["c40a"] == widths["c40b"]
    by_producer = {tuple(sorted(g["producers"])): g for g in s.groups}
    assert by_producer[("c12",)]["multiple"] == 1 and by_producer[("c24",)]["multiple"] == 8
    assert by_producer[("c40a", "c40b")]["multiple"] == 8 and by_producer[("cls",)]["multiple"] is None
    assert not s.warnings  # met in steps of 8: nothing to say
    saved = json.loads((tmp_path / "auto" / "report.json").read_text())["artifacts"][-1]["structured"]
    assert saved["channel_multiple"] == "auto" and {g["multiple"] for g in saved["groups"]} == {1, 8, None}

    # the property is the default's doing: with --channel-multiple 1 some width is not a multiple of 8
    ones = prune_structured(mixed_model, tmp_path / "one", flops_target=0.5, latency_runs=0, multiple=1)
    odd = _widths(tmp_path / "one" / ones.artifacts[-1].path)
    assert any(odd[n] % 8 for n, d in DENSE_WIDTHS.items() if d % 8 == 0)


def test_digits_default_is_vector_aligned_with_parity(mdeploy, tmp_path, digits_model, digits_validation):
    """The real digits sample through the CLI's default: every pruned width a multiple of 8, half the FLOPs, and the
    smaller model converts to ONNX with parity on the validation images."""
    from mdeploy.passes.workflows.convert import convert

    r = mdeploy("prune", digits_model, "--structured", "--flops-target", "0.5", "--latency-runs", "0",
                "-o", tmp_path / "p", "--json")
    assert r.exit_code == 0, r.stderr
    record = json.loads(r.stdout)["artifacts"][-1]
    s = record["structured"]
    assert s["flops_after"] <= 0.5 * s["flops_before"] and s["channel_multiple"] == "auto"
    pruned = [g for g in s["groups"] if not g["frozen"]]
    assert pruned and all(g["kept"] % 8 == 0 and g["multiple"] == 8 for g in pruned)
    assert any(g["kept"] < g["channels"] for g in pruned)
    converted = convert(tmp_path / "p" / record["path"], ["onnx"], tmp_path / "c", data=str(digits_validation))
    assert converted.ok and converted.artifacts[-1].checks.passed


def test_ratio_the_multiples_cannot_meet_is_reported(tmp_path, mixed_model):
    from mdeploy.passes.workflows.prune import prune_structured

    # ratio 0.1: 24 * 0.9 = 21.6 -> 24 and 16 * 0.9 = 14.4 -> 16 keep all in steps of 8, so less than 0.1 goes
    report = prune_structured(mixed_model, tmp_path, ratio=0.1, latency_runs=0)
    s = report.artifacts[-1].structured
    assert s.requested_ratio == 0.1 and s.ratio < 0.09
    assert any("--ratio 0.1 removed" in w and "--channel-multiple 1" in w for w in s.warnings)


def test_auto_takes_finer_steps_only_when_the_target_needs_them(tmp_path, mixed_model):
    """A target the 8-channel steps cannot reach: auto still meets it, with the finer multiple recorded and a warning;
    an explicit 8 refuses instead (exit 2 from the CLI), naming the knob."""
    from mdeploy.passes.core.errors import BadInput
    from mdeploy.passes.workflows.prune import prune_structured

    report = prune_structured(mixed_model, tmp_path / "a", flops_target=0.08, latency_runs=0)
    s = report.artifacts[-1].structured
    assert s.flops_after <= 0.08 * s.flops_before
    assert any("could not be reached in steps of 8" in w for w in s.warnings)
    assert {g["multiple"] for g in s.groups if not g["frozen"]} - {1, 8}  # some group stepped by 4 or 2
    with pytest.raises(BadInput, match="cannot be reached") as e:
        prune_structured(mixed_model, tmp_path / "b", flops_target=0.08, latency_runs=0, multiple=8)
    assert "--channel-multiple" in e.value.hint


@pytest.mark.parametrize("value", ["0", "-8", "eight", "2.5"])
def test_bad_channel_multiple(mdeploy, tmp_path, mixed_model, value):
    r = mdeploy("prune", mixed_model, "--structured", "--ratio", "0.3", "--channel-multiple", value, "-o", tmp_path)
    assert r.exit_code == 2 and "--channel-multiple must be auto or a whole number" in r.stderr
    assert not (tmp_path / "keras").exists()


def test_recipe_and_optimize_take_the_same_value(tmp_path):
    from mdeploy.passes.core.errors import BadInput
    from mdeploy.passes.workflows.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('[prune]\nstructured = true\nflops_target = 0.5\nchannel_multiple = "auto"\n')
    assert load_recipe(recipe).prune.channel_multiple == "auto"
    assert load_recipe(recipe, {"prune.channel_multiple": 16}).prune.channel_multiple == 16
    assert load_recipe(None, {"prune.structured": True, "prune.ratio": 0.3}).prune.channel_multiple == "auto"
    recipe.write_text('[prune]\nstructured = true\nflops_target = 0.5\nchannel_multiple = "eight"\n')
    with pytest.raises(BadInput, match="channel-multiple"):
        load_recipe(recipe)


def test_masks_round_to_the_nearest_multiple():
    """The ratio rule on its own: size - floor(r * size) kept, to the nearest multiple (ties keep more), at least one
    multiple, never more than the group."""
    from mdeploy.passes.prune.structured import masks_for_ratio

    class Graph:  # only group sizes are read
        groups = [type("G", (), {"size": n})() for n in (16, 24, 8, 12)]

    scores = {g: np.arange(n.size, dtype=float) for g, n in enumerate(Graph.groups)}
    kept = {g: int(m.sum()) for g, m in masks_for_ratio(Graph, scores, 0.5, {0: 8, 1: 8, 2: 8, 3: 1}).items()}
    assert kept == {0: 8, 1: 16, 2: 8, 3: 6}  # 24 keeps 12 -> a tie between 8 and 16 keeps more
    kept = {g: int(m.sum()) for g, m in masks_for_ratio(Graph, scores, 0.3, {0: 8, 1: 8, 2: 8, 3: 1}).items()}
    assert kept == {0: 16, 1: 16, 2: 8, 3: 9}  # 16 keeps 12: a tie, so 16; 24 keeps 17: 16 is nearer than 24


def test_optimize_flag_takes_the_same_values(mdeploy, tmp_path, digits_model):
    r = mdeploy("optimize", digits_model, "--structured", "--flops-target", "0.5", "--channel-multiple", "x",
                "-o", tmp_path)
    assert r.exit_code == 2 and "--channel-multiple must be auto or a whole number" in r.stderr
    r = mdeploy("optimize", digits_model, "--structured", "--flops-target", "0.5", "--epochs", "0", "-o", tmp_path)
    assert r.exit_code == 2 and "prune.epochs" in r.stderr
    assert not (tmp_path / "keras").exists()
