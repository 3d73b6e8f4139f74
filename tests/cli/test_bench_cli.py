"""`mdeploy bench` through the real entry point: numbers produced and sane, --json, report.json updated."""
from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture
def outdir(tmp_path, digits_converted):
    out = tmp_path / "out"
    shutil.copytree(digits_converted, out)
    return out


def test_bench_json_and_report(mdeploy, outdir):
    r = mdeploy("bench", outdir / "onnx" / "model.onnx", outdir / "tflite" / "model.tflite",
                "--runs", "5", "--warmup", "1", "--batch", "2", "--json", "-o", outdir)
    assert r.exit_code == 0, r.stderr
    results = json.loads(r.stdout)
    assert [x["name"] for x in results] == ["onnx", "tflite"]
    for x in results:
        lat = x["latency_ms"]
        assert 0 < lat["p50"] <= lat["p99"] and x["throughput_per_s"] > 0 and x["peak_rss_bytes"] > 0
        assert x["batch"] == 2 and x["runs"] == 5
        assert x["baseline_rss_bytes"] < x["runtime_rss_bytes"] <= x["peak_rss_bytes"]  # importing the runtime costs
    report = json.loads((outdir / "report.json").read_text())
    records = {a["name"]: a for a in report["artifacts"]}
    assert records["onnx"]["bench"]["latency_ms"]["p50"] == results[0]["latency_ms"]["p50"]
    assert records["onnx"]["bench"]["runtime_rss_bytes"] == results[0]["runtime_rss_bytes"]
    assert "bench" in records["tflite"] and "bench" not in records["savedmodel"]
    assert report["bench_machine"]["logical_cores"] >= 1


def test_bench_table(mdeploy, digits_converted):
    r = mdeploy("bench", digits_converted / "onnx" / "model.onnx", "--runs", "3", "--warmup", "0", "--threads", "1")
    assert r.exit_code == 0, r.stderr
    assert "p50 ms" in r.stdout and "machine:" in r.stdout and "threads 1" in r.stdout


def test_bench_bad_input_exits_2(mdeploy, tmp_path, digits_converted):
    assert mdeploy("bench", tmp_path / "missing.onnx").exit_code == 2
    assert mdeploy("bench", digits_converted / "onnx" / "model.onnx", "--runs", "0").exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    r = mdeploy("bench", digits_converted / "onnx" / "model.onnx", "--runs", "2", "-o", empty)
    assert r.exit_code == 2 and "has no report.json" in r.stderr


@pytest.mark.slow
def test_mobilenet_float_and_int8_bench_numbers_are_sane(mdeploy, mobilenet_model, tmp_path):
    """The int8-vs-float speed claim is a benchmark (benchmarks/int8_speedup.py, figures in the README), not a
    timed test: here only that every artifact of the MobileNetV2 chain is measured and the numbers are sane."""
    out = tmp_path / "mnv2"
    assert mdeploy("convert", mobilenet_model, "--to", "onnx,tflite", "-o", out).exit_code == 0
    for target in ("onnx", "tflite"):
        r = mdeploy("quantize", mobilenet_model, "--to", target, "--mode", "int8", "--calibration", "random",
                    "--samples", "32", "-o", out)
        assert r.exit_code == 0, r.stderr
    paths = [out / "onnx" / "model.onnx", out / "onnx" / "model.int8.onnx",
             out / "tflite" / "model.tflite", out / "tflite" / "model.int8.tflite"]
    r = mdeploy("bench", *paths, "--runs", "10", "--warmup", "2", "--json", "-o", out)
    assert r.exit_code == 0, r.stderr
    results = json.loads(r.stdout)
    assert [x["precision"] for x in results] == ["float32", "int8", "float32", "int8"]
    for x in results:
        lat = x["latency_ms"]
        assert 0 < lat["p50"] <= lat["p99"] and x["throughput_per_s"] > 0 and x["peak_rss_bytes"] > 0
