"""The accuracy-budget search: when int8 misses the gate, find the cheapest fix that meets it, counting evaluations.

1. The cheap knobs, one at a time from the user's setting (calibration method, per-channel vs per-tensor weights,
   symmetric vs asymmetric activations, only the weight ops quantized): each is one quantization and one
   evaluation, reported with its score.
2. Layers ranked by the error their quantization adds (passes/quantize/debug.py, one pass over held-out data),
   then a binary search over full evaluations for the smallest prefix of that ranking to keep in float
   (all N in float first: when even that misses, no subset meets the budget and the search says so).
3. Each layer of that prefix is tried back in int8, most harmless first; it stays in float only if needed.

Full evaluations (quantize + validate on held-out data) are at most about log2(N) + k + 2 for N ranked layers and
k kept in float; the knob trials are counted separately. The best artifact seen is always kept: the passing one
with fewest layers in float, else the one closest to the budget. The search is a pure function of two callables
(evaluate and rank) so it runs the same way for ONNX and TFLite and can be tested without a runtime.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdeploy.passes.quantize.debug import LayerDebug


@dataclass(frozen=True)
class Knobs:
    """The quantizer settings the cheap stage varies."""

    method: str = "minmax"
    per_channel: bool = True
    symmetric: bool = False
    weight_ops: bool = False  # only Conv/MatMul/Gemm quantized (ONNX), every other op float

    def describe(self) -> str:
        return (f"{self.method}, {'per-channel' if self.per_channel else 'per-tensor'}, "
                f"{'symmetric' if self.symmetric else 'asymmetric'} activations"
                + (", weight ops only" if self.weight_ops else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "per_channel": self.per_channel, "symmetric": self.symmetric,
                "weight_ops_only": self.weight_ops}


@dataclass
class Trial:
    """One full evaluation: the settings, the layers kept in float, and what the gate measured."""

    stage: str  # baseline | knob | all-float | prefix | return
    knobs: Knobs
    exclude: tuple[str, ...]
    passed: bool
    accuracy_drop: float | None
    sqnr_db: float | None
    failure: str = ""
    seconds: float = 0.0

    @property
    def score(self) -> float:
        """Lower is better: the accuracy drop when labelled, else the worst output's negated SQNR."""
        if self.accuracy_drop is not None:
            return float(self.accuracy_drop)
        return -float(self.sqnr_db) if self.sqnr_db is not None and math.isfinite(self.sqnr_db) else math.inf

    def better_than(self, other: Trial | None) -> bool:
        if other is None:
            return True
        if self.passed != other.passed:
            return self.passed
        if self.passed:
            return (len(self.exclude), self.score) < (len(other.exclude), other.score)
        return (self.score, len(self.exclude)) < (other.score, len(other.exclude))

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, **self.knobs.to_dict(), "exclude": list(self.exclude), "kept_float": len(self.exclude),
                "passed": self.passed, "accuracy_drop": self.accuracy_drop, "sqnr_db": self.sqnr_db,
                "failure": self.failure, "seconds": round(self.seconds, 3)}


@dataclass
class SearchResult:
    """What the search tried and what it chose. `met` is False when no trial met the budget (the best is kept)."""

    budget: float | None
    best: Trial
    trials: list[Trial] = field(default_factory=list)
    debug: LayerDebug | None = None
    layers: int = 0
    note: str = ""
    seconds: float = 0.0

    @property
    def met(self) -> bool:
        return self.best.passed

    @property
    def full_evaluations(self) -> int:
        return sum(1 for t in self.trials if t.stage not in ("baseline", "knob"))

    @property
    def knob_trials(self) -> int:
        return sum(1 for t in self.trials if t.stage in ("baseline", "knob"))

    @property
    def evaluation_bound(self) -> float:
        """log2(N) + k + 2, the bound the layer stage promises."""
        return math.log2(max(self.layers, 1)) + len(self.best.exclude) + 2

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "met": self.met, "note": self.note,
                "chosen": {**self.best.knobs.to_dict(), "exclude": list(self.best.exclude),
                           "kept_float": len(self.best.exclude), "accuracy_drop": self.best.accuracy_drop,
                           "sqnr_db": self.best.sqnr_db, "passed": self.best.passed},
                "layers": self.layers,
                "kept_float_fraction": round(len(self.best.exclude) / self.layers, 4) if self.layers else None,
                "knob_trials": self.knob_trials, "full_evaluations": self.full_evaluations,
                "evaluation_bound": round(self.evaluation_bound, 2), "seconds": round(self.seconds, 2),
                "trials": [t.to_dict() for t in self.trials],
                "debug": self.debug.to_dict() if self.debug else None}


Evaluate = Callable[[str, Knobs, tuple[str, ...]], Trial]
Rank = Callable[[Knobs], LayerDebug]


