"""int8 against float on MobileNetV2: latency of each artifact on its own runtime, rounds interleaved.

Builds (or reuses) the MobileNetV2 sample, converts it to float ONNX and TFLite, quantizes each to int8 with
`random` calibration (speed does not depend on the calibration data), then runs `mdeploy bench` on the four
artifacts for several rounds, alternating their order, and reports median p50s and the int8 speedups. With
`--threads default,1` every artifact is also timed at each thread count in the same rounds (default: the runtimes' own,
ONNX Runtime's is one thread per physical core), so absolute figures from other benchmarks can be matched to theirs.

    python benchmarks/int8_speedup.py [--rounds 3] [--runs 50] [--threads default,1] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", default="default",
                        help="comma-separated thread counts to time each artifact at (default: the runtime's own)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary instead of the table")
    args = parser.parse_args(argv)
    settings = [None if t.strip() == "default" else int(t) for t in args.threads.split(",")]

    sys.path.insert(0, str(REPO / "sample_models"))
    from build_mobilenet import build

    from mdeploy.passes.workflows.bench import bench_models
    from mdeploy.passes.workflows.convert import convert
    from mdeploy.passes.workflows.quantize import quantize

    model = build()
    with tempfile.TemporaryDirectory(prefix="mdeploy-int8-") as tmp:
        out = Path(tmp)
        convert(model, ["onnx", "tflite"], out)
        for to in ("onnx", "tflite"):
            quantize(model, to, "int8", out, calibration="random", samples=32)
        files = {"onnx float32": out / "onnx" / "model.onnx", "onnx int8": out / "onnx" / "model.int8.onnx",
                 "tflite float32": out / "tflite" / "model.tflite", "tflite int8": out / "tflite" / "model.int8.tflite"}
        paths = {f"{k}{'' if t is None else f' {t} thread' + ('s' if t > 1 else '')}": (v, t)
                 for t in settings for k, v in files.items()}
        p50: dict[str, list[float]] = {k: [] for k in paths}
        for r in range(args.rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for k in order:
                res = bench_models([paths[k][0]], runs=args.runs, warmup=args.warmup, threads=paths[k][1])[0]
                p50[k].append(res["latency_ms"]["p50"])
                machine = res["machine"]
    med = {k: statistics.median(v) for k, v in p50.items()}
    speedups = {}
    for t in settings:
        tail = "" if t is None else f" {t} thread" + ("s" if t > 1 else "")
        for fmt in ("onnx", "tflite"):
            ratios = [f / q for f, q in zip(p50[f"{fmt} float32{tail}"], p50[f"{fmt} int8{tail}"])]
            speedups[f"{fmt}{tail}"] = statistics.median(ratios)  # per round, so drift between rounds cancels
    summary = {"p50_ms_median": med, "p50_ms_rounds": p50, "int8_speedup": speedups,
               "speedup_onnx": speedups.get("onnx"), "speedup_tflite": speedups.get("tflite"),
               "machine": machine, "rounds": args.rounds, "runs": args.runs, "threads": args.threads}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for k, v in med.items():
            print(f"{k:<26} p50 {v:7.3f} ms   rounds: {', '.join(f'{x:.3f}' for x in p50[k])}")
        print("int8 speedup (median of per-round ratios): "
              + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items()))
        print(f"machine: {machine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
