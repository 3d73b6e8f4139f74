"""`--accuracy-budget` on a corpus model where int8 collapses: magika, Google's content-type classifier (ONNX, from
its wheel). Plain int8 loses most of its accuracy on real files; the search must land inside a 1-point budget with
at most a tenth of its layers in float (or only its non-weight ops), and the end-to-end ranking must put the nodes
that break it (its LayerNorm variance path) first.

Slow, and skipped unless the corpus has magika (python benchmarks/corpus/fetch.py --only magika). The labelled data
is made from files on this machine (benchmarks/corpus/magika_data.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
sys.path.insert(0, str(REPO / "benchmarks" / "corpus"))

from fetch import corpus_dir  # noqa: E402


@pytest.fixture(scope="module")
def magika(tmp_path_factory):
    model = corpus_dir() / "magika.onnx"
    if not model.is_file():
        pytest.skip("magika not in the corpus: python benchmarks/corpus/fetch.py --only magika")
    from magika_data import build

    d = tmp_path_factory.mktemp("magika-data")
    build(d)
    return model, d / "magika_calibration.npz", d / "magika_validation.npz"


def test_budget_is_met_on_magika_where_plain_int8_collapses(magika, mdeploy, tmp_path):
    model, cal, val = magika
    out = tmp_path / "out"
    result = mdeploy("quantize", model, "--to", "onnx", "--calibration", cal, "--validation", val, "--samples", "64",
                     "--accuracy-budget", "0.01", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    a = next(x for x in report["artifacts"] if x["name"] == "onnx-int8")
    s = a["accuracy_search"]
    assert s["trials"][0]["stage"] == "baseline" and s["trials"][0]["accuracy_drop"] > 0.2  # the collapse is real
    assert s["met"] and a["quality"]["accuracy_drop"] <= 0.01 and a["quality"]["passed"]
    chosen = s["chosen"]
    assert chosen["weight_ops_only"] or chosen["kept_float"] <= 0.1 * s["layers"]
    assert (out / s["recipe"]).is_file()


def test_the_end_to_end_ranking_finds_what_breaks_magika(magika, tmp_path):
    """Ranked by each node's own error, the nodes magika needs in float came 40th-46th of 62. Ranked by the outputs
    with each node alone in int8, its first LayerNorm's variance path (the nodes that send 1/sqrt(var + eps) to
    infinity) comes first, well apart from the rest, and keeping just those in float meets the budget."""
    from mdeploy.calibration.sources import DataSpec
    from mdeploy.passes.backends import open_artifact
    from mdeploy.passes.checks.gates import Thresholds
    from mdeploy.passes.quantize.onnx import QuantizeOnnx
    from mdeploy.passes.quantize.search import Knobs
    from mdeploy.passes.workflows.accuracy import LayerSearch

    model, cal, val = magika
    parent = open_artifact(model)
    qpass = QuantizeOnnx(mode="int8", calibration=DataSpec(str(cal), take=64))
    search = LayerSearch(parent, parent, qpass, DataSpec(str(val)), Thresholds(max_accuracy_drop=0.01), tmp_path)
    knobs = Knobs(method="entropy")  # the knob the search ranks with on magika (the least bad one)
    debug = search.rank(knobs)
    layers = debug.layers
    assert len(layers) > 40 and all(x.alone_sqnr_db is not None for x in layers)
    breaking = [x for x in layers if x.alone_sqnr_db < 10]  # alone in int8, the outputs drop under 10 dB
    assert 1 <= len(breaking) <= len(layers) / 5 and layers[:len(breaking)] == breaking
    assert layers[len(layers) // 2].alone_sqnr_db > 20  # the median node alone barely matters
    assert all("LayerNorm" in x.node for x in breaking[:2])
    t = search.evaluate("prefix", knobs, tuple(x.node for x in breaking))
    assert t.passed, t.failure
