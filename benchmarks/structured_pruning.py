"""Does pruning make models faster? Dense vs structured (filters removed, to FLOPs targets) vs unstructured (zeros,
stored dense and in TFLite's sparse format), on MobileNetV2 and the digits CNN, timed side by side in one run on
ONNX Runtime and LiteRT.

Every variant is made by mdeploy's own workflows (prune_structured, prune, convert: each ONNX/TFLite file passed its
parity check against its Keras model). Latency: one process per runtime holds every variant of a model; rounds
interleave them (A B C A B C ...), each round times `--runs` calls per variant, and the figure is the median over
rounds of the per-round median; speedups are the median of per-round ratios to dense, so machine drift cancels.

    python benchmarks/structured_pruning.py                      # both models, FLOPs targets 0.75 and 0.5
    python benchmarks/structured_pruning.py --models digits --rounds 5
    python benchmarks/structured_pruning.py --channel-multiples auto,1,8   # the default beside 1 and 8
A variant whose channels equal an earlier one's (auto and 8 on a model whose widths are all multiples of 8) reuses its
files and is timed again, which shows the noise floor: the same file against itself.
Writes OUT/results.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"


def digits_train(work: Path) -> Path:
    import numpy as np

    sys.path.insert(0, str(SAMPLES))
    from build_digits import INPUT_NAME, load_splits

    (x, y), _, _ = load_splits()
    path = work / "digits_train.npz"
    np.savez(path, **{INPUT_NAME: x, "labels": y})
    return path


def make_variants(model: str, work: Path, targets: list[float], sparsity: float, epochs: int,
                  multiples: list[str]) -> list[dict]:
    """Each variant: name, keras path, flops, params, accuracy, and its converted onnx/tflite paths."""
    import keras

    from mdeploy.passes.prune.fine_tuning import FineTuning
    from mdeploy.passes.prune.flops import model_flops
    from mdeploy.passes.workflows.convert import convert
    from mdeploy.passes.workflows.prune import prune, prune_structured

    if model == "digits":
        source, validation, fine_tune = SAMPLES / "digits.keras", SAMPLES / "digits_validation.npz", digits_train(work)
    else:
        sys.path.insert(0, str(SAMPLES))
        from build_mobilenet import build

        source, validation, fine_tune = build(), None, None  # random weights: speed only, no accuracy
    dense = model_flops(keras.models.load_model(source))
    tuning = FineTuning(str(fine_tune), epochs=epochs) if fine_tune else None
    variants = [{"name": "dense", "slug": "dense", "keras": source, "flops": dense["flops"], "params": dense["params"]}]
    for t in targets:
        for multiple in multiples:
            out = work / f"{model}-structured-{t}-m{multiple}"
            report = prune_structured(source, out, flops_target=t, multiple=multiple, fine_tuning=tuning,
                                      data=str(validation) if validation else None, latency_runs=0)
            s = report.artifacts[-1].structured
            kept = [g["kept"] for g in s.groups]
            same = next((v for v in variants if v.get("kept") == kept), None)
            variants.append({"name": f"structured {t:g}x FLOPs, multiple {multiple}", "slug": f"structured-{t}-m{multiple}",
                             "keras": out / report.artifacts[-1].path, "flops": s.flops_after, "params": s.params_after,
                             "ratio": s.ratio, "kept": kept, "widths": sorted({g["kept"] for g in s.groups}),
                             "multiples": sorted({g["multiple"] for g in s.groups if g.get("multiple")}),
                             "same_as": same["name"] if same else None,
                             "accuracy_before": s.accuracy_before, "accuracy_after": s.accuracy_after,
                             "fine_tuned": bool(s.fine_tune)})
    out = work / f"{model}-sparse"
    report = prune(source, sparsity, out, data=str(validation) if validation else None, fine_tuning=tuning)
    p = report.artifacts[-1].pruning
    variants.append({"name": f"unstructured {sparsity:g} sparsity", "slug": "unstructured", "keras": out / report.artifacts[-1].path,
                     "flops": dense["flops"], "params": dense["params"], "sparsity": p.extra.get("achieved_sparsity"),
                     "accuracy_before": p.accuracy_before, "accuracy_after": p.accuracy_after, "sparse_tflite": True})
    for v in variants:
        slug = v["slug"]
        if v.get("same_as"):  # the same channels: the same model, so its files (timed again: the noise floor)
            twin = next(u for u in variants if u["name"] == v["same_as"])
            v.update(onnx=twin["onnx"], tflite=twin["tflite"], accuracy_after=twin.get("accuracy_after"))
            v["keras"] = str(v["keras"])
            continue
        conv = convert(v["keras"], ["onnx", "tflite"], work / f"{model}-{slug}-converted")
        assert conv.ok, f"{v['name']}: conversion failed parity"
        for a in conv.artifacts:
            v[a.format] = str(work / f"{model}-{slug}-converted" / a.path)
        if v.get("sparse_tflite"):
            v["tflite_sparse"], v["sparse_tensors"] = sparse_tflite(v["keras"], work / f"{model}-{slug}-sparse.tflite")
        v["keras"] = str(v["keras"])
        v.setdefault("accuracy_after", None)
    if validation is not None:
        for v in variants:
            v["accuracy_tflite"] = tflite_accuracy(v["tflite"], validation)
    return variants


def sparse_tflite(keras_path: Path, out: Path) -> tuple[str, int]:
    """The model converted with EXPERIMENTAL_SPARSITY through mdeploy's ToTflite(sparse_weights=True)."""
    from mdeploy.passes.backends import open_artifact
    from mdeploy.passes.convert import ToTflite
    from mdeploy.passes.core.pipeline import Context

    ctx = Context(out_dir=out.parent / (out.stem + "-dir"), force=True, name="m")
    a = ToTflite(sparse_weights=True, file_name="model.sparse.tflite").run(open_artifact(keras_path), ctx)
    return str(a.path), len(a.meta.get("sparse_tensors") or [])


