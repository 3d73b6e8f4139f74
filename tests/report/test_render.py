"""Renderings of report.json: the comparison rows, Markdown, HTML, and the HTML in a real headless Chromium."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mdeploy.passes.report.model import Report
from mdeploy.passes.report.render import comparison_rows, to_html, to_markdown, to_table

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def bench(p50: float, batch: int = 1) -> dict:
    return {"batch": batch, "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3}}


def sample_report() -> Report:
    """What convert, quantize, prune, validate and bench would have written, including gaps and failures."""
    return Report.from_dict({
        "source": {"path": "digits.keras", "format": "keras", "size_bytes": 400_000},
        "artifacts": [
            {"name": "savedmodel", "format": "savedmodel", "size_bytes": 200_000, "precision": "float32",
             "checks": {"passed": True}, "validation": {"passed": True, "accuracy": 0.99, "accuracy_drop": 0.0},
             "bench": bench(0.6)},
            {"name": "onnx", "format": "onnx", "size_bytes": 160_000, "precision": "float32", "checks": {"passed": True},
             "validation": {"passed": True, "accuracy": 0.99, "accuracy_drop": 0.0}, "bench": bench(0.05)},
            {"name": "onnx.int8", "format": "onnx", "size_bytes": 40_000, "precision": "int8", "checks": {"passed": True},
             "quality": {"accuracy": 0.97, "accuracy_drop": 0.02, "size_ratio": 0.25},
             "validation": {"passed": False, "accuracy": 0.97, "accuracy_drop": 0.02,
                            "failures": [{"candidate": "onnx.int8", "metric": "accuracy_drop", "value": 0.02, "threshold": 0.01}]},
             "bench": bench(0.02)},
            {"name": "tflite", "format": "tflite", "size_bytes": 160_000, "checks": {"passed": True},
             "validation": {"passed": True, "accuracy": 0.99, "accuracy_drop": 0.0}, "bench": bench(0.03)},
            {"name": "tflite.int8", "format": "tflite", "size_bytes": 45_000, "precision": "int8",
             "checks": {"passed": True}, "quality": {"accuracy": 0.985, "accuracy_drop": 0.005},
             "validation": {"passed": True, "accuracy": 0.985, "accuracy_drop": 0.005}, "bench": bench(0.01)},
            {"name": "pruned", "format": "keras", "size_bytes": 380_000, "sparsity": 0.5},  # no checks at all
        ],
        "source_metrics": {"accuracy": 0.99, "bench": bench(5.0)},
        "validation_thresholds": {"max_accuracy_drop": 0.01, "min_agreement": 0.99, "max_abs_error": None, "min_sqnr": None},
        "bench_machine": {"cpu": "Test CPU", "logical_cores": 2, "os": "Linux"},
    })


def test_rows_compute_ratios_speedups_and_the_best_per_target():
    rows = {r["name"]: r for r in comparison_rows(sample_report())}
    assert list(rows)[0] == "source" and rows["source"]["accuracy"] == 0.99
    assert rows["onnx"]["size_ratio"] == pytest.approx(0.4)
    assert rows["onnx"]["speedup"] == pytest.approx(100.0)
    # a gate failure rejects the artifact and names the metric, its value and the bound
    assert rows["onnx.int8"]["status"] == "rejected" and rows["onnx.int8"]["why"] == "accuracy_drop = 0.02 > max 0.01"
    # onnx.int8 is fastest but failed the gate, so the best cloud artifact is float onnx
    assert [n for n, r in rows.items() if r["best"]] == ["onnx", "tflite.int8"]
    assert rows["pruned"]["status"] == "-" and rows["pruned"]["sparsity"] == 0.5 and rows["pruned"]["latency_ms"] is None
    assert rows["tflite"]["precision"] == "float32"


def test_missing_sections_are_tolerated():
    report = Report.from_dict({"source": {}, "artifacts": [{"name": "x"}]})
    rows = comparison_rows(report)
    assert [r["name"] for r in rows] == ["source", "x"]
    assert "| x |" in to_markdown(report)
    assert "<svg" in to_html(report)
    assert to_table(report).row_count == 2


def test_table_marks_best_and_has_a_row_per_artifact():
    table = to_table(sample_report())
    assert table.row_count == 7
    names = list(table.columns[0].cells)
    assert names[2] == "onnx ★" and names[5] == "tflite.int8 ★"


def test_markdown_fits_a_pr_comment():
    md = to_markdown(sample_report())
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| artifact"))
    assert set(lines[header + 1]) <= set("|-:")
    assert sum(line.startswith("| ") for line in lines) == 8  # header + source + 6 artifacts
    assert "| **onnx ★** |" in md and "❌ rejected (accuracy_drop = 0.02 > max 0.01)" in md
    assert "gate: max-accuracy-drop 0.01, min-agreement 0.99" in md and "Overall: **FAILED**" in md
    assert len(md) < 65536


def test_html_is_self_contained():
    page = to_html(sample_report())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"(src|href)\s*=|https?://(?!www\.w3\.org/2000/svg)|<script|@import|url\(", page)
    assert page.count("<svg") == 3 and page.count('class="bar') == 7 + 6 + 6  # "pruned" has a size but no latency or accuracy


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the system Chromium at /usr/bin/chromium (apt-get install chromium chromium-driver)")
def test_html_renders_in_headless_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
    page_path = tmp_path / "report.html"
    page_path.write_text(to_html(sample_report()))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, java_script_enabled=False)
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri())
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            bars = page.locator("svg.chart rect.bar")
            widths = [bars.nth(i).bounding_box()["width"] for i in range(bars.count())]
            charts = page.locator("svg.chart")
            chart_boxes = [charts.nth(i).bounding_box() for i in range(charts.count())]
            rows = page.locator("#comparison tbody tr")
            row_texts = [rows.nth(i).inner_text() for i in range(rows.count())]
            best = page.locator("#comparison tr.best").all_inner_texts()
            titles = page.locator("svg.chart .chart-title").all_text_contents()  # SVG text has no innerText
        finally:
            browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert requests == [page_path.as_uri()]  # nothing fetched beyond the file itself
    assert len(widths) == 19 and all(w > 0 for w in widths)
    assert max(widths) > 100  # the longest bar spans most of its chart
    assert len(chart_boxes) == 3 and all(b["width"] > 200 and b["height"] > 100 for b in chart_boxes)
    assert [t.split("(")[0].strip() for t in titles] == ["Size", "Latency p50", "Accuracy"]
    assert len(row_texts) == 7 and row_texts[0].startswith("source")
    assert any("rejected (accuracy_drop = 0.02 > max 0.01)" in t for t in row_texts)
    assert [b.split()[0] for b in best] == ["onnx", "tflite.int8"]
    shutil.copy(tmp_path / "report.png", Path(tmp_path.parent) / "report_render_screenshot.png")
