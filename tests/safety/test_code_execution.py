"""Code execution is loud (issue 13): every way mdeploy runs model or data code says so on stderr, and a
`module:function` data spec means the same in a zoo manifest as on the command line."""
from __future__ import annotations

import json

from safety_harness import DIGITS, child_env, lines_starting, run_mdeploy


def test_unsafe_keras_flag_warns(tmp_path, marker):
    r = run_mdeploy("--unsafe-keras", "inspect", DIGITS, cwd=tmp_path, env=child_env(marker))
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in lines_starting(r.stderr, "warning:") if "unsafe" in ln.lower() or "safe_mode" in ln]
    assert len(warnings) == 1, r.stderr


def test_unsafe_keras_environment_is_loud(tmp_path, marker):
    r = run_mdeploy("inspect", DIGITS, cwd=tmp_path, env=child_env(marker, MDEPLOY_UNSAFE_KERAS="1"))
    # Either honoured with a warning that names it, or refused with an error that names it; never silent.
    named = [ln for ln in lines_starting(r.stderr, "warning:" if r.returncode == 0 else "error:")
             if "MDEPLOY_UNSAFE_KERAS" in ln]
    assert r.returncode in (0, 2) and len(named) == 1, r.stderr


def test_callable_data_warns(tiny, tmp_path, marker):
    r = run_mdeploy("quantize", tiny["model"], "--to", "onnx", "--mode", "int8", "--calibration", "tiny_data:batches",
                    "--no-gate", "-o", tmp_path / "out", cwd=tiny["data_module_dir"], env=child_env(marker))
    assert r.returncode == 0, r.stderr
    assert [ln for ln in lines_starting(r.stderr, "warning:") if "tiny_data:batches" in ln], r.stderr


def test_callable_data_in_zoo_manifest_as_on_command_line(tiny, tmp_path, marker):
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(f'[[model]]\nname = "tiny"\npath = "{tiny["model"]}"\ncalibration = "tiny_data:batches"\n'
                        f'validation = "{tiny["val"]}"\nrecipe = "{tiny["recipe"]}"\n')
    r = run_mdeploy("zoo", manifest, "-o", tmp_path / "zoo", "--json", cwd=tiny["data_module_dir"], env=child_env(marker))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "zoo" / "tiny" / "report.json").read_text())
    assert "onnx-int8" in {a["name"] for a in report["artifacts"]}, report.get("warnings")
