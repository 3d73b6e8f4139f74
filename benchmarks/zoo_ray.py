"""`mdeploy zoo --backend ray` against the local backend on this machine: wall time, speedup, scheduling overhead.

Builds a manifest of N models (default 8): half the digits Keras sample (target edge: SavedModel, TFLite, int8),
half the digits model as ONNX (target cloud: simplified, int8), each under its own name. Then, for each round,
runs `mdeploy zoo` cold (a fresh OUTDIR) with `--backend local --jobs 1`, `--backend local --jobs 2` and
`--backend ray` (a Ray instance of the run with all cores), alternating the order between rounds, because the
machine may be shared. Also times starting and stopping a Ray instance alone.

Reported per round: each wall time; speedup = local --jobs 1 / ray; scheduling overhead per model =
(ray wall - local --jobs 2 wall) / N, i.e. what Ray costs over the same parallelism done with local processes,
with and without the instance's start and stop.

    python benchmarks/zoo_ray.py [--models 8] [--rounds 2] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"


def _mdeploy(*args, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mdeploy.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, r


def _manifest(work: Path, n: int) -> Path:
    onnx_dir = work / "digits-onnx"
    if not (onnx_dir / "onnx" / "model.onnx").is_file():
        _, r = _mdeploy("convert", SAMPLES / "digits.keras", "--to", "onnx", "-o", onnx_dir, cwd=work)
        assert r.returncode == 0, r.stderr
    (work / "fast.toml").write_text("[bench]\nruns = 20\nwarmup = 2\n")
    lines = ['[defaults]\nrecipe = "fast.toml"\n'
             f'calibration = "{SAMPLES / "digits_calibration.npz"}"\nvalidation = "{SAMPLES / "digits_validation.npz"}"\n']
    for i in range(n):
        if i % 2 == 0:
            lines.append(f'[[model]]\nname = "digits-keras-{i}"\npath = "{SAMPLES / "digits.keras"}"\ntarget = "edge"\n')
        else:
            lines.append(f'[[model]]\nname = "digits-onnx-{i}"\npath = "{onnx_dir / "onnx" / "model.onnx"}"\ntarget = "cloud"\n')
    manifest = work / "zoo.toml"
    manifest.write_text("\n".join(lines))
    return manifest


def _ray_start_stop() -> float:
    code = ("import time; from mdeploy.passes.workflows.zoo_ray import ray_session\n"
            "t0 = time.perf_counter()\nwith ray_session(None, None, False):\n    pass\nprint(time.perf_counter() - t0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return float(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    runs = {"local --jobs 1": ["--backend", "local", "--jobs", "1"],
            "local --jobs 2": ["--backend", "local", "--jobs", "2"],
            "ray": ["--backend", "ray"]}
    rounds = []
    with tempfile.TemporaryDirectory(prefix="mdeploy-zoo-ray-bench-") as tmp:
        work = Path(tmp)
        manifest = _manifest(work, args.models)
        for k in range(args.rounds):
            order = list(runs) if k % 2 == 0 else list(reversed(runs))
            walls: dict[str, float] = {}
            model_seconds: dict[str, float] = {}
            for label in order:
                out = work / f"out-{k}-{label.replace(' ', '').replace('-', '')}"
                wall, r = _mdeploy("zoo", manifest, "-o", out, *runs[label], "--json", cwd=work)
                assert r.returncode == 0, (label, r.stderr[-2000:])
                rows = json.loads(r.stdout)["models"]
                walls[label] = wall
                model_seconds[label] = sum(m["seconds"] for m in rows)
                print(f"round {k + 1}: {label}: {wall:.1f} s (models' own time {model_seconds[label]:.1f} s)",
                      file=sys.stderr)
            startup = _ray_start_stop()
            n = args.models
            rounds.append({
                "walls": walls, "model_seconds": model_seconds, "ray_start_stop_s": startup,
                "speedup_vs_local_jobs1": walls["local --jobs 1"] / walls["ray"],
                "speedup_vs_local_jobs2": walls["local --jobs 2"] / walls["ray"],
                "overhead_per_model_s": (walls["ray"] - walls["local --jobs 2"]) / n,
                "overhead_per_model_excl_start_stop_s": (walls["ray"] - startup - walls["local --jobs 2"]) / n,
            })
    import psutil

    result = {"models": args.models, "rounds": rounds, "machine": {
        "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(), "python": platform.python_version(),
        "load_avg_after": os.getloadavg()}}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.models} models, {os.cpu_count()} cores, {result['machine']['memory_gb']} GB")
    for i, r in enumerate(rounds, 1):
        w = r["walls"]
        print(f"round {i}: local -j1 {w['local --jobs 1']:.1f} s | local -j2 {w['local --jobs 2']:.1f} s | "
              f"ray {w['ray']:.1f} s | speedup vs -j1 {r['speedup_vs_local_jobs1']:.2f}x, vs -j2 "
              f"{r['speedup_vs_local_jobs2']:.2f}x | Ray start+stop {r['ray_start_stop_s']:.1f} s | overhead/model "
              f"{r['overhead_per_model_s']:.2f} s ({r['overhead_per_model_excl_start_stop_s']:.2f} s without start+stop)")
    med = statistics.median
    print(f"median: speedup vs -j1 {med(r['speedup_vs_local_jobs1'] for r in rounds):.2f}x, overhead/model "
          f"{med(r['overhead_per_model_s'] for r in rounds):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
