"""bench(): numbers are produced and sane on real runtimes. A benchmark, not a test of speed."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mdeploy.passes.backends import open_artifact
from mdeploy.passes.checks.bench import bench, machine
from mdeploy.passes.core.errors import BadInput


def assert_sane(r: dict, batch: int, runs: int) -> None:
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["throughput_per_s"] > 0 and r["load_seconds"] > 0
    assert r["peak_rss_bytes"] >= r["baseline_rss_bytes"] > 0
    assert r["batch"] == batch and r["runs"] == runs
    assert r["machine"]["cpu"] and r["machine"]["logical_cores"] >= 1
    json.dumps(r)  # JSON-ready


def test_bench_onnx(digits_converted):
    r = bench(open_artifact(digits_converted / "onnx" / "model.onnx"), runs=5, warmup=1)
    assert_sane(r, 1, 5)
    assert r["format"] == "onnx" and r["runtime"].startswith("onnxruntime")
    assert r["peak_rss_bytes"] < 2 * 1024**3  # its own process: TensorFlow in this one is not charged to it


def test_bench_tflite_batched_with_threads(digits_converted):
    r = bench(open_artifact(digits_converted / "tflite" / "model.tflite"), batch=4, threads=1, runs=5, warmup=1)
    assert_sane(r, 4, 5)
    assert r["threads"] == 1 and r["runtime"].startswith("ai-edge-litert")


def test_bench_of_onnx_does_not_import_tensorflow(digits_converted):
    code = ("import sys; from mdeploy.passes.checks.bench import bench; from mdeploy.passes.backends import open_artifact; "
            f"r = bench(open_artifact({str(digits_converted / 'onnx' / 'model.onnx')!r}), runs=2, warmup=0); "
            "assert r['latency_ms']['p50'] > 0; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"batch": 0}, {"warmup": -1}, {"threads": 0}])
def test_bad_settings_are_bad_input(digits_converted, kwargs):
    with pytest.raises(BadInput):
        bench(open_artifact(digits_converted / "onnx" / "model.onnx"), **kwargs)


def test_machine_names_the_cpu():
    m = machine()
    assert isinstance(m["cpu"], str) and m["cpu"]
    assert m["logical_cores"] >= 1 and m["memory_bytes"] > 0
