"""`bench`: latency, throughput, load time and peak memory of models, each in its own process."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mdeploy.calibration.shapes import InputShapes, with_input_shapes
from mdeploy.passes.backends import open_artifact
from mdeploy.passes.checks.bench import bench
from mdeploy.passes.core.lock import locks_outdir
from mdeploy.passes.report.model import Report
from mdeploy.passes.report.sections import ArtifactRecord
from mdeploy.passes.report.update import add_bench, find_record


@locks_outdir("out_dir", create=False)
def bench_models(models: list[Path], *, batch: int = 1, threads: int | None = None, warmup: int = 10, runs: int = 100,
                 out_dir: Path | None = None, on_stage=None, trusted: bool = False, max_bytes: int | None = None,
                 input_shapes: InputShapes = ()) -> list[dict[str, Any]]:
    """Benchmark each model in its own subprocess; with `out_dir`, add each result to its report.json."""

    report = Report.load(out_dir) if out_dir is not None else None
    artifacts = []
    for m in models:
        a = with_input_shapes(open_artifact(m, trusted=trusted, max_bytes=max_bytes), input_shapes)
        name = str(m)
        if report is not None:
            entry = find_record(report, out_dir, a.path)  # the resolved path (a SavedModel's version dir)
            name = "source" if entry == "source" else (entry.name if entry else name)
            if isinstance(entry, ArtifactRecord) and entry.precision:
                a = dataclasses.replace(a, meta={**a.meta, "precision": entry.precision})
        artifacts.append(dataclasses.replace(a, name=name))
    results = []
    for a in artifacts:
        if on_stage:
            on_stage(a.name)
        results.append(bench(a, batch=batch, threads=threads, warmup=warmup, runs=runs))
    if report is not None:
        for r in results:
            add_bench(report, out_dir, r)
        report.save(out_dir)
    return results
