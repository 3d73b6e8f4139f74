"""Small files with huge claims, models a runtime cannot load, and recipe values that cannot work (issue 13):
each ends fast in exit 2 with one error line, with bounded memory and nothing written."""
from __future__ import annotations

import pytest
from safety_harness import (
    build_config_bomb_keras,
    build_external_data_onnx,
    build_unloadable_onnx,
    child_env,
    lines_starting,
    mdeploy_cmd,
    run_mdeploy,
    run_with_memory_cap,
    tiny_optimize_args,
)

GiB = 1 << 30


def _one_error(stderr: str) -> str:
    errors, hints = lines_starting(stderr, "error:"), lines_starting(stderr, "hint:")
    assert len(errors) == 1 and len(hints) == 1, stderr
    assert "Traceback" not in stderr and "MemoryError" not in stderr, stderr
    return errors[0]


def test_external_data_claiming_gigabytes_fails_fast(tmp_path, marker):
    model = build_external_data_onnx(tmp_path / "bloated", claimed_bytes=3 * GiB)
    run = run_with_memory_cap(mdeploy_cmd("simplify", model, "-o", tmp_path / "out" / "b.onnx"), cap_bytes=GiB,
                              timeout=120, env=child_env(marker), workdir=tmp_path)
    assert not run.killed_over_cap, f"peak RSS passed {GiB >> 20} MiB"
    assert run.returncode == 2, run.stderr
    _one_error(run.stderr)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="session")
def config_bomb(tmp_path_factory):
    return build_config_bomb_keras(tmp_path_factory.mktemp("bomb") / "bomb.keras", inflated_bytes=GiB)


def test_keras_config_bomb_fails_fast(config_bomb, tmp_path, marker):
    assert config_bomb.stat().st_size < 16 << 20
    # TensorFlow alone takes about 0.65 GB here: 1.5 GiB leaves room for it, not for the inflated config.
    run = run_with_memory_cap(mdeploy_cmd("inspect", config_bomb), cap_bytes=3 * GiB // 2, timeout=180,
                              env=child_env(marker), workdir=tmp_path)
    assert not run.killed_over_cap, f"peak RSS passed 1.5 GiB ({run.peak_rss >> 20} MiB when stopped)"
    assert run.returncode == 2, run.stderr
    assert "config.json" in _one_error(run.stderr)


def test_simplify_refuses_an_onnx_the_runtime_cannot_load(tmp_path, marker):
    model = build_unloadable_onnx(tmp_path / "bad.onnx")
    out = tmp_path / "out" / "bad.sim.onnx"
    r = run_mdeploy("simplify", model, "-o", out, cwd=tmp_path, env=child_env(marker))
    assert r.returncode == 2, r.stderr
    assert "Frobnicate" in _one_error(r.stderr)
    assert not out.exists()


# (key named in the error, what the tiny recipe's text becomes): each value would fail only after work began
BAD_RECIPE_VALUES = {
    "opset": ("jobs = 1", "jobs = 1\nopset = 999"),  # exited 0 with no ONNX
    "runs": ("enabled = false", "enabled = true\nruns = -1"),  # refused only after a TFLite file was written
}


@pytest.mark.parametrize("key", sorted(BAD_RECIPE_VALUES))
def test_recipe_value_rejected_up_front(key, sandbox, tiny, marker):
    old, new = BAD_RECIPE_VALUES[key]
    recipe = sandbox.parent / f"{key}.toml"
    recipe.write_text(tiny["recipe"].read_text().replace(old, new))
    r = run_mdeploy(*tiny_optimize_args(tiny, sandbox.out, recipe=recipe), cwd=sandbox.cwd, env=child_env(marker))
    assert r.returncode == 2, r.stderr
    assert key in _one_error(r.stderr)
    assert not sandbox.out.exists() or not any(sandbox.out.iterdir())
