"""`mdeploy report` through the real entry point: every format from a real OUTDIR, -o/--force, bad input."""
from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture(scope="module")
def measured(tmp_path_factory, digits_model, digits_converted, digits_validation):
    """digits converted, validated against the source, and benchmarked (ONNX/TFLite only, to stay fast)."""
    from mdeploy.passes.workflows.bench import bench_models
    from mdeploy.passes.workflows.validate import validate_models

    out = tmp_path_factory.mktemp("measured") / "out"
    shutil.copytree(digits_converted, out)
    onnx, tflite = out / "onnx" / "model.onnx", out / "tflite" / "model.tflite"
    assert validate_models(digits_model, [onnx, tflite, out / "savedmodel" / "digits"], str(digits_validation), out_dir=out)
    bench_models([onnx, tflite], runs=5, warmup=1, out_dir=out)
    return out


def test_table(mdeploy, measured):
    r = mdeploy("report", measured)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.strip().startswith("tflite ★") for line in lines)
    assert any(line.strip().startswith("onnx ★") for line in lines)  # fastest passing cloud artifact
    assert "gate: task defaults" in r.stdout and "classification with labels: accuracy_drop <= 0.01" in r.stdout


def test_json(mdeploy, measured):
    r = mdeploy("report", measured, "--format", "json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert {a["name"] for a in d["artifacts"] if "bench" in a} == {"onnx", "tflite"}


def test_markdown_and_html_files(mdeploy, measured, tmp_path):
    md = tmp_path / "report.md"
    r = mdeploy("report", measured, "--format", "markdown", "-o", md)
    assert r.exit_code == 0 and r.stdout == ""
    text = md.read_text()
    assert "| **tflite ★** |" in text and "✅ ok" in text
    page = tmp_path / "report.html"
    assert mdeploy("report", measured, "-f", "html", "-o", page).exit_code == 0
    assert page.read_text().count("<svg") == 3
    again = mdeploy("report", measured, "-f", "html", "-o", page)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert mdeploy("report", measured, "-f", "html", "-o", page, "--force").exit_code == 0


def test_outdir_without_report_exits_2(mdeploy, tmp_path):
    r = mdeploy("report", tmp_path)
    assert r.exit_code == 2 and "has no report.json" in r.stderr and "hint:" in r.stderr
    assert mdeploy("report", tmp_path / "nope").exit_code == 2


def test_unknown_format_exits_2(mdeploy, measured):
    r = mdeploy("report", measured, "--format", "pdf")
    assert r.exit_code == 2 and "unknown report format" in r.stderr
