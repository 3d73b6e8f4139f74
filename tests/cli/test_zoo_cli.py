"""`mdeploy zoo`: isolation per model, failures reported, cached re-runs, sharding and merging."""
from __future__ import annotations

import json
import re
import time

import pytest

from mdeploy.passes.workflows.zoo_manifest import load_manifest, parse_shard, shard

FAST = "[bench]\nruns = 5\nwarmup = 1\n"


def _manifest(tmp_path, samples, extra_models: str = "") -> tuple:
    (tmp_path / "fast.toml").write_text(FAST)
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 this zip was cut short")
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(f"""
[defaults]
recipe = "fast.toml"
target = "edge"

[[model]]
name = "digits"
path = "{samples}/digits.keras"
calibration = "{samples}/digits_calibration.npz"
validation = "{samples}/digits_validation.npz"

[[model]]
name = "broken"
path = "broken.keras"
calibration = "random"
{extra_models}
""")
    return manifest


def test_zoo_reports_the_corrupt_model_and_reuses_the_good_one(mdeploy, tmp_path, digits_model):
    manifest = _manifest(tmp_path, digits_model.parent)
    out = tmp_path / "zoo"
    t0 = time.perf_counter()
    r = mdeploy("zoo", manifest, "-o", out, "--jobs", "2", "--json")
    first_seconds = time.perf_counter() - t0
    assert r.exit_code == 1, r.stderr
    summary = json.loads(r.stdout)
    rows = {m["name"]: m for m in summary["models"]}
    assert rows["digits"]["status"] == "ok" and rows["broken"]["status"] == "failed"
    assert "not a loadable Keras model" in rows["broken"]["reason"] or "broken.keras" in rows["broken"]["reason"]
    assert "broken" in r.stderr and "1 of 2 models failed" in r.stderr
    best = rows["digits"]["best"]["edge"]
    assert best["format"] == "tflite" and best["size_bytes"] > 0 and best["p50_ms"] > 0
    assert (out / "digits" / "report.json").is_file()
    for suffix in (".json", ".md", ".html"):
        assert (out / f"zoo-summary{suffix}").is_file()
    assert "| digits | ok" in (out / "zoo-summary.md").read_text()

    t0 = time.perf_counter()
    again = mdeploy("zoo", manifest, "-o", out, "--jobs", "2", "--json")
    second_seconds = time.perf_counter() - t0
    rows2 = {m["name"]: m for m in json.loads(again.stdout)["models"]}
    assert rows2["digits"]["cached"] and rows2["digits"]["best"] == rows["digits"]["best"]
    assert again.exit_code == 1 and rows2["broken"]["status"] == "failed"
    # The broken model is retried each time (it failed), but that costs one process start, not a pipeline.
    assert second_seconds < first_seconds / 3


def test_manifest_paths_resolve_against_its_folder_and_bad_keys_are_named(tmp_path, digits_model):
    manifest = _manifest(tmp_path, digits_model.parent)
    models = load_manifest(manifest).models
    assert [m.name for m in models] == ["digits", "broken"]
    assert models[1].path == tmp_path / "broken.keras" and models[1].recipe == tmp_path / "fast.toml"
    assert models[1].target == "edge"  # from [defaults]
    bad = tmp_path / "bad.toml"
    bad.write_text("[[model]]\npath = 'a.keras'\nflavour = 'x'\n")
    from mdeploy.passes.core.errors import BadInput

    with pytest.raises(BadInput, match="model\\[0\\].flavour"):
        load_manifest(bad)


def test_sharding_is_a_deterministic_partition(tmp_path):
    from mdeploy.passes.workflows.zoo_manifest import ZooModel

    models = [ZooModel(name=f"m{i}", path=tmp_path / f"m{i}.keras") for i in range(20)]
    shards = [shard(models, (i, 3)) for i in (1, 2, 3)]
    names = [m.name for s in shards for m in s]
    assert sorted(names) == sorted(m.name for m in models)  # every model exactly once
    assert [m.name for m in shard(models, (2, 3))] == [m.name for m in shards[1]]  # same answer every time
    assert shard(models[:5], (1, 3)) == [m for m in shards[0] if m.name in {x.name for x in models[:5]}]
    assert parse_shard("2/4") == (2, 4)
    from mdeploy.passes.core.errors import BadInput

    for bad in ("0/2", "3/2", "a/b", "1"):
        with pytest.raises(BadInput):
            parse_shard(bad)


def test_zoo_merge_combines_shards(mdeploy, tmp_path):
    from mdeploy.passes.report.zoo_summary import write_summary

    a, b = tmp_path / "a", tmp_path / "b"
    write_summary(a, [{"name": "x", "status": "ok", "seconds": 1.0, "reason": "", "cached": False, "best": {}}], (1, 2))
    write_summary(b, [{"name": "y", "status": "failed", "seconds": 2.0, "reason": "boom", "cached": False, "best": {}}], (2, 2))
    r = mdeploy("zoo-merge", a, b, "-o", tmp_path / "all", "--json")
    assert r.exit_code == 1 and "y (boom)" in r.stderr
    merged = json.loads((tmp_path / "all" / "zoo-summary.json").read_text())
    assert [m["name"] for m in merged["models"]] == ["x", "y"] and merged["ok"] is False


