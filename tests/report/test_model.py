"""The typed report: schema-1 reports written by the previous mdeploy load, round-trip and keep every key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdeploy.passes.report.model import SCHEMA_VERSION, Report
from mdeploy.passes.report.sections import ArtifactRecord, Bench, Checks, Pruning, Quality, Validation

FIXTURES = Path(__file__).parent / "fixtures"
# v1-report.json: `mdeploy optimize` on the digits sample at commit 2140e0d; v1-commands-report.json: convert,
# quantize, prune, validate and bench into one OUTDIR at the same commit.
V1 = ["v1-report.json", "v1-commands-report.json"]
ADDED_IN_2 = {"schema_version", "verdict"}


@pytest.mark.parametrize("name", V1)
def test_schema_1_report_round_trips_without_losing_a_key(name):
    original = json.loads((FIXTURES / name).read_text())
    assert original["schema_version"] == 1
    report = Report.from_dict(original)
    written = report.to_dict()
    assert written["schema_version"] == SCHEMA_VERSION
    for key, value in original.items():
        if key not in ADDED_IN_2:
            assert written[key] == value, key
    # and the new version reads its own output back exactly
    again = Report.from_json(json.dumps(written))
    assert again == report
    assert again.to_dict() == written


def test_sections_are_typed():
    report = Report.from_dict(json.loads((FIXTURES / "v1-commands-report.json").read_text()))
    kinds = {type(getattr(a, s)) for a in report.artifacts for s in ("checks", "quality", "pruning", "validation", "bench")}
    assert {Checks, Quality, Pruning, Validation, Bench} <= kinds
    int8 = report.artifact("onnx-int8")
    assert isinstance(int8, ArtifactRecord) and 0 < int8.quality.size_ratio < 1
    assert int8.extra["calibration"]["samples"] > 0  # a key the model does not name is kept, not dropped
    assert all(a.sha256 and a.size_bytes > 0 for a in report.artifacts)


def test_v1_verdict_agrees_with_what_v1_wrote():
    original = json.loads((FIXTURES / "v1-report.json").read_text())
    verdict = Report.from_dict(original).verdict
    assert verdict.ok == original["ok"] == original["gate"]["ok"]
    assert verdict.targets == original["gate"]["targets"]
    assert {a["name"]: a["status"] for a in original["artifacts"]} == {k: v.status for k, v in verdict.artifacts.items()}


def test_unknown_keys_survive_at_every_level():
    d = json.loads((FIXTURES / "v1-report.json").read_text())
    d["future_section"] = {"x": 1}
    d["artifacts"][0]["future_field"] = [1, 2]
    d["artifacts"][0]["validation"]["future_metric"] = 0.5
    out = Report.from_dict(d).to_dict()
    assert out["future_section"] == {"x": 1}
    assert out["artifacts"][0]["future_field"] == [1, 2]
    assert out["artifacts"][0]["validation"]["future_metric"] == 0.5


def test_a_report_that_is_not_an_object_is_refused():
    with pytest.raises(ValueError):
        Report.from_dict([])
