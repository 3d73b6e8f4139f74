"""report.json while a run goes on: each artifact is listed the moment it is under its final name, and a re-run
starts from what the OUTDIR's report already lists, keeping every record whose file is still intact.

So however a run ends (an error, Ctrl-C, SIGKILL), every intact artifact in OUTDIR is in report.json, and
a re-run without the step cache may replace what an earlier run made (see pipeline.Context.replaceable).
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mdeploy.passes.core.artifact import Artifact, content_hash
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import contained
from mdeploy.passes.core.lock import LOCK_NAME
from mdeploy.passes.report.model import REPORT_NAME, Report, artifact_record
from mdeploy.passes.report.sections import ArtifactRecord, SourceRecord


@contextlib.contextmanager
def _record_lock(out_dir: Path) -> Iterator[None]:
    """A short POSIX record lock on the OUTDIR's lock file, taken around each update, so that branch processes
    of one run never interleave theirs. (Independent of the flock the run holds on the same file.)"""
    try:
        fd = os.open(Path(out_dir) / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:  # no run holds this OUTDIR (a library caller): nothing to coordinate with
        yield
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _resolve(out_dir: Path, record: ArtifactRecord) -> Path | None:
    """The file a record names, if it lies inside OUTDIR."""
    rel = record.path
    if not rel:
        return None
    path = Path(rel) if Path(rel).is_absolute() else Path(out_dir) / rel
    try:
        return contained(out_dir, path)
    except BadInput:
        return None


def intact(out_dir: Path, record: ArtifactRecord) -> bool:
    path = _resolve(out_dir, record)
    try:
        return path is not None and path.exists() and content_hash(path) == record.sha256
    except OSError:
        return False


def previous_report(out_dir: Path, source: Artifact) -> tuple[Report, dict[str, str]]:
    """(the report to build on, {resolved path: sha256} of the files it listed). The report keeps only records
    whose files are intact and inside OUTDIR (a record pointing elsewhere came from a copied OUTDIR)."""
    report = Report.load_or_new(out_dir, source)
    listed: dict[str, str] = {}
    for a in report.artifacts:
        path = _resolve(out_dir, a)
        if path is not None and a.sha256:
            listed[str(path)] = a.sha256
    report.artifacts = [a for a in report.artifacts if intact(out_dir, a)]
    return report, listed


@dataclass(frozen=True)
class ReportJournal:
    """Pipeline Context.on_publish: adds (or replaces, by name) an artifact's record in OUTDIR/report.json.
    A plain picklable value, so spawned branch processes publish too."""

    out_dir: Path
    source: SourceRecord

    def __call__(self, artifact: Artifact) -> None:
        record = artifact_record(artifact, self.out_dir)
        with _record_lock(self.out_dir):
            path = Path(self.out_dir) / REPORT_NAME
            report = Report(source=copy.deepcopy(self.source))
            if path.is_file():
                try:
                    found = Report.from_json(path.read_text())
                    if found.source.sha256 == self.source.sha256:
                        report = found
                except (ValueError, TypeError):
                    report = Report.replacing_unreadable(path, self.source)
            old = report.artifact(record.name)
            if old and old.path == record.path and old.sha256 == record.sha256:
                return
            report.add_artifact(record)
            report.save(self.out_dir)
