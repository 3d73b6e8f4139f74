"""Every applicable mdeploy command on every real corpus model, each run classified: ok, clean error, wrong, crash.

    python benchmarks/corpus/fetch.py          # once: the third-party ONNX/TFLite corpus
    python benchmarks/real_models.py [--only NAME ...] [--quick] [--json OUT.json] [--timeout S]

Models: the fetched corpus (benchmarks/corpus/models.toml) and the trained Keras corpus
(tests/corpus/build_keras.py, built on first use). mdeploy is driven only through its CLI, one subprocess
per run. A run is
  ok           exit 0, and every artifact it wrote loads and runs on its runtime (ONNX Runtime, LiteRT) on
               realistic inputs, with the source's inputs, and matches the source where parity is meaningful
               (convert, simplify: max|err| <= 1e-3 * max(1, max|ref|)); quantized artifacts must run,
               keep the output shapes and stay finite;
  clean error  exit 1/2/3 with exactly one `error:` line and one `hint:` line and no traceback;
  wrong        exit 0 with an artifact that is missing, fails to load or run, or does not match;
  noisy        exit 0, but a native library's own log line (ONNX Runtime, absl, TensorFlow, LiteRT) on stderr,
               which mdeploy silences unless --verbose;
  crash        a traceback, an `unexpected ...Error`, a signal, or the timeout.
Prints a markdown table (model x command) and writes JSON (default benchmarks/real_models.json).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "corpus"))
import fetch as corpus_fetch  # noqa: E402

PARITY_TOL = 1e-3
# Commands per source format: (label, mdeploy arguments after MODEL). OUT is the run's output path.
COMMANDS = {
    "onnx": [
        ("inspect", ["inspect", "{model}"]),
        ("simplify", ["simplify", "{model}", "-o", "{out}/simplified.onnx"]),
        ("quantize-dynamic", ["quantize", "{model}", "--to", "onnx", "--mode", "dynamic", "-o", "{out}"]),
        ("quantize-int8", ["quantize", "{model}", "--to", "onnx", "--mode", "int8", "--calibration", "random", "-o", "{out}"]),
        ("debug-layers", ["quantize", "{model}", "--to", "onnx", "--calibration", "random", "--debug-layers", "--no-gate",
                          "-o", "{out}"]),
    ],
    "tflite": [
        ("inspect", ["inspect", "{model}"]),
        ("convert", ["convert", "{model}", "--to", "onnx", "-o", "{out}"]),
    ],
    "keras": [
        ("inspect", ["inspect", "{model}"]),
        ("convert", ["convert", "{model}", "--to", "onnx,tflite", "-o", "{out}"]),
        ("quantize-dynamic", ["quantize", "{model}", "--to", "onnx", "--mode", "dynamic", "-o", "{out}"]),
        ("quantize-int8", ["quantize", "{model}", "--to", "tflite", "--mode", "int8", "--calibration", "random", "-o", "{out}"]),
        ("debug-layers", ["quantize", "{model}", "--to", "tflite", "--calibration", "random", "--debug-layers", "--no-gate",
                          "-o", "{out}"]),
    ],
}
# what a quiet run must not print: ONNX Runtime's, absl's, TensorFlow's and LiteRT's own log lines
NATIVE_NOISE = re.compile(r"\[[EWIF]:onnxruntime|^[EWIF]\d{4} \d\d:\d\d:\d\d|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [EWI] "
                          r"|^WARNING: All log messages before absl|^INFO: Created TensorFlow Lite", re.M)
CUSTOM_OBJECT_MODELS = {"keras-custom-layer", "keras-subclassed"}  # classes defined in tests/corpus/build_keras.py
QUICK_COMMANDS = {"inspect", "convert", "simplify", "quantize-dynamic"}
# one model per family in --quick
QUICK_MODELS = {"onnx-resnet50", "silero-vad", "magika", "ppocr-det", "ppocr-cls", "nudenet-yolov8n",
                "mp-face-detection-short", "mp-face-detection-full-sparse", "mp-selfie-segmentation",
                "keras-normalization", "keras-lstm", "keras-dynamic-cnn", "keras-multi-io", "keras-custom-layer"}


@dataclass
class Model:
    name: str
    format: str  # onnx | tflite | keras
    path: Path
    domain: str = ""
    inputs: dict = field(default_factory=dict)  # spec from models.toml
    data: Path | None = None  # .npz of realistic inputs (Keras corpus)


@dataclass
class Run:
    model: str
    command: str
    verdict: str  # ok | clean error | wrong | crash | n/a
    reason: str = ""
    exit_code: int | None = None
    seconds: float = 0.0
    argv: list = field(default_factory=list)
    parity: dict = field(default_factory=dict)


# ---------------------------------------------------------------- models and realistic inputs

def corpus_models(cache: Path) -> list[Model]:
    manifest = cache / "manifest.json"
    if not manifest.exists():
        return []
    return [Model(e["name"], e["format"], cache / e["file"], e.get("domain", ""), e.get("inputs", {}))
            for e in json.loads(manifest.read_text())["models"] if (cache / e["file"]).exists()]


def keras_models(only: set[str] | None) -> list[Model]:
    cmd = [sys.executable, str(REPO / "tests" / "corpus" / "build_keras.py")]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    directory = Path(os.environ.get("MDEPLOY_CORPUS_DIR") or REPO / "sample_models/.cache/corpus") / "keras"
    return [Model(p.stem, "keras", p, "keras", data=p.with_suffix(".npz")) for p in sorted(directory.glob("*.keras"))]


def generated(shape, dtype, kind: str, rng, value=None, high=None) -> np.ndarray:
    dtype = np.dtype(dtype)
    if kind == "const":
        return np.full(shape, value, dtype=dtype)
    if kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    if kind == "tokens" or dtype.kind in "iu":
        return rng.integers(0, high or 100, size=shape).astype(dtype)
    if kind == "audio":
        t = np.arange(int(np.prod(shape))) / 16000.0
        wave = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)
        return wave.reshape(shape).astype(dtype)
    return rng.random(shape).astype(dtype)  # images and the rest: uniform 0..1


def resolve_shape(shape, spatial=224) -> list[int]:
    # the documented defaults of issue 11: batch 1, other unknown dims a spatial-like 224 (or 16 for 2-D sequences)
    dims = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        else:
            dims.append(1 if i == 0 else (16 if len(shape) == 2 else spatial))
    return dims


ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32",
             "tensor(float16)": "float16", "tensor(bool)": "bool", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


def realistic_inputs(model: Model, signature: list[tuple[str, list, str]]) -> dict[str, np.ndarray]:
    """Inputs for `signature` [(name, shape, dtype)]: the model's own spec or data first, else generated."""
    rng = np.random.default_rng(0)
    if model.data is not None:
        with np.load(model.data) as z:
            stored = {k: z[k][:2] for k in z.files}
        if len(stored) == 1 and len(signature) == 1:
            return {signature[0][0]: next(iter(stored.values())).astype(signature[0][2])}
        return {n: stored[n].astype(dt) for n, _, dt in signature if n in stored} | {
            n: stored[_strip(n)].astype(dt) for n, _, dt in signature if n not in stored and _strip(n) in stored}
    feeds = {}
    for name, shape, dtype in signature:
        spec = model.inputs.get(name, {})
        shp = spec.get("shape") or resolve_shape(shape)
        kind = spec.get("kind", "image")
        feeds[name] = generated(shp, dtype, kind, rng, spec.get("value"), spec.get("high"))
    return feeds