def tflite_accuracy(path: str, validation: Path) -> float:
    import numpy as np

    from mdeploy.passes.backends import load_runner
    from mdeploy.passes.backends.runner import run_batched

    data = dict(np.load(validation))
    labels = data.pop("labels")
    out = next(iter(run_batched(load_runner("tflite", Path(path)), data).values()))
    return float(np.mean(np.argmax(out, -1) == labels))


def time_runtime(fmt: str, paths: dict[str, str], rounds: int, runs: int, threads: int, batch: int) -> dict[str, dict]:
    """In this process: every variant loaded once, then `rounds` interleaved rounds of `runs` timed calls each."""
    import numpy as np

    from mdeploy.passes.backends import load_runner, open_artifact

    runners, feeds = {}, {}
    for name, path in paths.items():
        runners[name] = load_runner(fmt, Path(path), threads)
        a = open_artifact(path)
        feeds[name] = {t.name: np.random.default_rng(0).random([batch if i == 0 else d for i, d in enumerate(t.shape)],
                                                               dtype=np.float32) for t in a.inputs}
        for _ in range(5):
            runners[name](feeds[name])
    per_round: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name in paths:
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                runners[name](feeds[name])
                times.append(time.perf_counter() - t)
            per_round[name].append(statistics.median(times) * 1e3)
    dense = per_round["dense"]
    return {name: {"ms": statistics.median(ms), "speedup": statistics.median(d / m for d, m in zip(dense, ms)),
                   "min_ms": min(ms), "max_ms": max(ms)} for name, ms in per_round.items()}


