"""The facts a serving bundle is derived from (signature, batch dimension, measured latency, memory, load time) and
the batching and sizing decisions taken from them, each with the reason it states in the bundle."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.passes.report.sections import ArtifactRecord

# Pinned server releases. TF Serving matches the tensorflow-serving-api whose protos validate its configs (and the
# TensorFlow that wrote the SavedModel); Triton 23.12 is server 2.41.0, the release of the tritonclient whose
# model_config proto validates config.pbtxt (2.41.0 is what pip resolves beside protobuf 7).
TFSERVING_VERSION = "2.21.0"
TFSERVING_IMAGE = f"tensorflow/serving:{TFSERVING_VERSION}"
TRITON_RELEASE = "23.12"
TRITON_SERVER_VERSION = "2.41.0"
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"

MIB = 1 << 20
# A server process's own footprint before it loads a model: estimates (not measured here, stated as such in the
# bundle). The model's part is measured when bench ran (peak minus baseline RSS of the benchmark process), else a
# multiple of the model's bytes (weights, the runtime's copy, activations).
SERVER_BASE_BYTES = {"tfserving": 256 * MIB, "triton": 512 * MIB}
MODEL_BYTES_FACTOR = 4
MEMORY_MARGIN = 1.25
MAX_BATCH_CAP = 128
DEFAULT_MAX_BATCH = 32
DEFAULT_TIMEOUT_US = 1000


@dataclass(frozen=True)
class BundleFile:
    """One file of a bundle: text checked by the validator `kind` (see validate.py), or an artifact copied whole."""

    path: str  # relative to the bundle's root
    text: str | None = None
    kind: str = "none"
    copy_from: Path | None = None


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int | None, ...]
    dtype: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tensor:
        return cls(str(d["name"]), tuple(None if s is None or (isinstance(s, int) and s < 0) else int(s)
                                         for s in (d.get("shape") or ())), str(d.get("dtype") or "float32"))

    def shape_text(self) -> str:
        return "[" + ", ".join("?" if s is None else str(s) for s in self.shape) + "]"


@dataclass(frozen=True)
class ModelFacts:
    """One bundled artifact and what the report measured of it."""

    name: str  # the served model's name
    version: int
    artifact: str  # the report's artifact name
    format: str  # savedmodel | onnx
    path: Path  # absolute: a SavedModel directory or an .onnx file
    sha256: str
    size_bytes: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    status: str  # the verdict's: ok | unchecked | rejected | failed
    forced: bool = False  # bundled although it did not pass the gate (--allow-failed)
    reason: str = ""  # why it did not pass, when forced
    p50_ms: float | None = None
    bench_batch: int | None = None
    peak_rss_bytes: int | None = None
    baseline_rss_bytes: int | None = None
    runtime_rss_bytes: int | None = None
    load_seconds: float | None = None
    runtime: str | None = None

    @classmethod
    def from_record(cls, record: ArtifactRecord, run_dir: Path, name: str, version: int, status: str,
                    forced: bool = False, reason: str = "") -> ModelFacts:
        bench = record.bench
        latency = (bench.latency_ms or {}) if bench is not None else {}
        p50 = latency.get("p50")
        return cls(name=name, version=version, artifact=record.name, format=str(record.format),
                   path=(Path(run_dir) / str(record.path)).resolve(), sha256=str(record.sha256),
                   size_bytes=int(record.size_bytes or 0), inputs=tuple(Tensor.from_dict(t) for t in record.inputs),
                   outputs=tuple(Tensor.from_dict(t) for t in record.outputs), status=status, forced=forced,
                   reason=reason, p50_ms=float(p50) if isinstance(p50, (int, float)) and p50 > 0 else None,
                   bench_batch=(bench.batch or 1) if bench is not None else None,
                   peak_rss_bytes=bench.peak_rss_bytes if bench is not None else None,
                   baseline_rss_bytes=bench.baseline_rss_bytes if bench is not None else None,
                   runtime_rss_bytes=bench.runtime_rss_bytes if bench is not None else None,
                   load_seconds=bench.load_seconds if bench is not None else None,
                   runtime=bench.runtime if bench is not None else None)

    @property
    def fixed_batch(self) -> int | None:
        """The batch every input is fixed to, or None when the first dimension is dynamic in every input.
        A model with no leading dimension to batch on counts as fixed (batch dimension absent: 0)."""
        firsts = {t.shape[0] if t.shape else 0 for t in self.inputs}
        if firsts == {None}:
            return None
        fixed = sorted(f for f in firsts if f is not None)
        return fixed[0] if fixed else 0


@dataclass(frozen=True)
class BatchPlan:
    """How requests are batched on the server, and why."""

    dynamic: bool  # the model takes any batch size: the server may merge requests
    max_batch_size: int  # the largest batch the server forms (a fixed-batch model: its batch)
    sizes: tuple[int, ...]  # TF Serving's allowed batch sizes (merged batches pad up to one), ending at max_batch_size
    timeout_us: int  # how long a lone request waits for others
    basis: str  # one sentence: where these numbers come from

    @property
    def batching(self) -> bool:
        """Whether the server should batch at all: a dynamic batch, or a fixed batch > 1 filled by padding."""
        return self.max_batch_size > 1


def _ladder(top: int) -> tuple[int, ...]:
    sizes, b = [], 1
    while b < top:
        sizes.append(b)
        b *= 2
    return tuple(sizes + [top])


def batch_plan(facts: ModelFacts, latency_budget_ms: float, max_batch: int | None = None) -> BatchPlan:
    """Batch sizes from the signature and, when bench ran, from its measured latency.

    A fixed batch N is served as it is (TF Serving pads smaller merged batches up to N; Triton gets
    max_batch_size 0 with the full shape). A dynamic batch is capped so that a full batch fits the latency budget
    if its time grows linearly from the measured per-sample p50 (batching amortizes, so real batches are faster);
    a lone request waits for company at most about one measured inference."""
    fixed = facts.fixed_batch
    if fixed is not None:
        n = max(fixed, 1)
        why = (f"the model's batch dimension is fixed at {fixed}: " +
               ("no batching (each request is one batch)" if n == 1 else f"requests are merged and padded to {n}"))
        return BatchPlan(False, n, (n,), 0 if n == 1 else DEFAULT_TIMEOUT_US, why)
    if max_batch is not None:
        top = max(1, max_batch)
        return BatchPlan(True, top, _ladder(top), DEFAULT_TIMEOUT_US, f"max batch {top} as given (--max-batch)")
    if facts.p50_ms is None:
        return BatchPlan(True, DEFAULT_MAX_BATCH, _ladder(DEFAULT_MAX_BATCH), DEFAULT_TIMEOUT_US,
                         f"dynamic batch; no latency was measured (run `mdeploy bench`), so the defaults "
                         f"max batch {DEFAULT_MAX_BATCH} and a {DEFAULT_TIMEOUT_US} us queue delay")
    per_sample = facts.p50_ms / max(facts.bench_batch or 1, 1)
    fits = int(latency_budget_ms / per_sample) if per_sample > 0 else MAX_BATCH_CAP
    top = 1 << max(0, min(fits, MAX_BATCH_CAP).bit_length() - 1) if fits >= 1 else 1
    timeout = int(min(max(per_sample * 1000, 100), 10_000))
    return BatchPlan(True, top, _ladder(top), timeout,
                     f"dynamic batch; measured p50 {facts.p50_ms:.3f} ms at batch {facts.bench_batch or 1}: "
                     f"{top} samples fit the {latency_budget_ms:g} ms budget at that per-sample time, and a request "
                     f"waits at most {timeout} us (about one inference) for others")


@dataclass(frozen=True)
class Resources:
    """A container's requests and limits, and where the memory figure comes from."""

    cpu: str
    memory_request: str
    memory_limit: str
    basis: str
    startup_failure_threshold: int = 60  # x 5 s periods
    notes: list[str] = field(default_factory=list)


