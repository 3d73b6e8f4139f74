"""The verdict: whether a run kept its promise, computed once from the report; report.json, every rendering and
the CLI's exit code read it.

An artifact is `failed` when its parity check failed (it does not compute what its source computes), `rejected`
when a gate it was held to failed (the first failing metric, value and threshold are named), `ok` when every
check it had passed, `unchecked` when nothing gated it (no check, or only generated inputs; it still counts
as passing, with a loud warning, and fails the run under strict). With requested targets (optimize) the run is ok when
every target has an ok artifact; otherwise when no artifact failed or was rejected and no step failed.
Exit code: 0 ok; 3 when a failed pass is the first cause; 1 when a measured check failed (or, with strict,
when nothing could be gated).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mdeploy.passes.checks.bounds import BOUNDS
from mdeploy.passes.core.artifact import DEPLOYMENT_TARGET
from mdeploy.passes.core.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_PASS_FAILED
from mdeploy.passes.report.sections import ArtifactRecord, Failure

LOWER_BOUNDS = ("top1_agreement", "sqnr_db")


def describe_failure(f: Failure | dict[str, Any]) -> str:
    """`onnx-int8: accuracy_drop = 0.0533 > max 0.01` (with the output in brackets for multi-output models)."""
    f = Failure.from_dict(f) if isinstance(f, dict) else f
    where = f" [{f.output}]" if f.output else ""
    low = f.metric in LOWER_BOUNDS
    return f"{f.candidate}: {f.metric}{where} = {_num(f.value)} {'<' if low else '>'} {'min' if low else 'max'} {_num(f.threshold)}"


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class ArtifactVerdict:
    name: str
    status: str  # ok | rejected | failed | unchecked
    target: str | None = None
    failure: dict[str, Any] | None = None  # the first failing metric: candidate, metric, value, threshold, output
    gate: str = ""  # which gate applied and why, one line

    @property
    def reason(self) -> str:
        return describe_failure(self.failure) if self.failure else ""

    @property
    def metric_text(self) -> str:
        """The failing metric, value and bound without the artifact's name: what a table row shows."""
        return self.reason.split(": ", 1)[1] if self.failure else ""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    exit_code: int
    artifacts: dict[str, ArtifactVerdict]
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # requested target -> {passing, ok}
    failed_steps: dict[str, str] = field(default_factory=dict)  # step output (or pass) -> reason
    ungated: list[str] = field(default_factory=list)  # artifacts no threshold was applied to
    strict: bool = False

    @property
    def label(self) -> str:
        return "passed" if self.ok else "FAILED"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "exit_code": self.exit_code, "targets": self.targets, "failed_steps": self.failed_steps,
                "ungated": self.ungated, "strict": self.strict,
                "artifacts": {k: {**asdict(v), "reason": v.reason} for k, v in self.artifacts.items()}}

    def message(self) -> str:
        """The first real cause, one line: the `error:` text when the run did not pass."""
        if self.ok:
            return "passed"
        rejected = [v for v in self.artifacts.values() if v.status in ("failed", "rejected")]
        if self.exit_code == EXIT_PASS_FAILED:
            key, reason = next(iter(self.failed_steps.items()))
            more = f" (and {len(self.failed_steps) - 1} more failed step(s))" if len(self.failed_steps) > 1 else ""
            return f"{key}: {reason}{more}"
        missing = [t for t, v in self.targets.items() if not v["ok"]]
        why = "; ".join(v.reason or f"{v.name}: {v.status}" for v in rejected if not missing or v.target in missing)
        if missing:
            return f"no {' or '.join(missing)} artifact passed the gate" + (f": {why}" if why else "")
        if rejected:
            return why
        return f"nothing could be gated ({', '.join(self.ungated)}), and --strict was given"

    def hint(self) -> str:
        if self.ok:
            return ""
        if self.exit_code == EXIT_PASS_FAILED:
            return "see the failed step in report.json; run with --debug for its traceback"
        metrics = {(v.failure or {}).get("metric") for v in self.artifacts.values() if v.status in ("failed", "rejected")}
        if metrics & {"max_abs_error", "max_rel_error"} and any(v.status == "failed" for v in self.artifacts.values()):
            return "a converter changed the numbers beyond --tolerance; see max_abs_error in report.json"
        if not metrics - {None}:
            return "give labelled --validation data, or set a gate (--min-agreement, --min-sqnr, --max-rel-error)"
        flags = ", ".join(sorted("--" + FLAG_OF.get(m, m).replace("_", "-") for m in metrics if m))
        return (f"see report.md; loosen {flags} if the loss is acceptable, give better --calibration data, "
                "or keep a float artifact")