def _strip(name: str) -> str:
    return re.sub(r"(:0|_\d+)$", "", name)


# ---------------------------------------------------------------- runtimes (the checker's own, not mdeploy's)

def onnx_signature(path):
    import onnxruntime as ort
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s, [(i.name, i.shape, ORT_TYPES.get(i.type, "float32")) for i in s.get_inputs()]


def run_onnx(path, feeds_for) -> dict[str, np.ndarray]:
    session, sig = onnx_signature(path)
    feeds = feeds_for(sig)
    missing = [n for n, _, _ in sig if n not in feeds]
    if missing:
        raise CheckFailure(f"ONNX needs inputs the source does not have: {missing}")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {n: feeds[n] for n, _, _ in sig})))


def tflite_signature(interp):
    return [(d["name"], d["shape_signature"].tolist() if len(d["shape_signature"]) else d["shape"].tolist(),
             np.dtype(d["dtype"]).name) for d in interp.get_input_details()]


def run_tflite(path, feeds_for) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=str(path))
    sig = tflite_signature(interp)
    feeds = feeds_for(sig)
    rows = {len(v) for v in feeds.values() if np.ndim(v)}
    if sig and all(shape and shape[0] == 1 for _, shape, _ in sig) and rows and max(rows) > 1 and len(rows) == 1:
        # a model converted with a fixed batch of 1 (mdeploy's recurrent route) is run as it declares: a row at a time
        parts = [run_tflite(path, lambda _sig, i=i: {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(max(rows))]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    details = interp.get_input_details()
    for d in details:
        x = _match_feed(d["name"], feeds, sig)
        if list(x.shape) != d["shape"].tolist():
            interp.resize_tensor_input(d["index"], list(x.shape))
    interp.allocate_tensors()
    for d in interp.get_input_details():
        x = _match_feed(d["name"], feeds, sig)
        if d["dtype"] == np.int8 and x.dtype != np.int8:  # integer-only I/O
            scale, zp = d["quantization"]
            x = np.clip(np.round(x / scale + zp), -128, 127).astype(np.int8)
        interp.set_tensor(d["index"], x.astype(d["dtype"]))
    interp.invoke()
    out = {}
    for d in interp.get_output_details():
        y = interp.get_tensor(d["index"])
        if d["dtype"] == np.int8:
            scale, zp = d["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        out[d["name"]] = y
    return out


def _match_feed(name, feeds, sig):
    key = _feed_key(name, feeds)
    if key is not None:
        return feeds[key]
    raise CheckFailure(f"no realistic input for TFLite input {name!r}")


_KERAS = {}


def run_keras(model: Model) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    if model.name not in _KERAS:
        sys.path.insert(0, str(REPO / "tests" / "corpus"))
        import build_keras  # noqa: F401  registers the corpus' custom layer and subclassed model
        import keras
        m = keras.saving.load_model(model.path)
        with np.load(model.data) as z:
            feeds = {k: z[k][:2] for k in z.files}
        x = feeds if len(feeds) > 1 else next(iter(feeds.values()))
        y = m(x)
        ys = y if isinstance(y, (list, tuple)) else [y]
        names = list(getattr(m, "output_names", None) or []) or [f"output_{i}" for i in range(len(ys))]
        _KERAS[model.name] = (feeds, {n: np.asarray(v) for n, v in zip(names, ys)})
    return _KERAS[model.name]


class CheckFailure(Exception):
    pass


def compare(ref: dict, got: dict, tol: float | None) -> dict:
    """Pair outputs by name, else by position among same-shaped ones; return the worst relative error."""
    unused = dict(got)
    worst, pairs = 0.0, {}
    for i, (name, r) in enumerate(ref.items()):
        cand = unused.pop(name, None)
        if cand is None:
            same = [k for k in unused if np.asarray(unused[k]).size == np.asarray(r).size]
            if not same:
                raise CheckFailure(f"no output matching {name} {np.shape(r)} among {[np.shape(v) for v in got.values()]}")
            cand = unused.pop(same[0])
        r, c = np.asarray(r, np.float64), np.asarray(cand, np.float64).reshape(np.shape(r))
        if not np.isfinite(c).all():
            raise CheckFailure(f"output {name} has NaN/Inf")
        err = float(np.max(np.abs(r - c))) / max(1.0, float(np.max(np.abs(r)))) if r.size else 0.0
        pairs[name] = round(err, 8)
        worst = max(worst, err)
    if tol is not None and worst > tol:
        raise CheckFailure(f"parity: rel error {worst:.3g} > {tol:g}")
    return {"rel_error": worst, "outputs": pairs}


# ---------------------------------------------------------------- checking what a run wrote

def artifacts_of(out: Path, command: str) -> list[tuple[str, Path]]:
    if command == "simplify":
        return [("onnx", out / "simplified.onnx")]
    report = out / "report.json"
    if not report.exists():
        return []
    arts = json.loads(report.read_text()).get("artifacts", [])
    if command.startswith("quantize") or command == "debug-layers":
        arts = [a for a in arts if a.get("produced_by", {}).get("pass", "").startswith("quantize")]
    return [(a["format"], out / a["path"]) for a in arts if a["format"] in ("onnx", "tflite")]


def check_artifacts(model: Model, command: str, out: Path) -> dict:
    arts = artifacts_of(out, command)
    if command == "inspect":
        return {}
    if not arts:
        raise CheckFailure("exit 0 but no artifact recorded")
    if command == "debug-layers":
        records = json.loads((out / "report.json").read_text())["artifacts"]
        measured = [len((a.get("layer_errors") or {}).get("layers", [])) for a in records if a["name"].endswith("-int8")]
        if not measured or not measured[0]:
            raise CheckFailure("exit 0 but the int8 record has no measured layers")
    # the source's reference outputs on realistic inputs
    if model.format == "keras":
        feeds, ref = run_keras(model)
        feeds_for = lambda sig: _keras_feeds(feeds, sig)  # noqa: E731
    else:
        feeds_cache = {}

        def feeds_for(sig):
            if "feeds" not in feeds_cache:
                feeds_cache["feeds"] = realistic_inputs(model, sig)
            return feeds_cache["feeds"]
        ref = (run_onnx if model.format == "onnx" else run_tflite)(model.path, feeds_for)
    results = {}
    for fmt, path in arts:
        if not path.exists():
            raise CheckFailure(f"artifact {path.name} recorded but missing")
        try:
            got = (run_onnx if fmt == "onnx" else run_tflite)(path, feeds_for)
        except CheckFailure:
            raise
        except Exception as e:  # noqa: BLE001  a broken artifact is what we are looking for
            raise CheckFailure(f"{fmt} artifact fails to run: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        quantized = command.startswith("quantize") or command == "debug-layers"
        results[f"{fmt}:{path.name}"] = compare(ref, got, None if quantized else PARITY_TOL)
    return results


def _keras_feeds(feeds: dict, sig) -> dict:
    out = {}
    for name, shape, dtype in sig:
        key = _feed_key(name, feeds)
        if key is not None:
            out[name] = feeds[key].astype(dtype)
    return out


def _feed_key(name: str, feeds: dict) -> str | None:
    """The source input an artifact's input stands for: same name, or TFLite's serving_default_NAME:0 form."""
    if name in feeds:
        return name
    bare = _strip(name)
    for key in feeds:
        if bare == key or bare.endswith("_" + key) or bare.endswith("/" + key):
            return key
    return next(iter(feeds)) if len(feeds) == 1 else None


# ---------------------------------------------------------------- one run

def classify_failure(code: int, stderr: str) -> tuple[str, str]:
    lines = stderr.splitlines()
    errors = [line for line in lines if re.match(r"^error:", line, re.I)]
    hints = [line for line in lines if re.match(r"^hint:", line, re.I)]
    first = errors[0] if errors else next((line for line in reversed(lines) if line.strip()), "")
    if "Traceback (most recent call last)" in stderr:
        exc = next((line for line in reversed(lines) if re.match(r"^\w+(\.\w+)*(Error|Exception)\b", line)), first)
        return "crash", f"traceback: {exc}"
    if code < 0 or code not in (1, 2, 3):
        return "crash", f"exit {code}: {first}"
    if re.search(r"unexpected \w*(Error|Exception)", stderr, re.I):
        return "crash", first
    if len(errors) == 1 and len(hints) == 1:
        return "clean error", f"exit {code}: {errors[0].split(':', 1)[1].strip()}"
    return "crash", f"exit {code} with {len(errors)} error: and {len(hints)} hint: lines: {first}"


def run_one(model: Model, label: str, args: list[str], timeout: float, workdir: Path) -> Run:
    out = workdir / f"{model.name}--{label}"
    out.mkdir(parents=True, exist_ok=True)
    argv = [a.format(model=model.path, out=out) for a in args]
    # the custom-class models run as a user would after reading the hint: with the module that defines the classes
    pre = ["--custom-objects", "build_keras"] if model.name in CUSTOM_OBJECT_MODELS else []
    cmd = [sys.executable, "-m", "mdeploy.cli", *pre, *argv]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO / "tests" / "corpus" if pre else None,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except subprocess.TimeoutExpired:
        return Run(model.name, label, "crash", f"timeout after {timeout:.0f} s", None, time.monotonic() - t0, argv)
    seconds = time.monotonic() - t0
    run = Run(model.name, label, "ok", "", proc.returncode, seconds, argv)
    if proc.returncode != 0:
        run.verdict, run.reason = classify_failure(proc.returncode, proc.stderr)
        return run
    if "Traceback (most recent call last)" in proc.stderr:
        run.verdict, run.reason = "crash", "exit 0 but a traceback on stderr"
        return run
    noise = NATIVE_NOISE.search(proc.stderr)
    if noise:
        line = next(x for x in proc.stderr.splitlines() if NATIVE_NOISE.search(x))
        run.verdict, run.reason = "noisy", f"a native library's log line on stderr: {line.strip()[:120]}"
        return run
    try:
        run.parity = check_artifacts(model, label, out)
    except CheckFailure as e:
        run.verdict, run.reason = "wrong", str(e)
    except Exception as e:  # noqa: BLE001  the source itself fails on the checker's runtime
        run.verdict, run.reason = "ok", f"(source not runnable by the checker: {type(e).__name__}: {str(e)[:100]})"
    return run


# ---------------------------------------------------------------- table

SYMBOL = {"ok": "ok", "clean error": "err", "wrong": "**WRONG**", "crash": "**CRASH**", "noisy": "**NOISY**", "n/a": ""}


def table(runs: list[Run], commands: list[str]) -> str:
    by = {(r.model, r.command): r for r in runs}
    models = list(dict.fromkeys(r.model for r in runs))
    lines = ["| model | " + " | ".join(commands) + " |", "|---|" + "---|" * len(commands)]
    for m in models:
        cells = []
        for c in commands:
            r = by.get((m, c))
            if r is None:
                cells.append("")
                continue
            text = SYMBOL[r.verdict]
            if r.verdict != "ok":
                text += ": " + _short(r.reason)
            elif r.parity:
                err = max(v["rel_error"] for v in r.parity.values())
                text += f" (q {err:.0e})" if c.startswith("quantize") or c == "debug-layers" else f" ({err:.0e})"
            cells.append(text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    counts = {v: sum(r.verdict == v for r in runs) for v in ("ok", "clean error", "wrong", "noisy", "crash")}
    lines.append("")
    lines.append(f"{len(runs)} runs: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines)


def _short(text: str, n: int = 70) -> str:
    text = re.sub(r"(?<![\w.])/[\w./+-]+/([\w.+-]+)", r"\1", text)  # paths to their file names
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="model names (repeat or comma-separate)")
    parser.add_argument("--commands", help="comma-separated command labels to run")
    parser.add_argument("--quick", action="store_true", help="one model per family, no int8")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "real_models.json")
    parser.add_argument("--workdir", type=Path, help="keep outputs here (default: a temporary directory)")
    args = parser.parse_args()
    only = {n for o in args.only or [] for n in o.split(",") if n}
    cache = corpus_fetch.corpus_dir()
    models = corpus_models(cache)
    if not models:
        print(f"no fetched corpus in {cache}: run benchmarks/corpus/fetch.py (Keras corpus only)", file=sys.stderr)
    models += keras_models(only)
    if only:
        models = [m for m in models if m.name in only]
    if args.quick:
        models = [m for m in models if m.name in QUICK_MODELS]
    wanted = set(args.commands.split(",")) if args.commands else (QUICK_COMMANDS if args.quick else None)
    runs = []
    with tempfile.TemporaryDirectory(prefix="mdeploy-real-") as tmp:
        workdir = args.workdir or Path(tmp)
        for model in models:
            for label, cmd in COMMANDS[model.format]:
                if wanted and label not in wanted:
                    continue
                run = run_one(model, label, cmd, args.timeout, workdir)
                runs.append(run)
                print(f"{model.name:32s} {label:17s} {run.verdict:12s} {run.seconds:6.1f}s {_short(run.reason, 110)}",
                      file=sys.stderr, flush=True)
    order = ["inspect", "convert", "simplify", "quantize-dynamic", "quantize-int8", "debug-layers"]
    commands = [c for c in order if any(r.command == c for r in runs)]
    print(table(runs, commands))
    args.json.write_text(json.dumps({"runs": [asdict(r) for r in runs]}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