def _mib(n: float) -> str:
    return f"{int(math.ceil(n / MIB))}Mi"


def resources(facts: ModelFacts, cpu: float, server: str) -> Resources:
    """Memory: the server's own footprint (an estimate) plus the model's, measured by bench (peak minus baseline
    RSS) when it ran, else estimated from the model's size; +25% on the whole."""
    base = SERVER_BASE_BYTES[server]
    if facts.peak_rss_bytes and facts.runtime_rss_bytes:
        # the server brings its own runtime (the base above): count only what loading and running the model added
        model = max(facts.peak_rss_bytes - facts.runtime_rss_bytes, facts.size_bytes)
        source = (f"the model's measured {model / MIB:.0f} MiB (peak RSS of the benchmark running {facts.artifact} "
                  f"minus its RSS once {facts.runtime or 'the runtime'} was imported)")
    elif facts.peak_rss_bytes:  # a report from before runtime_rss_bytes: the figure includes the runtime library
        model = max(facts.peak_rss_bytes - (facts.baseline_rss_bytes or 0), facts.size_bytes)
        source = (f"the model's measured {model / MIB:.0f} MiB (peak minus baseline RSS of the benchmark running "
                  f"{facts.artifact} on {facts.runtime or 'its runtime'}; this report predates the runtime's own "
                  "figure, so it includes the runtime library and errs high)")
    else:
        model = MODEL_BYTES_FACTOR * facts.size_bytes
        source = (f"an estimated {model / MIB:.0f} MiB for the model ({MODEL_BYTES_FACTOR} x its "
                  f"{facts.size_bytes / MIB:.1f} MiB; no benchmark in the report)")
    request = (base + model) * MEMORY_MARGIN
    basis = (f"memory: the {server} server's own ~{base // MIB} MiB (an estimate) + {source}, "
             f"+{int((MEMORY_MARGIN - 1) * 100)}%")
    load = facts.load_seconds or 0.0
    # the startup probe allows ten times the measured load time, and at least five minutes
    threshold = max(60, int(math.ceil(load * 10 / 5)))
    cpu_text = f"{int(cpu * 1000)}m" if cpu < 1 or cpu != int(cpu) else str(int(cpu))
    return Resources(cpu_text, _mib(request), _mib(request * 2), basis, threshold)
