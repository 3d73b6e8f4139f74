"""Benchmark `mdeploy optimize` on the MobileNetV2 sample against the same steps done by hand with each peer tool.

The peer side is what a user runs today, one process per step: a Keras export script, the tf2onnx CLI, the
onnxsim CLI, an onnxruntime quantization script, a TFLite converter script and a validation script. Both sides
get the same calibration and validation .npz. Each side's wall time and peak memory (the largest summed RSS of
its whole process tree, sampled every 50 ms from here) are measured in one invocation, side by side.

    /work/venv/bin/python benchmarks/optimize_vs_peers.py [--repeat N] [--json]

This script itself imports only numpy and psutil, so its own memory never enters a measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
SAMPLE_MODEL = REPO / "sample_models" / "mobilenet_v2.keras"
INPUT_NAME = "image"
INPUT_SHAPE = (224, 224, 3)
SAMPLE_INTERVAL_S = 0.05
MB = 1024 * 1024
ONNX_BRANCH_STEPS = ("convert.onnx", "simplify", "quantize.onnx")

# --------------------------------------------------------------------------- the peer scripts
# Each is what a user would write for the step, reading argv; a script may print one `PHASES {json}`
# line so that a step doing two things (float and int8 TFLite) can show both times.

EXPORT_SAVEDMODEL = """
import sys
import keras

model = keras.saving.load_model(sys.argv[1], compile=False)
model.export(sys.argv[2])  # Keras 3: a SavedModel with a serving_default signature
"""

QUANTIZE_ONNX = """
import sys
import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

src, pre, dst, calibration = sys.argv[1:5]


class NpzReader(CalibrationDataReader):
    def __init__(self, path, name, batch=32):
        images = np.load(path)[name]
        self.batches = iter([{name: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self.batches, None)


quant_pre_process(src, pre)
quantize_static(pre, dst, NpzReader(calibration, "image"), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax)
"""

CONVERT_TFLITE = """
import json
import sys
import time
import numpy as np
import tensorflow as tf

savedmodel, float_path, int8_path, calibration = sys.argv[1:5]
phases = {}

t0 = time.perf_counter()
converter = tf.lite.TFLiteConverter.from_saved_model(savedmodel)
open(float_path, "wb").write(converter.convert())
phases["tflite float32"] = time.perf_counter() - t0

t0 = time.perf_counter()
images = np.load(calibration)["image"]


def representative_dataset():
    for i in range(len(images)):
        yield [images[i:i + 1]]


converter = tf.lite.TFLiteConverter.from_saved_model(savedmodel)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
converter.representative_dataset = representative_dataset
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
open(int8_path, "wb").write(converter.convert())  # float input/output, int8 inside
phases["tflite int8"] = time.perf_counter() - t0
print("PHASES " + json.dumps(phases))
"""

VALIDATE = """
import json
import sys
import numpy as np
import keras
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter

keras_path, validation, *candidates = sys.argv[1:]
images = np.load(validation)["image"]
reference = keras.saving.load_model(keras_path, compile=False)
ref = np.concatenate([np.asarray(reference(images[i:i + 32], training=False)) for i in range(0, len(images), 32)])


def run_onnx(path):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + 32]})[0] for i in range(0, len(images), 32)])


def run_tflite(path):
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for i in range(len(images)):  # converted with batch 1
        interpreter.set_tensor(inp["index"], images[i:i + 1])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(rows)


results = {}
for path in candidates:
    out = run_onnx(path) if path.endswith(".onnx") else run_tflite(path)
    results[path.rsplit("/", 1)[-1]] = {
        "max_abs_error": float(np.max(np.abs(out - ref))),
        "top1_agreement": float(np.mean(out.argmax(-1) == ref.argmax(-1))),
    }
