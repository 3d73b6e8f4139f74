"""`validate`: a reference and candidates on the same data, each on its own runtime, compared and gated."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from mdeploy.calibration import open_source
from mdeploy.calibration.shapes import InputShapes, with_input_shapes
from mdeploy.passes.backends import open_artifact
from mdeploy.passes.checks.gates import Thresholds
from mdeploy.passes.checks.validate import ValidationResult, validate
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.lock import locks_outdir
from mdeploy.passes.report.model import Report
from mdeploy.passes.report.sections import ArtifactRecord
from mdeploy.passes.report.update import add_validation, find_record, record_name


@locks_outdir("out_dir", create=False)
def validate_models(reference: Path, candidates: list[Path], data: str, thresholds: Thresholds = Thresholds(), *,
                    out_dir: Path | None = None, batch_size: int = 64, limit: int | None = None,
                    threads: int | None = None, trusted: bool = False, max_bytes: int | None = None,
                 input_shapes: InputShapes = ()) -> ValidationResult:
    """Open the models and the data, validate, and (with `out_dir`) add the results to its report.json.

    Candidates are named by their record in OUTDIR's report when they are in it, else by the path as given.
    """

    if batch_size < 1 or (limit is not None and limit < 1):
        raise BadInput("--batch-size and --limit must be at least 1", "pass positive numbers")
    report = Report.load(out_dir) if out_dir is not None else None  # BadInput when OUTDIR has no report.json
    names: dict[str, Path] = {}

    def label(path: Path, given: Path) -> str:
        name = (record_name(report, out_dir, path) if report is not None else None) or str(given)
        base, i = name, 2
        while name in names:
            name, i = f"{base}#{i}", i + 1
        names[name] = Path(path)
        return name

    ref = with_input_shapes(open_artifact(reference, trusted=trusted, max_bytes=max_bytes), input_shapes)  # its .path is the resolved one (a SavedModel's version directory)
    ref = dataclasses.replace(ref, name=(record_name(report, out_dir, ref.path) if report else None) or str(reference))
    opened = [open_artifact(c, trusted=trusted, max_bytes=max_bytes) for c in candidates]
    opened = [with_input_shapes(a, tuple((n, d) for n, d in input_shapes if n in {t.name for t in a.inputs}))
              for a in opened]
    cands = [dataclasses.replace(a, name=label(a.path, p), meta={**a.meta, **_precision(report, out_dir, a.path)})
             for a, p in zip(opened, candidates)]
    source = open_source(data, ref.inputs, batch_size=batch_size)
    result = validate(ref, cands, source, thresholds, limit=limit, threads=threads)
    if report is not None:
        add_validation(report, out_dir, result.to_dict(), names, ref.path)
        report.save(out_dir)
    return result


def _precision(report, out_dir, path) -> dict:
    """The precision the report knows for an artifact (a file alone does not say it was quantized)."""
    if report is None:
        return {}

    entry = find_record(report, out_dir, path)
    return {"precision": entry.precision} if isinstance(entry, ArtifactRecord) and entry.precision else {}
