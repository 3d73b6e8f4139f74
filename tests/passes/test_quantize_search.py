"""The accuracy-budget search (passes/quantize/search.py) on scripted evaluations, and the layer ranking."""
from __future__ import annotations

import math

import pytest

from mdeploy.passes.quantize.debug import LayerDebug, LayerError, rank_layers, sqnr_db
from mdeploy.passes.quantize.search import Knobs, Trial, budget_search, knob_candidates

LAYERS = [f"n{i}" for i in range(32)]


def scripted(needed: set[str], good_knobs: Knobs | None = None, order: list[str] | None = None):
    """An evaluate/rank pair: the gate passes when every `needed` layer is in float (or the knobs are `good_knobs`);
    the ranking lists `order` (worst first)."""
    calls: list[tuple[str, tuple[str, ...]]] = []

    def evaluate(stage: str, knobs: Knobs, exclude: tuple[str, ...]) -> Trial:
        calls.append((stage, exclude))
        ok = needed <= set(exclude) or knobs == good_knobs
        drop = 0.0 if ok else 0.5 - 0.01 * len(set(exclude) & needed) - 0.001 * len(exclude)
        return Trial(stage, knobs, exclude, ok, drop, 30.0 if ok else 3.0)

    def rank(knobs: Knobs) -> LayerDebug:
        names = order or LAYERS
        return LayerDebug("onnx", "data", 10, "scripted",
                          [LayerError(n, "Gemm", n, float(i), 0.1, rank=i + 1) for i, n in enumerate(names)])

    return evaluate, rank, calls


def test_finds_the_needed_layers_within_the_evaluation_bound():
    order = ["n7", "n3", "n12", *[n for n in LAYERS if n not in ("n7", "n3", "n12")]]
    evaluate, rank, calls = scripted({"n7", "n12"}, order=order)
    result = budget_search(evaluate, rank, Knobs(), 0.01)
    assert result.met and set(result.best.exclude) == {"n7", "n12"}
    assert result.knob_trials == 1 + len(knob_candidates(Knobs()))
    assert result.full_evaluations <= math.log2(len(LAYERS)) + len(result.best.exclude) + 2
    assert len({(s, frozenset(e)) for s, e in calls if s not in ("baseline", "knob")}) == result.full_evaluations
    d = result.to_dict()
    assert d["chosen"]["kept_float"] == 2 and d["layers"] == len(LAYERS) and len(d["trials"]) == len(calls)


def test_a_cheap_knob_that_passes_ends_the_search_before_any_ranking():
    good = Knobs("entropy", True, False)
    evaluate, _, calls = scripted({"n1"}, good_knobs=good)

    def rank(knobs):  # pragma: no cover - must not run
        raise AssertionError("ranked although a knob passed")

    result = budget_search(evaluate, rank, Knobs(), 0.01)
    assert result.met and result.best.knobs == good and result.best.exclude == () and result.full_evaluations == 0
    assert "entropy" in result.note


def test_when_no_subset_meets_the_budget_the_best_trial_is_kept_and_it_says_so():
    evaluate, rank, _ = scripted({"missing-from-the-ranking"})
    result = budget_search(evaluate, rank, Knobs(), 0.01)
    assert not result.met and "no subset" in result.note
    assert result.best.stage == "all-float"  # the closest to the budget: every ranked layer in float
    assert result.full_evaluations == 1


def test_plain_int8_that_passes_is_not_searched():
    evaluate, rank, calls = scripted(set())
    result = budget_search(evaluate, rank, Knobs(), 0.01)
    assert result.met and len(calls) == 1 and result.best.stage == "baseline"


def test_ranking_puts_the_lowest_sqnr_first_and_measures_sqnr_in_db():
    layers = rank_layers([LayerError("a", "Conv", "a", 40.0, 0.01), LayerError("b", "Gemm", "b", 2.0, 0.8),
                          LayerError("c", "Gemm", "c", math.inf, 0.0)])
    assert [x.node for x in layers] == ["b", "a", "c"] and [x.rank for x in layers] == [1, 2, 3]
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0) and sqnr_db(1.0, 0.0) == math.inf


def test_a_trial_whose_quantizer_fails_is_a_failed_trial_not_the_end_of_the_search(monkeypatch, tmp_path):
    """On magika a mix of float and int8 layers made the quantizer's smoke run produce NaN: that setting fails, the
    search goes on."""
    from mdeploy.passes.checks.gates import Thresholds
    from mdeploy.passes.core.errors import PassFailed
    from mdeploy.passes.quantize.onnx import QuantizeOnnx
    from mdeploy.passes.workflows.accuracy import LayerSearch

    search = LayerSearch(None, None, QuantizeOnnx(mode="int8"), None, Thresholds(), tmp_path)

    def fails(*_):
        raise PassFailed("the quantized model produces NaN/Inf in output(s) y", "keep those ops in float")

    monkeypatch.setattr(search, "_quantize", fails)
    t = search.evaluate("prefix", Knobs(), ("n1",))
    assert not t.passed and "NaN/Inf" in t.failure and t.score == math.inf and t.exclude == ("n1",)
    better = Trial("prefix", Knobs(), ("n1", "n2"), False, 0.5, None)
    assert better.better_than(t) and not t.better_than(better)


