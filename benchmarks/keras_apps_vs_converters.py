"""keras.applications architectures (random weights) through the raw converters and through mdeploy, side by side.

    python benchmarks/keras_apps_vs_converters.py [--only MobileNetV2,...] [--quick] [--size 96] [--json OUT]

Per architecture, in its own processes, on the same two inputs (uniform 0..255, seed 0):
  (a) raw tf2onnx: Keras 3 `model.export()` to a SavedModel, then the tf2onnx CLI
      (`python -m tf2onnx.convert --saved-model ... --opset 17`), run in ONNX Runtime;
  (b) raw TFLite: `tf.lite.TFLiteConverter.from_saved_model` on the same export, run in LiteRT;
  (c) `mdeploy convert MODEL.keras --to onnx,tflite --data INPUTS.npz`: its exit code, its own parity verdict
      per artifact (report.json checks), and our parity of the artifacts it wrote.
Parity everywhere: max|err| <= 1e-3 * max(1, max|ref|) against the Keras model's own outputs (logits: the
classifier activation is off so random weights do not hide errors behind a flat softmax).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-3
ARCHS = {  # name -> input size (small where the architecture allows, to keep the run short)
    "MobileNet": 96, "MobileNetV2": 96, "MobileNetV3Small": 96, "EfficientNetB0": 96, "EfficientNetV2B0": 96,
    "ResNet50": 96, "ResNet50V2": 96, "DenseNet121": 96, "NASNetMobile": 96, "ConvNeXtTiny": 96,
    "Xception": 96, "InceptionV3": 96, "VGG16": 96, "RegNetX002": 96,
}
QUICK = ["MobileNetV2", "EfficientNetB0", "ConvNeXtTiny"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def worker(arch: str, size: int, out: Path) -> None:
    """Build the model, write MODEL.keras, inputs/reference, and try the raw converters (in this process)."""
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, arch)(weights=None, input_shape=(size, size, 3), classes=10,
                                              classifier_activation=None)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    y = np.asarray(model(x, training=False))
    np.savez(out / "inputs.npz", x)
    np.save(out / "reference.npy", y)
    model.save(out / "model.keras")
    result = {}
    t0 = time.monotonic()
    try:
        model.export(str(out / "savedmodel"), verbose=False)
        result["export_seconds"] = time.monotonic() - t0
    except Exception as e:  # noqa: BLE001
        result["export_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        (out / "raw.json").write_text(json.dumps(result))
        return
    t0 = time.monotonic()
    try:
        tflite = tf.lite.TFLiteConverter.from_saved_model(str(out / "savedmodel")).convert()
        (out / "raw.tflite").write_bytes(tflite)
    except Exception as e:  # noqa: BLE001
        result["tflite_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    result["tflite_seconds"] = time.monotonic() - t0
    (out / "raw.json").write_text(json.dumps(result))


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(path))
    d = it.get_input_details()[0]
    if list(d["shape"]) != list(x.shape):
        it.resize_tensor_input(d["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def parity(fn, path: Path, x, ref) -> dict:
    if not path.exists():
        return {"ok": False, "reason": "no artifact"}
    try:
        y = fn(path, x)
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "reason": f"does not run: {type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    if y.size != ref.size:
        return {"ok": False, "reason": f"shape {y.shape} vs {ref.shape}"}
    err = float(np.max(np.abs(y.reshape(ref.shape) - ref))) / max(1.0, float(np.max(np.abs(ref))))
    return {"ok": bool(err <= TOL), "rel_error": err, "reason": "" if err <= TOL else f"rel error {err:.2g}"}


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    errs = [line for line in lines if line.lower().startswith("error:") or "Error" in line]
    return (errs[-1] if errs else lines[-1] if lines else "")[:200]


def bench_arch(arch: str, size: int, tmp: Path, timeout: float) -> dict:
    out = tmp / arch
    out.mkdir()
    row = {"arch": arch, "size": size}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, __file__, "--worker", arch, "--size", str(size), "--out", str(out)],
                       capture_output=True, text=True, timeout=timeout, env=ENV)
    if p.returncode != 0 or not (out / "reference.npy").exists():
        row["error"] = f"worker failed: {last_line(p.stderr)}"
        return row
    row["worker_seconds"] = time.monotonic() - t0
    raw = json.loads((out / "raw.json").read_text())
    x = np.load(out / "inputs.npz")["arr_0"]
    ref = np.load(out / "reference.npy")
    # (a) tf2onnx CLI on the SavedModel
    t0 = time.monotonic()
    if "export_error" in raw:
        row["tf2onnx"] = {"ok": False, "reason": raw["export_error"]}
        row["tflite"] = {"ok": False, "reason": raw["export_error"]}
    else:
        try:
            p = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(out / "savedmodel"),
                                "--output", str(out / "raw.onnx"), "--opset", "17"],
                               capture_output=True, text=True, timeout=timeout, env=ENV)
            row["tf2onnx"] = parity(run_onnx, out / "raw.onnx", x, ref)
            if p.returncode != 0:
                row["tf2onnx"]["reason"] = f"tf2onnx exit {p.returncode}: {last_line(p.stderr)}"
            elif "Unsupported ops" in p.stderr:
                row["tf2onnx"]["unsupported"] = last_line(p.stderr.split("Unsupported ops")[1])
        except subprocess.TimeoutExpired:
            row["tf2onnx"] = {"ok": False, "reason": "timeout"}
        row["tf2onnx"]["seconds"] = time.monotonic() - t0
        row["tflite"] = parity(run_tflite, out / "raw.tflite", x, ref) if "tflite_error" not in raw else \
            {"ok": False, "reason": raw["tflite_error"]}
        row["tflite"]["seconds"] = raw.get("tflite_seconds")
    # (c) mdeploy
    t0 = time.monotonic()
    md = out / "mdeploy"
    try:
        p = subprocess.run([sys.executable, "-m", "mdeploy.cli", "convert", str(out / "model.keras"), "--to", "onnx,tflite",
                            "--data", str(out / "inputs.npz"), "-o", str(md)],
                           capture_output=True, text=True, timeout=timeout, env=ENV)
        code, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        code, err = None, "timeout"
    row["mdeploy_seconds"] = time.monotonic() - t0
    row["mdeploy_exit"] = code
    row["mdeploy_error"] = "" if code == 0 else last_line(err)
    report = md / "report.json"
    arts = {a["format"]: a for a in json.loads(report.read_text())["artifacts"]} if report.exists() else {}
    for fmt, fn in (("onnx", run_onnx), ("tflite", run_tflite)):
        a = arts.get(fmt)
        path = md / a["path"] if a else md / fmt / "model.onnx" if fmt == "onnx" else md / "tflite" / "model.tflite"
        check = parity(fn, path, x, ref)
        check["reported"] = bool(a)
        check["mdeploy_says"] = (a.get("checks") or {}).get("passed") if a else None
        if path.exists() and not a:
            check["reason"] = ("orphan artifact without report entry; " + check.get("reason", "")).strip("; ")
        # mdeploy's route counts only when it both wrote/reported the artifact and it has parity
        check["ok"] = bool(check["ok"] and a and check["mdeploy_says"] is not False)
        if not check["ok"] and not check.get("reason"):
            check["reason"] = row["mdeploy_error"] or "mdeploy check failed"
        row[f"mdeploy_{fmt}"] = check
    return row


def cell(check: dict | None) -> str:
    if not check:
        return "-"
    if check["ok"]:
        return f"ok ({check['rel_error']:.0e})"
    reason = (check.get("reason") or "").replace("|", "/")
    return "FAIL: " + (reason if len(reason) < 60 else reason[:59] + "…")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--size", type=int)
    parser.add_argument("--only")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "keras_apps_vs_converters.json")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.size, args.out)
        return
    archs = args.only.split(",") if args.only else QUICK if args.quick else list(ARCHS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mdeploy-apps-") as tmp:
        for arch in archs:
            t0 = time.monotonic()
            try:
                row = bench_arch(arch, args.size or ARCHS.get(arch, 96), Path(tmp), args.timeout)
            except subprocess.TimeoutExpired:
                row = {"arch": arch, "error": "worker timeout"}
            row["seconds"] = time.monotonic() - t0
            rows.append(row)
            print(f"{arch:18s} {row['seconds']:6.1f}s tf2onnx={cell(row.get('tf2onnx'))} tflite={cell(row.get('tflite'))} "
                  f"mdeploy onnx={cell(row.get('mdeploy_onnx'))} tflite={cell(row.get('mdeploy_tflite'))}",
                  file=sys.stderr, flush=True)
    cols = ["tf2onnx", "tflite", "mdeploy_onnx", "mdeploy_tflite"]
    print("| architecture | raw tf2onnx → ORT | raw TFLiteConverter → LiteRT | mdeploy ONNX | mdeploy TFLite |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['arch']} | {r['error']} | | | |")
            continue
        print(f"| {r['arch']} ({r['size']}px) | " + " | ".join(cell(r.get(c)) for c in cols) + " |")
    totals = [sum(bool(r.get(c, {}).get("ok")) for r in rows) for c in cols]
    print(f"| **parity** | **{totals[0]}/{len(rows)}** | **{totals[1]}/{len(rows)}** | **{totals[2]}/{len(rows)}** | **{totals[3]}/{len(rows)}** |")
    args.json.write_text(json.dumps(rows, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