def machine() -> dict:
    from mdeploy.passes.checks.bench import machine as m

    return m()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits,mobilenet")
    ap.add_argument("--targets", default="0.75,0.5", help="FLOPs targets for structured pruning")
    ap.add_argument("--sparsity", type=float, default=0.75, help="unstructured sparsity (XNNPACK needs >= 2/3)")
    ap.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (digits)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=0, help="timed calls per round (default: 200 digits, 10 mobilenet)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--channel-multiples", default="auto",
                    help="comma-separated --channel-multiple values to build each FLOPs target with, side by side "
                         "(auto: mdeploy's default; 1: any count; 8: every group in multiples of 8)")
    ap.add_argument("--digits-batch", type=int, default=64,
                    help="batch for the digits model: at batch 1 its 0.7 MFLOPs hide under the per-call overhead")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--time-only", type=Path, default=None, help=argparse.SUPPRESS)  # child: JSON job
    args = ap.parse_args(argv)
    if args.time_only:
        job = json.loads(args.time_only.read_text())
        result = time_runtime(job["format"], job["paths"], job["rounds"], job["runs"], job["threads"],
                              job["batch"])
        args.time_only.with_suffix(".out.json").write_text(json.dumps(result))
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="mdeploy-structured-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    targets = [float(t) for t in args.targets.split(",")]
    results = {"machine": machine(), "threads": args.threads, "rounds": args.rounds, "command": " ".join(sys.argv),
               "models": {}}
    for model in args.models.split(","):
        t0 = time.time()
        variants = make_variants(model, out, targets, args.sparsity, args.epochs,
                                 [m.strip() for m in args.channel_multiples.split(",")])
        runs = args.runs or (100 if model == "digits" else 10)
        batch = args.digits_batch if model == "digits" else 1
        timings = {}
        for fmt, key in (("onnx", "onnx"), ("tflite", "tflite"), ("tflite", "tflite_sparse")):
            paths = {v["name"]: v[key] for v in variants if key in v}
            if key == "tflite_sparse":
                paths = {"dense": variants[0]["tflite"], **{f"{n} (sparse format)": p for n, p in paths.items()}}
            job = out / f"{model}-{key}.job.json"
            job.write_text(json.dumps({"format": fmt, "paths": paths, "rounds": args.rounds, "runs": runs,
                                       "threads": args.threads, "batch": batch}))
            subprocess.run([sys.executable, __file__, "--time-only", str(job)], check=True)
            timings[key] = json.loads(job.with_suffix(".out.json").read_text())
        results["models"][model] = {"variants": variants, "latency": timings, "batch": batch,
                                    "seconds": round(time.time() - t0)}
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    print(f"\nresults: {out / 'results.json'}")
    return 0


def table(results: dict) -> str:
    lines = [f"machine: {results['machine'].get('cpu')}, {results['threads']} thread(s), {results['rounds']} rounds, "
             f"command: {results['command']}",
             "", "| model (batch) | variant | FLOPs | params | ONNX Runtime ms (x dense) | LiteRT ms (x dense) | accuracy |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for model, r in results["models"].items():
        for v in r["variants"]:
            o, t = r["latency"]["onnx"][v["name"]], r["latency"]["tflite"][v["name"]]
            acc = v.get("accuracy_tflite")
            name = v["name"] + (f" (= {v['same_as']})" if v.get("same_as") else "")
            lines.append(f"| {model} ({r['batch']}) | {name} | {v['flops'] / 1e6:.2f} M | {v['params'] / 1e3:.0f} k | "
                         f"{o['ms']:.3f} ({o['speedup']:.2f}x) | {t['ms']:.3f} ({t['speedup']:.2f}x) | "
                         f"{'-' if acc is None else f'{100 * acc:.2f}%'} |")
        for name, s in r["latency"]["tflite_sparse"].items():
            if name != "dense":
                v = next(v for v in r["variants"] if name.startswith(v["name"]))
                lines.append(f"| {model} ({r['batch']}) | {name}, {v['sparse_tensors']} sparse tensors | | | | "
                             f"{s['ms']:.3f} ({s['speedup']:.2f}x) | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