def test_trials_share_calibration_ranges_and_get_the_same_model_as_a_fresh_calibration(tmp_path, digits_converted,
                                                                                       digits_calibration):
    """Excluding layers does not change the calibration ranges, so the search calibrates once per knob setting; a
    cached run must quantize exactly as a fresh one does, and a different method must not hit the cache."""
    import onnx
    from onnx import numpy_helper

    from mdeploy.calibration.sources import DataSpec
    from mdeploy.passes.backends import open_artifact
    from mdeploy.passes.core.pipeline import Context
    from mdeploy.passes.quantize.onnx import QuantizeOnnx

    source = open_artifact(digits_converted / "onnx" / "model.onnx")
    data = DataSpec(str(digits_calibration), take=64)
    cache = tmp_path / "calibration"
    node = next(n.name for n in onnx.load(str(source.path)).graph.node if n.op_type in ("Conv", "MatMul", "Gemm"))

    def run(name: str, cached: bool, **kw):
        ctx = Context(out_dir=tmp_path / name, calibration_cache=cache if cached else None)
        return QuantizeOnnx(mode="int8", calibration=data, **kw).run(source, ctx)

    run("plain", True)
    assert len(list(cache.glob("*.json"))) == 1
    hit = run("hit", True, exclude=(node,))
    assert len(list(cache.glob("*.json"))) == 1, "a trial that only keeps a layer in float re-calibrated"
    fresh = run("fresh", False, exclude=(node,))

    def params(path) -> dict:
        g = onnx.load(str(path)).graph
        return {i.name: numpy_helper.to_array(i).tobytes() for i in g.initializer}, [n.op_type for n in g.node]

    assert params(hit.path) == params(fresh.path)
    run("entropy", True, method="entropy")
    assert len(list(cache.glob("*.json"))) == 2
    # onnxruntime's pre-processing ran once for the three cached runs of the same parent, and nothing half-written is left
    assert [p.name.startswith("pre-") for p in cache.glob("*.onnx")] == [True]
    assert not list(cache.glob(".*partial"))


def test_a_long_prefix_of_harmless_layers_goes_back_to_int8_in_growing_groups():
    """When the ranking puts many harmless layers ahead of a needed one (magika's LayerNorms by their own error), the prefix
    that passes is long; the return stage must still find the needed few, in fewer evaluations than the prefix has
    layers."""
    needed = {"n0", "n24"}
    evaluate, rank, calls = scripted(needed)  # LAYERS in order: n24 is the 25th ranked
    result = budget_search(evaluate, rank, Knobs(), 0.01)
    assert result.met and set(result.best.exclude) == needed
    returns = [c for c in calls if c[0] == "return"]
    prefix = min(len(e) for s, e in calls if s == "prefix" and needed <= set(e))
    assert prefix == 25 and len(returns) < prefix - 1
    assert len(returns) <= 2 * len(needed) * math.log2(prefix / len(needed)) + 2


def test_a_prefix_of_needed_layers_costs_one_return_trial_per_layer():
    needed = {f"n{i}" for i in range(6)}
    evaluate, rank, calls = scripted(needed)
    result = budget_search(evaluate, rank, Knobs(), 0.01)
    assert result.met and set(result.best.exclude) == needed
    assert len([c for c in calls if c[0] == "return"]) <= len(needed) - 1
    assert result.full_evaluations <= math.log2(len(LAYERS)) + len(needed) + 2


def test_weight_ops_only_is_a_knob_and_reaches_the_recipe():
    from mdeploy.passes.quantize.onnx import QuantizeOnnx
    from mdeploy.passes.workflows.accuracy import knob_options, reproducing_recipe, with_knobs

    options = knob_options(QuantizeOnnx(mode="int8"))
    assert Knobs(weight_ops=True) in options and all(not k.weight_ops for k in options if k != Knobs(weight_ops=True))
    chosen = with_knobs(QuantizeOnnx(mode="int8"), Knobs(weight_ops=True), ("n1",))
    assert chosen.weight_ops_only and chosen.exclude == ("n1",)
    text = reproducing_recipe("onnx", chosen, "cal.npz", None, 64, None)
    import tomllib

    from mdeploy.passes.workflows.recipe import QuantizeSettings

    q = tomllib.loads(text)["quantize"]
    assert q["weight_ops_only"] is True and "weight_ops_only" in {f for f in QuantizeSettings.__dataclass_fields__}


def test_a_passing_knob_that_quantizes_everything_beats_weight_ops_only():
    def evaluate(stage, knobs, exclude):
        ok = knobs.weight_ops or knobs.method == "entropy"
        return Trial(stage, knobs, exclude, ok, (0.001 if knobs.weight_ops else 0.009) if ok else 0.5, None)

    result = budget_search(evaluate, lambda k: None, Knobs(), 0.01)
    assert result.met and result.best.knobs == Knobs(method="entropy") and "weight ops" not in result.note

    def only_weight_ops(stage, knobs, exclude):
        return Trial(stage, knobs, exclude, knobs.weight_ops, 0.001 if knobs.weight_ops else 0.5, None)

    result = budget_search(only_weight_ops, lambda k: None, Knobs(), 0.01)
    assert result.best.knobs.weight_ops and "every other op in float" in result.note
