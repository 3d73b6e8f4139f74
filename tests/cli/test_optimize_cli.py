"""`mdeploy optimize` end to end on the digits sample, its cache, its gate and its recipes."""
from __future__ import annotations

import json

import pytest

FAST_BENCH = """
jobs = 2  # exercise the parallel branch processes whatever the core count

[bench]
runs = 5
warmup = 1
"""


@pytest.fixture(scope="module")
def digits_optimized(tmp_path_factory, digits_model, digits_calibration, digits_validation):
    """One real full run (convert, simplify, quantize, validate, bench, report), shared by the tests below."""
    from mdeploy.cli import run

    work = tmp_path_factory.mktemp("optimize")
    recipe = work / "fast.toml"
    recipe.write_text(FAST_BENCH)
    out = work / "out"
    code = run(["optimize", str(digits_model), "--calibration", str(digits_calibration), "--validation",
                str(digits_validation), "--recipe", str(recipe), "-o", str(out), "--json"])
    return code, out, recipe


def test_full_pipeline_produces_verified_artifacts(digits_optimized):
    code, out, _ = digits_optimized
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    by_name = {a["name"]: a for a in report["artifacts"]}
    assert {"onnx", "onnx-simplified", "onnx-int8", "savedmodel", "tflite", "tflite-int8"} <= set(by_name)
    source_acc = report["source_metrics"]["accuracy"]
    assert source_acc >= 0.95
    for name in ("onnx-int8", "tflite-int8"):
        a = by_name[name]
        assert a["status"] == "ok" and a["precision"] == "int8"
        assert a["validation"]["accuracy_drop"] <= 0.005
        assert a["size_bytes"] <= 0.3 * by_name[name.split("-")[0]]["size_bytes"]
        assert a["bench"]["latency_ms"]["p50"] > 0
    for name in ("onnx", "savedmodel", "tflite"):
        assert by_name[name]["validation"]["max_abs_error"] <= 1e-4
    assert report["gate"]["ok"] and set(report["gate"]["targets"]) == {"cloud", "edge"}
    assert report["source_metrics"]["bench"]["latency_ms"]["p50"] > 0
    assert (out / "report.md").read_text().count("|") > 20
    html = (out / "report.html").read_text()
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_rerun_reuses_every_step(digits_optimized, digits_model, digits_calibration, digits_validation, mdeploy):
    _, out, recipe = digits_optimized
    first = json.loads((out / "report.json").read_text())
    r = mdeploy("optimize", digits_model, "--calibration", digits_calibration, "--validation", digits_validation,
                "--recipe", recipe, "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["steps"] and all(s["cached"] for s in again["steps"])
    assert {a["sha256"] for a in again["artifacts"]} == {a["sha256"] for a in first["artifacts"]}
    assert again["seconds"] < first["seconds"] / 5


def test_gate_rejects_a_model_pruned_too_far(mdeploy, digits_model, digits_calibration, digits_validation, tmp_path):
    r = mdeploy("optimize", digits_model, "--target", "edge", "--sparsity", "0.97", "--calibration", digits_calibration,
                "--validation", digits_validation, "--no-bench", "--jobs", "1", "-o", tmp_path / "o", "--json")
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert r.exit_code == 1, r.stderr
    assert "no edge artifact passed the gate" in r.stderr
    edge = [a for a in report["artifacts"] if a["format"] == "tflite"]
    assert edge and all(a["status"] == "rejected" for a in edge)
    assert all(a["validation"]["accuracy_drop"] > 0.01 for a in edge)
    assert report["steps"][0]["pass"] == "prune.keras"
    int8 = next(a for a in edge if a["precision"] == "int8")
    assert int8["sparsity_survival"]["survived"] and int8["sparsity"] > 0.9  # the zeros outlive quantization


@pytest.mark.parametrize("text,fragment", [
    ("colour = 'blue'\n", "unknown recipe key 'colour'"),
    ("[quantize]\nper_chanel = true\n", "unknown recipe key 'quantize.per_chanel'"),
    ("jobs = 'two'\n", "recipe key 'jobs' must be int"),
    ("[prune]\nsparsity = 1.5\n", "sparsity must be in [0, 1)"),
    ("target = [\n", "not valid TOML"),
])
def test_bad_recipes_name_the_key(mdeploy, digits_model, tmp_path, text, fragment):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    r = mdeploy("optimize", digits_model, "--recipe", recipe, "-o", tmp_path / "o")
    assert r.exit_code == 2 and fragment in r.stderr and "hint:" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_shipped_recipes_parse():
    from pathlib import Path

    from mdeploy.passes.workflows.recipe import load_recipe

    recipes = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.toml"))
    assert len(recipes) >= 3
    parsed = {p.stem: load_recipe(p) for p in recipes}
    assert parsed["cloud-only"].target == "cloud"
    assert parsed["edge-2of4"].prune.pattern == "2:4" and parsed["edge-2of4"].prune.sparsity == 0.5
    assert parsed["edge-int8"].quantize.tflite == ("int8",)


def test_cli_flags_override_the_recipe(tmp_path):
    from mdeploy.passes.workflows.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text("target = 'edge'\ncalibration = 'data/cal.npz'\n[prune]\nsparsity = 0.5\n")
    r = load_recipe(recipe, {"target": "cloud", "prune.sparsity": 0.25, "jobs": None})
    assert r.target == "cloud" and r.prune.sparsity == 0.25 and r.jobs is None  # None: chosen by core count
    assert r.calibration == str((tmp_path / "data" / "cal.npz").resolve())  # relative to the recipe file


def test_onnx_source_gets_the_cloud_chain(mdeploy, digits_converted, digits_validation, tmp_path):
    r = mdeploy("optimize", digits_converted / "onnx" / "model.onnx", "--target", "cloud", "--calibration",
                digits_validation, "--validation", digits_validation, "--no-bench", "-o", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    names = {a["name"]: a for a in report["artifacts"]}
    assert set(names) == {"onnx-simplified", "onnx-int8"}
    assert names["onnx-int8"]["validation"]["accuracy_drop"] <= 0.01


def test_without_calibration_int8_is_skipped_with_a_warning(mdeploy, digits_model, tmp_path):
    r = mdeploy("optimize", digits_model, "--target", "edge", "--no-bench", "-o", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert [a["name"] for a in report["artifacts"]] == ["tflite"]
    assert any("static int8 quantization skipped" in w for w in report["warnings"])
    assert any("accuracy was NOT validated" in w for w in report["warnings"])


def test_tflite_source_is_refused_with_a_route(mdeploy, digits_converted, tmp_path):
    r = mdeploy("optimize", digits_converted / "tflite" / "model.tflite", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "not TFLite" in r.stderr and "--to onnx" in r.stderr


def test_image_directories_calibrate_and_validate(mdeploy, digits_validation, digits_model, tmp_path):
    """A folder of PNGs in class sub-folders: preprocessing flags from a recipe, labels from the folder names."""
    import numpy as np
    from PIL import Image

    with np.load(digits_validation) as z:
        images, labels = z["image"][:120], z["labels"][:120]
    root = tmp_path / "images"
    for i, (img, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img[..., 0] * 255).astype(np.uint8), mode="L").save(root / str(label) / f"{i}.png")
    recipe = tmp_path / "images.toml"
    recipe.write_text('target = "edge"\n[images]\nscale = "1/255"\ncolor = "gray"\n[bench]\nenabled = false\n')
    r = mdeploy("optimize", digits_model, "--recipe", recipe, "--calibration", root, "--validation", root,
                "-o", tmp_path / "o", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["source_metrics"]["accuracy"] >= 0.95  # labels came from the folder names
    int8 = next(a for a in report["artifacts"] if a["name"] == "tflite-int8")
    assert int8["validation"]["accuracy_drop"] <= 0.02
    bad = mdeploy("optimize", digits_model, "--recipe", recipe, "--image-layout", "HWCN", "-o", tmp_path / "b")
    assert bad.exit_code == 2 and "HWCN" in bad.stderr
