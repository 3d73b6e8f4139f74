"""Nothing escapes OUTDIR (issue 13): names that become paths are refused, temporary files stay out of the CWD."""
from __future__ import annotations

import pytest
from safety_harness import (
    DIGITS,
    build_unshaped_onnx,
    child_env,
    lines_starting,
    run_mdeploy,
    tiny_optimize_args,
)


def _assert_refused(r, sandbox, what: str) -> None:
    assert sandbox.escaped() == [], f"{what} wrote outside OUTDIR"
    assert (sandbox.victim / "report.json").read_text() == '{"precious": true}\n'
    assert r.returncode == 2, r.stderr
    assert len(lines_starting(r.stderr, "error:")) == 1 and len(lines_starting(r.stderr, "hint:")) == 1, r.stderr


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_zoo_model_name_cannot_leave_outdir(kind, sandbox, tiny, marker):
    name = "../victim" if kind == "relative" else str(sandbox.victim)
    manifest = sandbox.parent / "zoo.toml"
    manifest.write_text(f'[[model]]\nname = "{name}"\npath = "{tiny["model"]}"\ncalibration = "{tiny["cal"]}"\n'
                        f'validation = "{tiny["val"]}"\nrecipe = "{tiny["recipe"]}"\n')
    sandbox.watch()
    r = run_mdeploy("zoo", manifest, "-o", sandbox.out, "--json", cwd=sandbox.cwd, env=child_env(marker))
    _assert_refused(r, sandbox, f"zoo name {name!r}")


def test_convert_name_cannot_leave_outdir(sandbox, marker):
    sandbox.watch()
    r = run_mdeploy("convert", DIGITS, "--to", "savedmodel", "--name", "../../x", "-o", sandbox.out,
                    cwd=sandbox.cwd, env=child_env(marker))
    _assert_refused(r, sandbox, "convert --name ../../x")


def test_recipe_name_is_validated_before_work(sandbox, tiny, marker):
    # The tiny ONNX never reaches the SavedModel pass that joins `name` to OUTDIR (that escape is in
    # benchmarks/fault_injection.py), but a name that is not one path component must be refused up front anyway.
    recipe = sandbox.parent / "named.toml"
    recipe.write_text(tiny["recipe"].read_text().replace('target = "cloud"', 'target = "cloud"\nname = "../../x"'))
    sandbox.watch()
    r = run_mdeploy(*tiny_optimize_args(tiny, sandbox.out, recipe=recipe),
                    cwd=sandbox.cwd, env=child_env(marker))
    _assert_refused(r, sandbox, "recipe name ../../x")
    assert not sandbox.out.exists() or not any(sandbox.out.iterdir())


def test_quantize_leaves_nothing_in_cwd(sandbox, tmp_path, marker):
    model, cal = build_unshaped_onnx(tmp_path / "unshaped")
    sandbox.watch()
    r = run_mdeploy("quantize", model, "--to", "onnx", "--mode", "int8", "--calibration", cal, "--no-gate", "-o", sandbox.out,
                    cwd=sandbox.cwd, env=child_env(marker))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in sandbox.cwd.iterdir()) == []
    assert sandbox.escaped() == []
