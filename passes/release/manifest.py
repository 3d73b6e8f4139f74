"""The OTA manifest of a release: which model, which version, which files (with digests, formats, runtimes) and
when and where it may be installed. Plain data with a JSON form; signed together with the files it lists.

`sequence` is what stops a rollback: a device keeps the last sequence it installed and refuses anything not
greater (`mdeploy verify --last-sequence N`). `version` (semver) is for people; devices compare `sequence`.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mdeploy.passes.core.errors import BadInput

MANIFEST_NAME = "ota-manifest.json"
SCHEMA = "mdeploy.ota-manifest/v1"
FILES_DIR = "files"
# https://semver.org/#is-there-a-suggested-regular-expression-regex-to-check-a-semver-string
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
                    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the release directory, POSIX
    sha256: str
    size: int
    format: str  # tflite | onnx | keras | savedmodel | file
    runtime: str | None  # the runtime package that loads it (None for plain files)
    min_runtime_version: str | None


@dataclass(frozen=True)
class RolloutStage:
    name: str
    percent: float  # of the fleet that has the release once this stage is reached


@dataclass(frozen=True)
class OtaManifest:
    model_id: str
    version: str
    sequence: int
    created: str  # ISO 8601, UTC
    expires: str
    hardware_class: str
    rollout: tuple[RolloutStage, ...]
    files: tuple[FileEntry, ...]
    schema: str = SCHEMA
    signing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rollout"] = [asdict(s) for s in self.rollout]
        d["files"] = [asdict(f) for f in self.files]
        return {"schema": d.pop("schema"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str) -> OtaManifest:
        try:
            d = json.loads(text)
            if d.get("schema") != SCHEMA:
                raise ValueError(f"schema {d.get('schema')!r}, expected {SCHEMA}")
            return cls(model_id=str(d["model_id"]), version=str(d["version"]), sequence=int(d["sequence"]),
                       created=str(d["created"]), expires=str(d["expires"]), hardware_class=str(d["hardware_class"]),
                       rollout=tuple(RolloutStage(str(s["name"]), float(s["percent"])) for s in d["rollout"]),
                       files=tuple(FileEntry(**f) for f in d["files"]), schema=d["schema"], signing=dict(d.get("signing", {})))
        except (ValueError, KeyError, TypeError) as e:
            raise BadInput(f"{origin}: not a readable OTA manifest ({e})", "re-create the release with `mdeploy release`") from e

    def expires_at(self) -> datetime:
        return parse_time(self.expires, "expires")


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time (a trailing Z or an offset; naive means UTC) as an aware datetime."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise BadInput(f"{what} {text!r} is not an ISO 8601 time", "write e.g. 2027-01-31T00:00:00Z") from e
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_DURATION = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(text)
    if not m or int(m.group(1)) <= 0:
        raise BadInput(f"--expires-in {text!r} is not a duration", "write a positive number of hours, days or weeks: 12h, 30d, 8w")
    n = int(m.group(1))
    return {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[m.group(2)]


def check_version(version: str) -> str:
    if not SEMVER.match(version):
        raise BadInput(f"--version {version!r} is not a semantic version", "write MAJOR.MINOR.PATCH, e.g. 1.4.0 or 2.0.0-rc.1")
    return version


def parse_rollout(stages: list[str] | None) -> tuple[RolloutStage, ...]:
    """`canary:5`, `beta:25`, `all:100`: stage names with the percent of the fleet, rising, ending at most at 100."""
    if not stages:
        return (RolloutStage("all", 100.0),)
    out: list[RolloutStage] = []
    for s in stages:
        name, _, pct = s.partition(":")
        try:
            value = float(pct)
        except ValueError:
            value = -1.0
        if not name.strip() or not 0 < value <= 100:
            raise BadInput(f"--rollout {s!r} is not NAME:PERCENT", "write e.g. --rollout canary:5 --rollout all:100")
        if out and value <= out[-1].percent:
            raise BadInput(f"--rollout {s!r}: stages must reach a larger share of the fleet than the one before",
                           "list the stages in order, e.g. canary:5 beta:25 all:100")
        out.append(RolloutStage(name.strip(), value))
    return tuple(out)


_FORMATS = {".tflite": "tflite", ".onnx": "onnx", ".keras": "keras", ".h5": "keras"}


def file_format(rel: str, savedmodel_dirs: set[str]) -> str:
    """A file's model format from its name, or `savedmodel` for a file inside a SavedModel directory."""
    suffix = Path(rel).suffix.lower()
    if suffix in _FORMATS:
        return _FORMATS[suffix]
    if any(d == "" or rel == d or rel.startswith(d + "/") for d in savedmodel_dirs):
        return "savedmodel"
    return "file"


def savedmodel_dirs(root: Path) -> set[str]:
    """The directories under `root` (relative, POSIX; '' for root itself) that hold a SavedModel."""
    root = Path(root)
    return {p.parent.relative_to(root).as_posix() if p.parent != root else "" for p in root.rglob("saved_model.pb")}