def knob_candidates(base: Knobs, methods: tuple[str, ...] = ("minmax", "entropy", "percentile")) -> list[Knobs]:
    """One knob changed at a time from `base`: the other calibration methods, the other weight granularity, the
    other activation symmetry, and only the weight ops quantized (what an expert tries first on a graph whose
    normalisations are spelled out in element-wise ops)."""
    out = [dataclasses.replace(base, method=m) for m in methods if m != base.method]
    out.append(dataclasses.replace(base, per_channel=not base.per_channel))
    out.append(dataclasses.replace(base, symmetric=not base.symmetric))
    if not base.weight_ops:
        out.append(dataclasses.replace(base, weight_ops=True))
    return out


def budget_search(evaluate: Evaluate, rank: Rank, base: Knobs, budget: float | None, *,
                  knobs: list[Knobs] | None = None, on_stage: Callable[[str], None] | None = None) -> SearchResult:
    """Run the three stages (module docstring). `evaluate(stage, knobs, exclude)` quantizes and gates one setting;
    `rank(knobs)` measures the layers of the int8 model for those knobs."""
    stage = on_stage or (lambda text: None)
    t0 = time.perf_counter()
    trials: list[Trial] = []
    best: Trial | None = None

    seen: dict[tuple[Knobs, frozenset[str]], Trial] = {}

    def run(kind: str, k: Knobs, exclude: tuple[str, ...]) -> Trial:
        nonlocal best
        key = (k, frozenset(exclude))
        if key in seen:  # the return stage can ask again for a set the prefix stage measured
            return seen[key]
        stage(f"accuracy budget: {kind} trial {len(trials) + 1} ({k.describe()}, {len(exclude)} layer(s) in float)")
        t = evaluate(kind, k, exclude)
        trials.append(t)
        seen[key] = t
        if t.better_than(best):
            best = t
        return t

    def done(note: str, debug: LayerDebug | None = None, layers: int = 0) -> SearchResult:
        assert best is not None
        return SearchResult(budget, best, trials, debug, layers, note, time.perf_counter() - t0)

    first = run("baseline", base, ())
    if first.passed:
        return done("plain int8 meets the budget: nothing to search")
    knob_trials = [run("knob", k, ()) for k in (knobs if knobs is not None else knob_candidates(base))]
    passing = [t for t in knob_trials if t.passed]
    if passing:
        win = min(passing, key=lambda t: (t.knobs.weight_ops, t.score))  # int8 everywhere, when that passes too
        note = f"a cheaper knob meets the budget: {win.knobs.describe()}"
        if win.knobs.weight_ops:
            note += " (Conv/MatMul/Gemm in int8, every other op in float)"
        best = win
        return done(note)
    chosen = min([first, *knob_trials], key=lambda t: t.score).knobs
    stage(f"accuracy budget: ranking layers ({chosen.describe()})")
    debug = rank(chosen)
    ranking = debug.ranking()
    n = len(ranking)
    if n == 0:
        return done("no quantized layer to keep in float", debug, 0)
    everything = run("all-float", chosen, tuple(ranking))
    if not everything.passed:
        return done(f"no subset of the {n} ranked layers meets the budget: even all of them in float misses it; "
                    "the best artifact found is kept", debug, n)
    lo, hi = 0, n  # prefix lo fails (0 = plain int8 with these knobs, measured above), prefix hi passes
    passing_prefix = everything
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t = run("prefix", chosen, tuple(ranking[:mid]))
        if t.passed:
            hi, passing_prefix = mid, t
        else:
            lo = mid
    kept = return_to_int8(lambda subset: run("return", chosen, subset).passed, list(passing_prefix.exclude))
    return done(f"kept {len(kept)} of {n} layers in float ({chosen.describe()})", debug, n)


def return_to_int8(passes: Callable[[tuple[str, ...]], bool], prefix: list[str]) -> list[str]:
    """Stage 3: the layers of a passing `prefix` (ranked worst first) that must stay in float. The last one is
    needed (the prefix without it failed). The others go back to int8 least harmful first, in groups that double
    after each success and halve after a failure (a group of one that fails is needed): a prefix whose layers are
    all needed costs one evaluation per layer, as trying each alone does, while a ranking that put many harmless
    layers ahead of the needed ones costs about log2 of their number instead of one each."""
    kept = list(prefix)
    order = list(reversed(prefix[:-1]))
    pos, size = 0, 1
    while pos < len(order):
        group = order[pos:pos + size]
        trial = [x for x in kept if x not in group]
        if passes(tuple(trial)):
            kept, pos, size = trial, pos + len(group), size * 2
        elif len(group) == 1:
            pos, size = pos + 1, 1
        else:
            size = max(1, len(group) // 2)
    return kept