print(json.dumps(results, indent=1))
print("PHASES " + json.dumps({}))
"""


# --------------------------------------------------------------------------- measuring a process tree

@dataclass
class Measured:
    """One process (tree): wall time, the largest summed RSS seen, its CPU time, the CPU other processes on the
    machine used meanwhile (in cores: the noise), exit code, and the phases it reported."""

    name: str
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    other_load_cores: float
    returncode: int
    phases: dict[str, float] = field(default_factory=dict)


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in members:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def children_cpu_s() -> float:
    """CPU time of every waited-for descendant so far (a child's own waited-for children included)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(name: str, cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> Measured:
    """Run `cmd`, sampling its process tree's summed RSS every SAMPLE_INTERVAL_S; stdout+stderr go to `log`."""
    with open(log, "wb") as out:
        cpu0, busy0 = children_cpu_s(), busy_cpu_s()
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        proc = psutil.Process(child.pid)
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_rss(proc))
            time.sleep(SAMPLE_INTERVAL_S)
        wall = time.perf_counter() - t0
        cpu, busy = children_cpu_s() - cpu0, busy_cpu_s() - busy0
    phases = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("PHASES "):
            phases = {k: round(v, 2) for k, v in json.loads(line[len("PHASES "):]).items()}
    if child.returncode not in (0, 1):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"{name} exited with {child.returncode}:\n{tail}")
    return Measured(name, round(wall, 2), round(peak / MB, 1), round(cpu, 2), round(max(busy - cpu, 0.0) / wall, 2),
                    child.returncode, phases)


# --------------------------------------------------------------------------- the two sides

def make_data(work: Path, samples: int) -> tuple[Path, Path]:
    """Deterministic random images in [0, 1]: one .npz to calibrate on and another to validate on."""
    paths = []
    for kind, seed in (("calibration", 0), ("validation", 1)):
        rng = np.random.default_rng(seed)
        path = work / f"{kind}.npz"
        np.savez(path, **{INPUT_NAME: rng.random((samples, *INPUT_SHAPE), dtype=np.float32)})
        paths.append(path)
    return paths[0], paths[1]


def run_mdeploy(work: Path, model: Path, calibration: Path, validation: Path, jobs: int | None, env) -> dict:
    label = "mdeploy" if jobs is None else f"mdeploy --jobs {jobs}"
    out = work / ("mdeploy-out" if jobs is None else f"mdeploy-out-j{jobs}")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "mdeploy.cli", "optimize", str(model), "-o", str(out), "--calibration", str(calibration),
           "--validation", str(validation), "--no-bench", "--no-cache", "--target", "all"]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    m = measure(label, cmd, work, work / f"{out.name}.log", env)
    report = json.loads((out / "report.json").read_text())
    steps = [{"step": s["pass"], "output": Path(s["output"]).name if s["output"] else "", "seconds": s["seconds"],
              "status": s["status"]} for s in report.get("steps", [])]
    artifacts = {a["name"]: {k: (a.get("validation") or {}).get(k) for k in ("max_abs_error", "top1_agreement")}
                 for a in report.get("artifacts", [])}
    # Where the wall time goes: interpreter and CLI start-up, the steps (the two branches overlap when parallel),
    # and everything outside the steps: reading the model, spawning the branch processes, validation, the report.
    in_process = report.get("seconds") or m.wall_s
    branch = {"onnx": sum(s["seconds"] for s in steps if s["step"] in ONNX_BRANCH_STEPS),
              "tensorflow": sum(s["seconds"] for s in steps if s["step"] not in ONNX_BRANCH_STEPS)}
    from mdeploy.passes.workflows.recipe import default_jobs

    parallel = (jobs if jobs is not None else default_jobs()) > 1
    on_path = max(branch.values()) if parallel else sum(branch.values())
    breakdown = {"startup_s": round(m.wall_s - in_process, 2),
                 **{f"{k}_branch_steps_s": round(v, 2) for k, v in branch.items()},
                 "outside_steps_s": round(in_process - on_path, 2)}
    return {**asdict(m), "steps": steps, "in_process_seconds": in_process, "breakdown": breakdown,
            "validation": artifacts, "gate_ok": report.get("gate", {}).get("ok")}