# Which flag bounds each gated metric.
FLAG_OF = {**{b.metric: b.name for b in BOUNDS}, "mse_increase": "max_rel_error",
           "mae_increase": "max_rel_error", "nan_count": "max_abs_error", "inf_count": "max_abs_error"}


def artifact_verdict(a: ArtifactRecord) -> ArtifactVerdict:
    target = a.target or DEPLOYMENT_TARGET.get(a.format or "")
    checks, validation, quality = a.checks, a.validation, a.quality
    if checks is not None and checks.passed is False:
        failure = {"candidate": a.name, "metric": "max_abs_error", "value": checks.max_abs_error,
                   "threshold": checks.tolerance, "output": None}
        return ArtifactVerdict(a.name, "failed", target, failure, "parity with the source")
    # a comparison on generated inputs measures but does not gate: random data says nothing about real inputs
    gated = [s for s in (validation, quality) if s is not None and s.passed is not None and not on_random_data(s)]
    gate = _gate_text(gated[0]) if gated else ""
    for s in gated:
        if s.passed is False:
            first = (s.failures or [None])[0]
            failure = first.to_dict() if first is not None else {"candidate": a.name, "metric": "gate", "value": None,
                                                                  "threshold": None, "output": None}
            return ArtifactVerdict(a.name, "rejected", target, failure, _gate_text(s))
    if gated or (checks is not None and checks.passed is True):
        return ArtifactVerdict(a.name, "ok", target, None, gate or "parity with the source")
    return ArtifactVerdict(a.name, "unchecked", target)


def _gate_text(section) -> str:
    """`probs: classification with labels: accuracy_drop <= 0.01` for each output the section was gated on."""
    gates = section.gates or {}
    if gates:
        return "; ".join(f"{out}: {g.get('why', g.get('task', '?'))}" for out, g in gates.items())
    thresholds = {k: v for k, v in (getattr(section, "thresholds", None) or {}).items() if v is not None}
    return "thresholds " + ", ".join(f"{k} {v}" for k, v in thresholds.items()) if thresholds else ""


def on_random_data(section) -> bool:
    return str(section.data or "").startswith("random")


def is_ungated(a: ArtifactRecord) -> bool:
    """Nothing could tell whether the artifact keeps the model's behaviour: no bound applied to any output, or
    it was compared only on generated (random) inputs."""
    sections = [s for s in (a.validation, a.quality) if s is not None]
    if not sections:
        return True
    for s in sections:
        if on_random_data(s):
            continue
        if s.gates is not None:
            if any(g.get("metrics") for g in s.gates.values()):
                return False
        elif s.passed is not None:  # schema 1: gated by its thresholds
            return False
    return True


def compute_verdict(artifacts: list[ArtifactRecord], failed_steps: dict[str, str], targets: list[str] | None,
                    strict: bool = False) -> Verdict:
    """The one verdict of a run (see the module docstring). `failed_steps`: step (node) -> one-line reason."""
    per = {a.name: artifact_verdict(a) for a in artifacts}
    ungated = [a.name for a in artifacts if a.format != "keras" and is_ungated(a)] if targets else \
        [a.name for a in artifacts if (a.validation is not None or a.quality is not None) and is_ungated(a)]
    target_view: dict[str, dict[str, Any]] = {}
    if targets:
        for t in targets:
            passing = [n for n, v in per.items() if v.target == t and v.status in ("ok", "unchecked")]
            target_view[t] = {"passing": passing, "ok": bool(passing)}
        ok = all(v["ok"] for v in target_view.values())
    else:
        ok = not failed_steps and all(v.status not in ("failed", "rejected") for v in per.values())
    if ok and strict and ungated:
        ok = False
    measured_failure = any(v.status in ("failed", "rejected") for v in per.values())
    if ok:
        code = EXIT_OK
    elif failed_steps and (not measured_failure or _step_first(target_view, per, failed_steps)):
        code = EXIT_PASS_FAILED
    else:
        code = EXIT_CHECK_FAILED
    return Verdict(ok, code, per, target_view, failed_steps, ungated, strict)


def _step_first(targets: dict[str, dict[str, Any]], per: dict[str, ArtifactVerdict], failed: dict[str, str]) -> bool:
    """A failed pass is the first cause when a requested target has no artifact that even got measured."""
    return any(not v["ok"] and not any(a.target == t and a.status in ("failed", "rejected") for a in per.values())
               for t, v in targets.items())
