"""Is the layer ranking real, and what does the accuracy budget cost? On the outlier benchmark model
(tests/benchmarks/outlier_model.py), for ONNX and TFLite, or on magika (`--model magika`: the corpus content-type
classifier, ONNX only; its labelled data built by benchmarks/corpus/magika_data.py):

1. plain int8 accuracy, and the per-layer ranking (`--debug-layers`);
2. accuracy when the top-3 ranked layers are kept in float, against 3 random layers (several draws): the recovery
   each gives over plain int8;
3. `quantize --accuracy-budget 0.01`: what it chose, its full evaluations, and its time;
4. latency of the float, plain int8 and budget artifacts (`mdeploy bench`, rounds interleaved, median p50).

    python benchmarks/accuracy_budget.py [--draws 10] [--rounds 3] [--formats onnx,tflite] [--model-dir DIR] [--json]
    python benchmarks/corpus/fetch.py --only magika
    python benchmarks/accuracy_budget.py --model magika --formats onnx --samples 64 --draws 3 [--model-dir DIR]
    python benchmarks/accuracy_budget.py --model magika --formats onnx --samples 64 --no-weight-ops-knob  (layer search)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Case:
    """One benchmark model: the file quantize starts from and its labelled calibration / validation data."""

    name: str
    model: Path
    calibration: Path
    validation: Path
    samples: int


def outlier_case(d: Path, samples: int) -> Case:
    sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
    from outlier_model import build

    if not (d / "outlier.keras").is_file():
        build(d)
    return Case("outlier", d / "outlier.keras", d / "outlier_calibration.npz", d / "outlier_validation.npz", samples)


def magika_case(d: Path, samples: int) -> Case:
    sys.path.insert(0, str(REPO / "benchmarks" / "corpus"))
    from fetch import corpus_dir
    from magika_data import build

    model = corpus_dir() / "magika.onnx"
    if not model.is_file():
        raise SystemExit(f"{model}: run python benchmarks/corpus/fetch.py --only magika first")
    if not (d / "magika_validation.npz").is_file():
        build(d)
    return Case("magika", model, d / "magika_calibration.npz", d / "magika_validation.npz", samples)


def evaluate_exclusions(to: str, model: Path, case: Case, out: Path, exclude: tuple[str, ...]) -> float:
    """Accuracy of the int8 artifact of `model` with `exclude` kept in float (a fresh OUTDIR per call). ONNX starts
    from the float ONNX the ranking was measured on: tf2onnx does not name nodes the same way twice."""
    from mdeploy.passes.checks.gates import Thresholds
    from mdeploy.passes.workflows.quantize import quantize

    report = quantize(model, to, "int8", out, calibration=str(case.calibration), validation=str(case.validation),
                      samples=case.samples, exclude=exclude, thresholds=Thresholds(enabled=False), force=True)
    return report.artifact(f"{to}-int8").quality.accuracy


def one_format(to: str, case: Case, work: Path, draws: int, rounds: int, seed: int) -> dict:
    from mdeploy.passes.workflows.bench import bench_models
    from mdeploy.passes.workflows.quantize import quantize

    t0 = time.perf_counter()
    budget_dir = work / f"{to}-budget"
    report = quantize(case.model, to, "int8", budget_dir, calibration=str(case.calibration),
                      validation=str(case.validation), samples=case.samples, accuracy_budget=0.01, debug_layers=True)
    seconds = time.perf_counter() - t0
    rec = report.artifact(f"{to}-int8")
    search, ranking = rec.accuracy_search, [x["node"] for x in rec.layer_errors.layers]
    float_acc = rec.quality.parent_accuracy
    model = budget_dir / "onnx" / "model.onnx" if to == "onnx" and case.model.suffix != ".onnx" else case.model
    plain = evaluate_exclusions(to, model, case, work / f"{to}-plain", ())
    top3 = evaluate_exclusions(to, model, case, work / f"{to}-top3", tuple(ranking[:3]))
    rng = random.Random(seed)
    randoms = []
    for i in range(draws):
        pick = tuple(rng.sample(ranking, 3))
        randoms.append(evaluate_exclusions(to, model, case, work / f"{to}-rand{i}", pick))
    paths = {"float": model if model.suffix == ".onnx" else budget_dir / to / f"model.{to}", "int8": work / f"{to}-plain" / to / f"model.int8.{to}",
             "budget": budget_dir / to / f"model.int8.{to}"}
    p50: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(rounds):
        order = list(paths) if r % 2 == 0 else list(reversed(paths))
        for k, res in zip(order, bench_models([paths[k] for k in order], runs=200, warmup=20)):
            p50[k].append(res["latency_ms"]["p50"])
    med = {k: statistics.median(v) for k, v in p50.items()}
    return {"model": case.name, "samples": case.samples, "rank_samples": rec.layer_errors.samples,
            "rank_seconds": rec.layer_errors.seconds, "format": to, "float_accuracy": float_acc, "plain_int8_accuracy": plain, "layers": len(ranking),
            "top3": ranking[:3], "top3_accuracy": top3, "top3_recovery": top3 - plain,
            "random3_accuracy_mean": statistics.mean(randoms), "random3_accuracy_max": max(randoms),
            "random3_recovery_mean": statistics.mean(randoms) - plain, "random_draws": draws,
            "budget_met": search.met, "budget_accuracy": rec.quality.accuracy, "budget_note": search.note, "kept_float": search.chosen["kept_float"],
            "kept_float_fraction": search.kept_float_fraction, "exclude": search.chosen["exclude"],
            "full_evaluations": search.full_evaluations, "evaluation_bound": search.evaluation_bound,
            "knob_trials": search.knob_trials, "knobs": [(t["method"], t["per_channel"], t["symmetric"], t.get("weight_ops_only", False), t["accuracy_drop"])
                                                        for t in search.trials[:search.knob_trials]],
            "budget_seconds": round(seconds, 1), "p50_ms": med,
            "speed_vs_float": {k: med["float"] / v for k, v in med.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10, help="random 3-layer draws to compare the top 3 with")
    parser.add_argument("--rounds", type=int, default=3, help="benchmark rounds (order alternated)")
    parser.add_argument("--formats", default="onnx,tflite")
    parser.add_argument("--model", choices=("outlier", "magika"), default="outlier")
    parser.add_argument("--model-dir", type=Path, help="reuse a built outlier model / magika data (else built in a temporary dir)")
    parser.add_argument("--samples", type=int, default=200, help="calibration samples (quantize --samples)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-weight-ops-knob", action="store_true",
                        help="ablation: leave the weight-ops-only knob out, so the layer search runs")
    args = parser.parse_args(argv)
    if args.no_weight_ops_knob:
        import mdeploy.passes.workflows.accuracy as accuracy

        options = accuracy.knob_options
        accuracy.knob_options = lambda qpass: [k for k in options(qpass) if not k.weight_ops]
    with tempfile.TemporaryDirectory(prefix="mdeploy-accq-") as tmp:
        work = Path(tmp)
        d = args.model_dir or work / "model"
        case = (outlier_case if args.model == "outlier" else magika_case)(d, args.samples)
        results = [one_format(to, case, work, args.draws, args.rounds, args.seed) for to in args.formats.split(",")]
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return 0
    print("| | float | plain int8 | top-3 ranked in float | 3 random in float (mean / best of draws) | --accuracy-budget 0.01 | kept in float | full evaluations (bound) | knob trials | search time | chosen |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['format']} | {r['float_accuracy']:.2%} | {r['plain_int8_accuracy']:.2%} | {r['top3_accuracy']:.2%} "
              f"| {r['random3_accuracy_mean']:.2%} / {r['random3_accuracy_max']:.2%} ({r['random_draws']} draws) "
              f"| {r['budget_accuracy']:.2%} | {r['kept_float']} of {r['layers']} | {r['full_evaluations']} "
              f"({r['evaluation_bound']:.1f}) | {r['knob_trials']} | {r['budget_seconds']} s | {r['budget_note']} |")
    print()
    print("| | float p50 | plain int8 p50 (vs float) | budget artifact p50 (vs float) |")
    print("|---|---:|---:|---:|")
    for r in results:
        p, s = r["p50_ms"], r["speed_vs_float"]
        print(f"| {r['format']} | {p['float']:.3f} ms | {p['int8']:.3f} ms ({s['int8']:.2f}x) | {p['budget']:.3f} ms ({s['budget']:.2f}x) |")
    for r in results:
        print(f"{r['model']} {r['format']}: calibration samples {r['samples']}; ranked on {r['rank_samples']} samples in "
              f"{r['rank_seconds']:.1f} s")
        print(f"{r['format']}: top 3 = {r['top3']}; kept in float = {r['exclude']}; knobs = {r['knobs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