def run_peers(work: Path, model: Path, calibration: Path, validation: Path, env) -> dict:
    d = work / "peers"
    shutil.rmtree(d, ignore_errors=True)
    (d / "scripts").mkdir(parents=True)
    scripts = {}
    for name, text in (("export_savedmodel", EXPORT_SAVEDMODEL), ("quantize_onnx", QUANTIZE_ONNX),
                       ("convert_tflite", CONVERT_TFLITE), ("validate", VALIDATE)):
        scripts[name] = d / "scripts" / f"{name}.py"
        scripts[name].write_text(textwrap.dedent(text).lstrip())
    py = sys.executable
    sm, onnx_f, onnx_s, onnx_p, onnx_q = d / "savedmodel", d / "model.onnx", d / "model.sim.onnx", d / "model.pre.onnx", d / "model.int8.onnx"
    tfl_f, tfl_q = d / "model.tflite", d / "model.int8.tflite"
    plan = [
        ("keras -> SavedModel (model.export)", [py, str(scripts["export_savedmodel"]), str(model), str(sm)]),
        ("tf2onnx CLI", [py, "-m", "tf2onnx.convert", "--saved-model", str(sm), "--output", str(onnx_f), "--opset", "17"]),
        ("onnxsim CLI", [str(Path(py).parent / "onnxsim"), str(onnx_f), str(onnx_s)]),
        ("onnxruntime quant_pre_process + quantize_static", [py, str(scripts["quantize_onnx"]), str(onnx_s), str(onnx_p),
                                                             str(onnx_q), str(calibration)]),
        ("TFLite converter float32 + int8", [py, str(scripts["convert_tflite"]), str(sm), str(tfl_f), str(tfl_q),
                                             str(calibration)]),
        ("validation (Keras, ORT, LiteRT)", [py, str(scripts["validate"]), str(model), str(validation), str(onnx_s),
                                             str(onnx_q), str(tfl_f), str(tfl_q)]),
    ]
    steps = []
    for i, (name, cmd) in enumerate(plan):
        m = measure(name, cmd, d, d / f"step{i}.log", env)
        if m.returncode != 0:
            raise SystemExit(f"peer step '{name}' failed:\n{(d / f'step{i}.log').read_text(errors='replace')[-3000:]}")
        steps.append(asdict(m))
    log = (d / f"step{len(plan) - 1}.log").read_text()
    validation_result = json.loads(log[log.index("{"):log.index("PHASES")])
    wall = sum(s["wall_s"] for s in steps)
    return {"name": "peers", "wall_s": round(wall, 2), "peak_rss_mb": max(s["peak_rss_mb"] for s in steps),
            "cpu_s": round(sum(s["cpu_s"] for s in steps), 2),
            "other_load_cores": round(sum(s["other_load_cores"] * s["wall_s"] for s in steps) / wall, 2),
            "steps": steps, "validation": validation_result}


# --------------------------------------------------------------------------- machine and report

def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "-"

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1024 ** 3, 1),
            "os": platform.platform(), "python": platform.python_version(),
            **{pkg: v(pkg) for pkg in ("mdeploy", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxsim",
                                       "ai-edge-litert")}}


def median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def summarize(runs: dict[str, list[dict]]) -> dict:
    med = {side: {k: median(rs, k) for k in ("wall_s", "peak_rss_mb", "cpu_s", "other_load_cores")}
           for side, rs in runs.items()}
    md, parallel, peers = med["mdeploy"], med["mdeploy_parallel"], med["peers"]
    ratios = {
        "peer_time_over_mdeploy": round(peers["wall_s"] / md["wall_s"], 2),
        "peer_peak_over_mdeploy": round(peers["peak_rss_mb"] / md["peak_rss_mb"], 2),
        "peer_cpu_over_mdeploy": round(peers["cpu_s"] / md["cpu_s"], 2),
        "peer_time_over_mdeploy_parallel": round(peers["wall_s"] / parallel["wall_s"], 2),
        "peer_peak_over_mdeploy_parallel": round(peers["peak_rss_mb"] / parallel["peak_rss_mb"], 2),
        "default_time_over_parallel": round(md["wall_s"] / parallel["wall_s"], 2),
    }
    # Ratios per repeat: the machine is noisy, and each repeat ran both sides back to back.
    per_repeat = [{"peer_time_over_mdeploy": round(p["wall_s"] / m["wall_s"], 2),
                   "peer_time_over_mdeploy_parallel": round(p["wall_s"] / s["wall_s"], 2),
                   "peer_peak_over_mdeploy": round(p["peak_rss_mb"] / m["peak_rss_mb"], 2)}
                  for m, s, p in zip(runs["mdeploy"], runs["mdeploy_parallel"], runs["peers"])]
    return {"median": med, "ratios": ratios, "ratios_per_repeat": per_repeat}


