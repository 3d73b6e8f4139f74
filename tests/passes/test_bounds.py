"""The gate's bounds are declared once (passes/checks/bounds.py): every holder of bounds has exactly those fields,
the CLI, recipes and zoo manifests take exactly those keys, and each checks the values the same way."""
from __future__ import annotations

import dataclasses

import pytest

from mdeploy.passes.checks import gates
from mdeploy.passes.checks.bounds import BOUND_NAMES, BOUNDS, Bound, bounds_of, check_bounds, with_bounds
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.report import sections
from mdeploy.passes.report.verdict import FLAG_OF
from mdeploy.passes.workflows.recipe import ValidateSettings, load_recipe
from mdeploy.passes.workflows.zoo_manifest import ZooModel, load_manifest


@pytest.mark.parametrize("holder", [gates.Thresholds, ValidateSettings, ZooModel, sections.Thresholds])
def test_every_holder_has_the_declared_bounds(holder):
    fields = {f.name: f for f in dataclasses.fields(holder)}
    held = [name for name in fields if "bound" in fields[name].metadata]
    assert held == list(BOUND_NAMES)
    assert all(fields[b.name].metadata["bound"] is b and fields[b.name].default is None for b in BOUNDS)


def test_metrics_and_flags_derive_from_the_declaration():
    assert gates.GATED == {b.name: (b.metric, b.direction) for b in BOUNDS}
    assert all(FLAG_OF[b.metric] == b.name for b in BOUNDS)
    assert [b.flag for b in BOUNDS] == ["--max-accuracy-drop", "--min-agreement", "--max-abs-error", "--min-sqnr",
                                        "--max-rel-error"]


def test_a_new_bound_would_reach_a_holder_through_the_decorator():
    @dataclasses.dataclass(frozen=True)
    @with_bounds
    class Holder:
        own: int = 0

    h = Holder(own=1, min_sqnr=3.0)
    assert [f.name for f in dataclasses.fields(Holder)] == [*BOUND_NAMES, "own"]
    assert bounds_of(h) == {**dict.fromkeys(BOUND_NAMES), "min_sqnr": 3.0}
    with pytest.raises(TypeError, match="min_sqnr"):
        @with_bounds
        class Clash:
            min_sqnr: float = 1.0


def test_report_thresholds_round_trip_unchanged():
    d = {"max_accuracy_drop": 0.01, "min_sqnr": None, "something_newer": 1}
    assert sections.Thresholds.from_dict(d).to_dict() == d


@pytest.mark.parametrize("value,message", [(1.5, "between 0 and 1"), (-0.1, "between 0 and 1"), ("x", "number"),
                                           (True, "number"), (float("nan"), "number")])
def test_bad_values_are_bad_input_naming_where(value, message):
    with pytest.raises(BadInput, match=f"--min-agreement must be .*{message}"):
        check_bounds({"min_agreement": value})
    with pytest.raises(BadInput, match="recipe key 'validate.min_agreement' must be"):
        check_bounds({"min_agreement": value}, "recipe key 'validate.")


def test_recipe_and_manifest_check_bounds(tmp_path, digits_model):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[validate]\nmax_abs_error = -1.0\n")
    with pytest.raises(BadInput, match="recipe key 'validate.max_abs_error' must be at least 0"):
        load_recipe(recipe)
    assert load_recipe(None, {"validate.min_sqnr": -3.0}).validate.min_sqnr == -3.0  # dB may be negative
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(f'[defaults]\nmin_sqnr = 25\n[[model]]\npath = "{digits_model}"\nmax_accuracy_drop = "1%"\n')
    with pytest.raises(BadInput, match=r"model\[0\].max_accuracy_drop must be a number"):
        load_manifest(manifest)
    manifest.write_text(f'[defaults]\nmin_agreement = 2\n[[model]]\npath = "{digits_model}"\n')
    with pytest.raises(BadInput, match=r"defaults.min_agreement must be between 0 and 1"):
        load_manifest(manifest)


def test_cli_flags_come_from_the_declaration(mdeploy, digits_model, digits_validation):
    for command in ("optimize", "quantize", "validate"):
        r = mdeploy(command, "--help")
        assert r.exit_code == 0
        assert all(b.flag in r.stdout for b in BOUNDS), command
    r = mdeploy("validate", digits_model, digits_model, "--data", digits_validation, "--min-agreement", "1.5")
    assert r.exit_code == 2 and "error: --min-agreement must be between 0 and 1, got 1.5" in r.stderr, r.stderr


def test_bound_check_accepts_ints_and_none():
    b = Bound("max_x", "x", "max", help="", low=0.0)
    assert b.check(None, "--max-x") is None and b.check(2, "--max-x") == 2.0