@pytest.mark.slow
def test_zoo_with_pruned_recipe_and_mobilenet(mdeploy, tmp_path, digits_model, mobilenet_model):
    """The issue's zoo: digits, a pruned recipe of it, MobileNetV2 and one corrupt file, with --jobs 2."""
    from pathlib import Path

    mobilenet = mobilenet_model
    samples = digits_model.parent
    extra = f"""
[[model]]
name = "digits-pruned"
path = "{samples}/digits.keras"
recipe = "{Path(__file__).resolve().parents[2]}/recipes/edge-2of4.toml"
calibration = "{samples}/digits_calibration.npz"
validation = "{samples}/digits_validation.npz"

[[model]]
name = "mobilenet_v2"
path = "{mobilenet}"
calibration = "random"
target = "all"
"""
    manifest = _manifest(tmp_path, samples, extra)
    out = tmp_path / "zoo"
    t0 = time.perf_counter()
    r = mdeploy("zoo", manifest, "-o", out, "--jobs", "2", "--json")
    first = time.perf_counter() - t0
    rows = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert r.exit_code == 1
    assert {n for n, m in rows.items() if m["status"] == "ok"} == {"digits", "digits-pruned", "mobilenet_v2"}, rows
    assert rows["broken"]["status"] == "failed"
    t0 = time.perf_counter()
    mdeploy("zoo", manifest, "-o", out, "--jobs", "2", "--json")
    second = time.perf_counter() - t0
    assert second * 10 <= first, (first, second)


def test_manifest_resources_are_validated_and_kept_out_of_the_cache_key(tmp_path):
    from mdeploy.passes.core.errors import BadInput

    (tmp_path / "m.onnx").write_bytes(b"model")
    manifest = tmp_path / "zoo.toml"
    manifest.write_text('[defaults]\nmemory = "2GB"\n\n[[model]]\nname = "x"\npath = "m.onnx"\nnum_cpus = 0.5\n\n'
                        '[[model]]\nname = "y"\npath = "m.onnx"\nmemory = 3221225472\n')
    x, y = load_manifest(manifest).models
    assert (x.num_cpus, x.memory) == (0.5, 2 << 30) and (y.num_cpus, y.memory) == (None, 3 << 30)
    # where a model runs is not what it produces: the reservation leaves the cache key alone
    assert x.cache_key("v") == y.cache_key("v")
    assert "--memory" not in " ".join(x.optimize_args(tmp_path)) and "num" not in " ".join(x.optimize_args(tmp_path))
    for bad, named in (('num_cpus = 0', "model[0].num_cpus"), ('num_cpus = "two"', "model[0].num_cpus"),
                       ('memory = "lots"', "model[0].memory"), ('memory = 4', "model[0].memory"),
                       ('memory = -1', "model[0].memory")):
        manifest.write_text(f'[[model]]\npath = "m.onnx"\n{bad}\n')
        with pytest.raises(BadInput, match=re.escape(named)):
            load_manifest(manifest)
    manifest.write_text('[defaults]\nnum_cpus = -2\n\n[[model]]\npath = "m.onnx"\n')
    with pytest.raises(BadInput, match="defaults.num_cpus"):
        load_manifest(manifest)


def test_ray_reservation_is_estimated_capped_and_refused_when_no_node_fits(tmp_path):
    from mdeploy.passes.core.errors import EnvironmentProblem
    from mdeploy.passes.workflows.zoo_manifest import ZooModel
    from mdeploy.passes.workflows.zoo_ray import Capacity, estimate_memory, reservation

    (tmp_path / "m.keras").write_bytes(b"\0" * 1000)
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"\0" * 300)
    (saved / "variables" / "v.data").write_bytes(b"\0" * 700)
    model = ZooModel(name="m", path=tmp_path / "m.keras")
    assert estimate_memory(model) == (1 << 30) + 128 * 1000  # 1 GiB + 128 x the file
    assert estimate_memory(ZooModel(name="s", path=saved)) == (1 << 30) + 128 * 1000  # a directory: all its files
    big = Capacity(cpus=4, memory=8 << 30, nodes=2)
    r = reservation(model, big)
    assert (r.num_cpus, r.memory, r.estimated) == (1.0, estimate_memory(model), True)
    assert reservation(model, Capacity(cpus=4, memory=512 << 20, nodes=1)).memory == 512 << 20  # an estimate is capped
    assert reservation(ZooModel(name="m", path=model.path, num_cpus=2, memory=4 << 30), big).memory == 4 << 30
    with pytest.raises(EnvironmentProblem, match="reserves 8 CPUs; the largest Ray node has 4"):
        reservation(ZooModel(name="m", path=model.path, num_cpus=8), big)
    with pytest.raises(EnvironmentProblem, match="reserves 16.0 GB of memory"):  # a stated need is never shrunk
        reservation(ZooModel(name="m", path=model.path, memory=16 << 30), big)


def test_zoo_backend_options_are_checked_before_anything_runs(mdeploy, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"model")
    manifest = tmp_path / "zoo.toml"
    manifest.write_text('[[model]]\npath = "m.onnx"\n')
    out = tmp_path / "out"
    for args, message in ((["--backend", "spark"], "unknown --backend 'spark'"),
                          (["--address", "10.0.0.1:6379"], "--address needs --backend ray"),
                          (["--backend", "ray", "--address", "10.0.0.1:6379", "--jobs", "2"], "--jobs sizes a Ray instance"),
                          (["--backend", "ray", "--jobs", "0"], "--jobs must be at least 1"),
                          (["--backend", "ray", "--address", "127.0.0.1:9"], "no Ray cluster answers at 127.0.0.1:9")):
        r = mdeploy("zoo", manifest, "-o", out, *args, "--json")
        assert r.exit_code == 2 and message in r.stderr and r.stdout == "", (args, r.stderr)
    assert not (out / "m").exists()


def test_zoo_help_shows_the_ray_backend_without_importing_ray():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mdeploy.cli", "zoo", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--backend" in proc.stdout and "--address" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "mdeploy.cli" in imported and not any(m == "ray" or m.startswith("ray.") for m in imported)
