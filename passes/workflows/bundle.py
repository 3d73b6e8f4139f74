"""`bundle`: serving bundles (TF Serving, Triton, Kubernetes, KServe) from the artifacts of a run that passed its gate.

The run's report.json says which artifacts passed; the best per server is bundled (or the one named), after its
bytes are checked against the report. Every generated file is validated offline (passes/deploy/validate.py) before
anything is written, and the bundle is written whole under a temporary name and renamed into place.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.passes.core.artifact import content_hash
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import atomic_output, contained, ensure_writable, name_from_file, safe_component
from mdeploy.passes.core.lock import locks_outdir
from mdeploy.passes.deploy import client, k8s, tfserving, triton
from mdeploy.passes.deploy.facts import (
    TFSERVING_IMAGE,
    TRITON_IMAGE,
    BatchPlan,
    BundleFile,
    ModelFacts,
    Resources,
    batch_plan,
    resources,
)
from mdeploy.passes.deploy.readme import bundle_readme
from mdeploy.passes.deploy.validate import KUBERNETES_VERSION, validate_text
from mdeploy.passes.report.model import REPORT_NAME, Report
from mdeploy.passes.report.sections import ArtifactRecord

TARGETS = ("tfserving", "triton", "k8s", "kserve")
SERVERS = ("tfserving", "triton")
# what each server can serve, in order of preference
SERVER_FORMATS = {"tfserving": ("savedmodel",), "triton": ("onnx", "savedmodel")}
PASSING = ("ok", "unchecked")
MANIFEST = "bundle.json"


@dataclass(frozen=True)
class BundleOptions:
    name: str | None = None  # the served model's name (default: the source file's stem)
    version: int = 1
    artifact: str | None = None  # bundle this artifact (by its report name) instead of the best passing one
    allow_failed: bool = False  # bundle a rejected/failed artifact anyway (the bundle says so)
    latency_budget_ms: float = 50.0  # a full dynamic batch should fit in this (with the measured per-sample p50)
    max_batch: int | None = None
    cpu: float = 1.0  # CPU cores per replica: the request, TF Serving's batch threads, Triton's instance count
    min_replicas: int = 1
    max_replicas: int = 4
    cpu_target: int = 70
    image_prefix: str | None = None  # the images the Dockerfiles build (default: mdeploy/NAME)


@dataclass
class BundleResult:
    out_dir: Path
    run_dir: Path
    targets: tuple[str, ...]
    models: dict[str, ModelFacts]  # server -> what it serves
    plans: dict[str, BatchPlan]
    resources: dict[str, Resources]
    images: dict[str, str]
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "run_dir": str(self.run_dir), "targets": list(self.targets),
                "servers": {s: {"artifact": f.artifact, "format": f.format, "sha256": f.sha256, "status": f.status,
                                "forced": f.forced, "reason": f.reason, "model": f.name, "version": f.version,
                                "inputs": [asdict(t) for t in f.inputs], "outputs": [asdict(t) for t in f.outputs],
                                "image": self.images[s], "batching": asdict(self.plans[s]),
                                "resources": asdict(self.resources[s])}
                            for s, f in self.models.items()},
                "validated_with": {"kubernetes": KUBERNETES_VERSION, "tfserving_base": TFSERVING_IMAGE,
                                   "triton_base": TRITON_IMAGE},
                "files": self.files, "warnings": self.warnings}


def parse_targets(values: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """`--target` values (repeatable, comma lists, `all`) in a fixed order; BadInput naming an unknown one."""
    wanted: set[str] = set()
    for value in values or ["all"]:
        for t in (v.strip().lower() for v in value.split(",")):
            if not t:
                continue
            if t == "all":
                wanted.update(TARGETS)
            elif t in TARGETS:
                wanted.add(t)
            else:
                raise BadInput(f"unknown --target {t!r}", f"choose from {', '.join(TARGETS)} or all (comma lists work)")
    if not wanted:
        raise BadInput("no --target given", f"choose from {', '.join(TARGETS)} or all")
    return tuple(t for t in TARGETS if t in wanted)


def _load_run(run_dir: Path) -> Report:
    if not run_dir.exists():
        raise BadInput(f"run directory {run_dir} does not exist",
                       "pass the -o directory of an `mdeploy optimize`, `convert` or `quantize` run")
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir} is not a directory", "pass the -o directory of an `mdeploy optimize` run, not a file")
    return Report.load(run_dir)


def _speed_key(r: ArtifactRecord) -> tuple[float, float]:
    """Fastest measured p50 first, then the smallest (the report's ★ rule)."""
    p50 = ((r.bench.latency_ms or {}).get("p50") if r.bench else None)
    return (p50 if isinstance(p50, (int, float)) else float("inf"), float(r.size_bytes or 0))


def _choose(report: Report, run_dir: Path, server: str, options: BundleOptions) -> tuple[ArtifactRecord, str, str]:
    """(record, status, failure reason) of what `server` serves."""
    verdict = report.verdict.artifacts
    formats = SERVER_FORMATS[server]
    if options.artifact:
        record = report.artifact(options.artifact)
        if record is None:
            names = ", ".join(a.name for a in report.artifacts) or "none"
            raise BadInput(f"{run_dir / REPORT_NAME} has no artifact named {options.artifact!r}", f"its artifacts: {names}")
        if record.format not in formats:
            raise BadInput(f"{server} cannot serve {record.name} ({record.format})",
                           f"{server} serves {' or '.join(formats)}: pick such an artifact, or drop --target {server} "
                           f"(and k8s/kserve, which run the server images)")
        v = verdict[record.name]
        if v.status not in PASSING and not options.allow_failed:
            raise BadInput(f"{record.name} did not pass the gate ({v.status}: {v.reason or 'failed'})",
                           "bundle a passing artifact, or pass --allow-failed to bundle it anyway (the bundle will say so)")
        return record, v.status, v.reason
    candidates = [a for a in report.artifacts if a.format in formats and a.path]
    passing = [a for a in candidates if verdict[a.name].status in PASSING]
    if not passing:
        seen = "; ".join(f"{a.name}: {verdict[a.name].status}" + (f" ({verdict[a.name].reason})" if verdict[a.name].reason else "")
                         for a in candidates) or f"no {' or '.join(formats)} artifact at all"
        raise BadInput(f"no {' or '.join(formats)} artifact in {run_dir} passed the gate for {server} ({seen})",
                       f"produce one (`mdeploy optimize --target cloud`, or `convert --to {formats[0]}`), or name one "
                       "with --artifact NAME --allow-failed to bundle it anyway")
    best = min(passing, key=lambda a: (formats.index(a.format), *_speed_key(a)))
    return best, verdict[best.name].status, ""


def _facts(report: Report, run_dir: Path, server: str, options: BundleOptions, name: str) -> ModelFacts:
    record, status, reason = _choose(report, run_dir, server, options)
    facts = ModelFacts.from_record(record, run_dir, name, options.version, status,
                                   forced=status not in PASSING, reason=reason)
    contained(run_dir, facts.path)
    if not facts.path.exists():
        raise BadInput(f"{record.name}'s file {facts.path} is missing", "re-run the command that made it in this directory")
    if record.sha256 and content_hash(facts.path) != record.sha256:
        raise BadInput(f"{facts.path} no longer matches its sha256 in {REPORT_NAME}",
                       "it changed after the run checked it: re-run the command that made it, then bundle again")
    if not facts.inputs or not facts.outputs:
        raise BadInput(f"{record.name} has no recorded signature in {REPORT_NAME}", "re-run the command that made it")
    return facts


def _check_options(options: BundleOptions) -> None:
    if options.version < 1:
        raise BadInput(f"--model-version {options.version} must be at least 1", "TF Serving and Triton number versions from 1")
    if not 1 <= options.min_replicas <= options.max_replicas:
        raise BadInput(f"replicas {options.min_replicas}..{options.max_replicas} are not a range of at least 1",
                       "give 1 <= --min-replicas <= --max-replicas")
    if not 1 <= options.cpu_target <= 100:
        raise BadInput(f"--cpu-target {options.cpu_target} is not a percentage", "give 1-100")
    if options.cpu <= 0 or options.latency_budget_ms <= 0 or (options.max_batch is not None and options.max_batch < 1):
        raise BadInput("--cpu, --latency-budget-ms and --max-batch must be positive", "give positive numbers")


def _write(staging: Path, files: list[BundleFile]) -> None:
    for f in files:
        dest = contained(staging, staging / f.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.copy_from is not None:
            if f.copy_from.is_dir():
                # only the SavedModel's own files: stray files in a version directory break TF Serving's loader
                shutil.copytree(f.copy_from, dest, ignore=shutil.ignore_patterns(".*"))
            else:
                shutil.copy2(f.copy_from, dest)
        else:
            dest.write_text(f.text or "")


@locks_outdir("run_dir", create=False)
def bundle(run_dir: Path, out_dir: Path | None = None, targets: tuple[str, ...] | list[str] = ("all",),
           options: BundleOptions = BundleOptions(), *, force: bool = False, on_stage=None) -> BundleResult:
    """Write a serving bundle for `targets` from RUN_DIR's passing artifacts into OUT_DIR (default RUN_DIR/bundle)."""
    stage = on_stage or (lambda text: None)
    run_dir = Path(run_dir)
    targets = parse_targets(list(targets))
    _check_options(options)
    report = _load_run(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "bundle"
    if out_dir.resolve() == run_dir.resolve() or out_dir.resolve() in run_dir.resolve().parents:
        raise BadInput(f"the bundle would replace the run directory {run_dir}", "write the bundle to another -o directory")
    ensure_writable(out_dir, force)
    name = safe_component(options.name or name_from_file(report.source.path or "model"), "--name")
    if options.image_prefix is not None and (not options.image_prefix or any(c.isspace() for c in options.image_prefix)):
        raise BadInput(f"--image {options.image_prefix!r} is not an image name", "give e.g. registry.example.com/team/digits")
    servers = [s for s in SERVERS if s in targets]
    if not servers and {"k8s", "kserve"} & set(targets):
        # the manifests run a server image: the default is TF Serving when a SavedModel passed, else Triton
        try:
            _choose(report, run_dir, "tfserving", options)
            servers = ["tfserving"]
        except BadInput:
            servers = ["triton"]
    warnings: list[str] = []
    models: dict[str, ModelFacts] = {}
    plans: dict[str, BatchPlan] = {}
    res: dict[str, Resources] = {}
    images: dict[str, str] = {}
    files: list[BundleFile] = []
    scaling = k8s.Scaling(options.min_replicas, options.max_replicas, options.cpu_target)
    threads = max(1, int(round(options.cpu)))
    for server in servers:
        stage(f"planning {server}")
        facts = models[server] = _facts(report, run_dir, server, options, name)
        plan = plans[server] = batch_plan(facts, options.latency_budget_ms, options.max_batch)
        res[server] = resources(facts, options.cpu, server)
        images[server] = f"{options.image_prefix or f'mdeploy/{name}'}-{server}:{options.version}"
        if facts.forced:
            warnings.append(f"{server}: {facts.artifact} did NOT pass the gate ({facts.status}: {facts.reason}); "
                            "bundled because --allow-failed was given")
        elif facts.status == "unchecked":
            warnings.append(f"{server}: nothing gated {facts.artifact} (no validation data); check it before serving")
        if server == "tfserving":
            files += tfserving.files(facts, plan, threads)
        else:
            files += triton.files(facts, plan, threads)
        files += client.files(server, facts)
        if "k8s" in targets:
            files += k8s.files(facts, k8s.server_for(server, facts, images[server]), res[server], scaling)
        if "kserve" in targets:
            files += k8s.kserve_files(facts, k8s.server_for(server, facts, images[server]), res[server], scaling)
    result = BundleResult(out_dir, run_dir, targets, models, plans, res, images, [], warnings)
    shown = [f.path + ("/" if f.copy_from is not None and f.copy_from.is_dir() else "") for f in files]
    files.append(BundleFile("README.md", bundle_readme(result, shown)))
    result.files = sorted([f.path for f in files] + [MANIFEST])
    files.append(BundleFile(MANIFEST, json.dumps(result.to_dict(), indent=2, default=str) + "\n"))
    stage(f"validating {len(files)} files")
    for f in files:  # every file is checked before anything is written
        if f.text is not None:
            validate_text(f.kind, f.path, f.text)
    stage(f"writing {out_dir}")
    with atomic_output(out_dir, force) as staging:
        staging.mkdir(parents=True)
        _write(staging, files)
    return result