def table(result: dict) -> str:
    runs, summary = result["runs"], result["summary"]
    lines = [f"{'side':<28} {'wall s':>8} {'peak RSS MB':>12} {'CPU s':>8} {'other load':>11}"
             f"  (median of {result['config']['repeat']})"]
    for side, label in (("mdeploy", "mdeploy optimize (default)"), ("mdeploy_parallel", "mdeploy optimize --jobs 2"),
                        ("peers", "peer tools, by hand")):
        m = summary["median"][side]
        lines.append(f"{label:<28} {m['wall_s']:>8.1f} {m['peak_rss_mb']:>12.0f} {m['cpu_s']:>8.1f} {m['other_load_cores']:>11.2f}")
    lines.append("")
    lines.append("ratios: " + ", ".join(f"{k} {v:g}" for k, v in summary["ratios"].items()))
    lines.append("")
    lines.append(f"  {'peer steps (last repeat)':<48} {'wall s':>6} {'peak MB':>8} {'CPU s':>6}")
    for s in runs["peers"][-1]["steps"]:
        extra = ("  [" + ", ".join(f"{k} {v:.1f}s" for k, v in s["phases"].items()) + "]") if s["phases"] else ""
        lines.append(f"  {s['name']:<48} {s['wall_s']:>6.1f} {s['peak_rss_mb']:>8.0f} {s['cpu_s']:>6.1f}{extra}")
    for side in ("mdeploy", "mdeploy_parallel"):
        last = runs[side][-1]
        lines.append(f"{last['name']} report.json steps (last repeat; in-process total {last['in_process_seconds']} s)")
        for s in last["steps"]:
            lines.append(f"  {s['step']:<20} {s['output']:<22} {s['seconds']:>7.1f}  {s['status']}")
        lines.append("  " + ", ".join(f"{k} {v:.1f}" for k, v in last["breakdown"].items()))
    m = result["machine"]
    lines.append("")
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, python {m['python']}, "
                 f"tensorflow {m['tensorflow']}, onnxruntime {m['onnxruntime']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="rounds; each round runs every side back to back (default 1)")
    parser.add_argument("--samples", type=int, default=64, help="calibration and validation samples (default 64)")
    parser.add_argument("--model", type=Path, default=None, help="Keras model (default: the MobileNetV2 sample, built if missing)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary instead of the table")
    parser.add_argument("--save", type=Path, default=None, help="also write the JSON summary to this file")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # same for both sides; keeps the logs readable
    model = args.model
    if model is None:  # building it is setup, not measured
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import build_mobilenet; "
                        "build_mobilenet.build()", str(REPO / "sample_models")], check=True, env=env)
        model = SAMPLE_MODEL
    model = model.resolve()
    work = Path(tempfile.mkdtemp(prefix="mdeploy-bench-"))
    try:
        calibration, validation = make_data(work, args.samples)
        # Warm the page cache so that whichever side runs first does not pay for cold library files.
        subprocess.run([sys.executable, "-c", "import tensorflow, keras, tf2onnx, onnxruntime, onnxsim, ai_edge_litert"],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs: dict[str, list[dict]] = {"mdeploy": [], "mdeploy_parallel": [], "peers": []}
        sides = {"mdeploy": lambda: run_mdeploy(work, model, calibration, validation, None, env),
                 "mdeploy_parallel": lambda: run_mdeploy(work, model, calibration, validation, 2, env),
                 "peers": lambda: run_peers(work, model, calibration, validation, env)}
        for i in range(args.repeat):
            # Odd rounds run the sides in reverse, so that neither always runs first into the machine's noise.
            for side in (list(sides) if i % 2 == 0 else list(reversed(sides))):
                print(f"round {i + 1}/{args.repeat}: {side}", file=sys.stderr, flush=True)
                runs[side].append(sides[side]())
        result = {"machine": machine(),
                  "config": {"model": str(model), "calibration_samples": args.samples, "validation_samples": args.samples,
                             "repeat": args.repeat, "rss_sample_interval_s": SAMPLE_INTERVAL_S},
                  "runs": runs, "summary": summarize(runs)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.save:
        args.save.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
