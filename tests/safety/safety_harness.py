"""What the safety tests and benchmarks/fault_injection.py share: hostile and tiny models, running mdeploy as a
process, and the invariants an OUTDIR must keep after any run, however it ended (issue 13).

Only the CLI is driven (subprocess `python -m mdeploy.cli`), never mdeploy's internals, so these checks outlive
refactorings. Nothing here imports pytest.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_models"
DIGITS = SAMPLES / "digits.keras"
DIGITS_CAL = SAMPLES / "digits_calibration.npz"
DIGITS_VAL = SAMPLES / "digits_validation.npz"
# Every process a safety run starts carries this variable; its children inherit it, so orphans can be found
# by environment rather than by a process name that a restructuring could change.
MARK = "MDEPLOY_SAFETY_RUN"
PARTIAL_MARKERS = (".partial", ".old-")


# --------------------------------------------------------------------------- running mdeploy

def mdeploy_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "mdeploy.cli", *(str(a) for a in args)]


def child_env(marker: str = "1", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MDEPLOY_UNSAFE_KERAS"}
    return {**env, MARK: marker, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **extra}


def run_mdeploy(*args, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600,
                preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run(mdeploy_cmd(*args), cwd=cwd, env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec_fn)


def lines_starting(text: str, prefix: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


def marked_processes(marker: str) -> list:
    """Live processes started for `marker` (by us or by any descendant), excluding this one."""
    import psutil

    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(MARK) == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def kill_marked(marker: str) -> int:
    """Clean up after a test or an interruption: SIGKILL the processes we started, by pid."""
    procs = marked_processes(marker)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except Exception:  # noqa: BLE001 - already gone
            pass
    return len(procs)


@dataclass
class Watched:
    returncode: int | None
    stdout: str
    stderr: str
    peak_rss: int
    killed_over_cap: bool
    seconds: float


def run_with_memory_cap(cmd: list[str], cap_bytes: int, *, timeout: float, cwd: Path | None = None,
                        env: dict[str, str] | None = None, workdir: Path) -> Watched:
    """Run `cmd`, sampling the RSS of its whole process tree; kill it (and count that) past `cap_bytes`."""
    import psutil

    out_f, err_f = workdir / "watched.stdout", workdir / "watched.stderr"
    t0 = time.monotonic()
    with open(out_f, "w") as out, open(err_f, "w") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or child_env(), stdout=out, stderr=err)
        peak, killed = 0, False
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree if p.is_running())
            except psutil.Error:
                rss = 0
            peak = max(peak, rss)
            if rss > cap_bytes or time.monotonic() - t0 > timeout:
                killed = rss > cap_bytes
                for p in tree:
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                proc.wait()
                break
            time.sleep(0.02)
    return Watched(proc.returncode, out_f.read_text(), err_f.read_text(), peak, killed, time.monotonic() - t0)


def fill_disk(disk: Path) -> None:
    """Use up every free byte of the (tmpfs) file system holding `disk`."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass


# --------------------------------------------------------------------------- models and data

def _save_onnx(model, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def build_tiny_onnx(d: Path) -> dict[str, Path]:
    """A 16 -> 32 -> 10 softmax MLP with calibration and labelled validation data, and a recipe that keeps
    `optimize` on it to ONNX only (no TensorFlow) with no benchmark: a full optimize in about 3 s."""
    from onnx import TensorProto
    from onnx import helper as h
    from onnx import numpy_helper as nh

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(16, 32)).astype(np.float32), rng.normal(size=32).astype(np.float32)
    w2, b2 = rng.normal(size=(32, 10)).astype(np.float32), rng.normal(size=10).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "W1"], ["h1"]), h.make_node("Add", ["h1", "b1"], ["h2"]),
         h.make_node("Relu", ["h2"], ["h3"]), h.make_node("MatMul", ["h3", "W2"], ["h4"]),
         h.make_node("Add", ["h4", "b2"], ["h5"]), h.make_node("Softmax", ["h5"], ["probs"], axis=-1)],
        "tiny", [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [h.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
        [nh.from_array(w1, "W1"), nh.from_array(b1, "b1"), nh.from_array(w2, "W2"), nh.from_array(b2, "b2")])
    model = _save_onnx(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), d / "tiny.onnx")
    x = rng.normal(size=(264, 16)).astype(np.float32)
    labels = (np.maximum(x @ w1 + b1, 0) @ w2 + b2).argmax(1)
    np.savez(d / "tiny_cal.npz", x=x[:64])
    np.savez(d / "tiny_val.npz", x=x[64:], labels=labels[64:])
    recipe = d / "tiny_recipe.toml"
    recipe.write_text('target = "cloud"\njobs = 1\n[validate]\nmax_accuracy_drop = 1.0\n[bench]\nenabled = false\n')
    # a `module:function` data source (it runs code: that is what the warning tests are about)
    (d / "tiny_data.py").write_text(
        "import time\nimport numpy as np\n\n"
        "def batches():\n    d = np.load(%r)\n    yield {'x': d['x']}\n\n"
        "def slow_a():\n    time.sleep(1.5)\n    d = np.load(%r)\n    yield {'x': d['x'], 'labels': d['labels']}\n\n"
        "slow_b = slow_a\n" % (str(d / "tiny_cal.npz"), str(d / "tiny_val.npz")))
    return {"model": model, "cal": d / "tiny_cal.npz", "val": d / "tiny_val.npz", "recipe": recipe,
            "data_module_dir": d}


def tiny_optimize_args(tiny: dict[str, Path], out: Path, *extra, recipe: Path | None = None) -> list:
    return ["optimize", tiny["model"], "--recipe", recipe or tiny["recipe"], "--calibration", tiny["cal"],
            "--validation", tiny["val"], "-o", out, *extra]


def build_unloadable_onnx(path: Path) -> Path:
    """Valid ONNX protobuf that ONNX Runtime refuses: an op no runtime implements."""
    from onnx import TensorProto
    from onnx import helper as h

    graph = h.make_graph([h.make_node("Frobnicate", ["x"], ["y"], domain="com.example.hostile")], "bad",
                         [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.example.hostile", 1)],
                         ir_version=8)
    return _save_onnx(model, path)


def build_unshaped_onnx(d: Path) -> tuple[Path, Path]:
    """Two inputs with different symbolic batch dims: onnxruntime's symbolic shape inference gives up on it
    (and then drops sym_shape_infer_temp.onnx in the working directory), while the model itself runs fine."""
    from onnx import TensorProto
    from onnx import helper as h
    from onnx import numpy_helper as nh

    d.mkdir(parents=True, exist_ok=True)
    graph = h.make_graph([h.make_node("Add", ["p", "q"], ["s"]), h.make_node("MatMul", ["s", "W"], ["out"])], "unshaped",
                         [h.make_tensor_value_info("p", TensorProto.FLOAT, ["a", 4]),
                          h.make_tensor_value_info("q", TensorProto.FLOAT, ["b", 4])],
                         [h.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                         [nh.from_array(np.ones((4, 4), np.float32), "W")])
    model = _save_onnx(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), d / "unshaped.onnx")
    rng = np.random.default_rng(0)
    cal = d / "unshaped_cal.npz"
    np.savez(cal, p=rng.normal(size=(32, 4)).astype(np.float32), q=rng.normal(size=(32, 4)).astype(np.float32))
    return model, cal


def build_external_data_onnx(d: Path, claimed_bytes: int = 3 << 30) -> Path:
    """A few-hundred-byte ONNX whose one initializer lives in external data of `claimed_bytes` (a sparse file:
    no disk used, but every reader that loads it allocates it)."""
    from onnx import TensorProto
    from onnx import helper as h

    d.mkdir(parents=True, exist_ok=True)
    n = claimed_bytes // 4
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[n], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", "weights.bin"), ("offset", "0"), ("length", str(n * 4))):
        weight.external_data.add(key=k, value=v)
    graph = h.make_graph([h.make_node("Add", ["x", "W"], ["y"])], "bloated",
                         [h.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [n])], [weight])
    path = _save_onnx(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), d / "bloated.onnx")
    with open(d / "weights.bin", "wb") as f:
        f.truncate(n * 4)
    return path


def build_config_bomb_keras(dst: Path, inflated_bytes: int = 1 << 30, src: Path = DIGITS) -> Path:
    """The digits .keras with config.json replaced by one that inflates to `inflated_bytes` (about 1/1000 zipped)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    chunk = b"A" * (1 << 20)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for info in zin.infolist():
            if info.filename != "config.json":
                zout.writestr(info, zin.read(info))
        with zout.open("config.json", "w", force_zip64=True) as f:
            f.write(b'{"class_name": "Sequential", "config": {"name": "')
            for _ in range(inflated_bytes // len(chunk)):
                f.write(chunk)
            f.write(b'"}}')
    return dst


# --------------------------------------------------------------------------- invariants

def content_sha256(path: Path) -> str:
    """The report's sha256: of a file, or of a directory's files (relative names and contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


_load_cache: dict[tuple[str, str], str | None] = {}


def load_problem(fmt: str, path: Path) -> str | None:
    """Why the artifact does not load on its runtime, or None. Results are cached by content."""
    path = Path(path)
    try:
        key = (fmt, content_sha256(path))
    except OSError as e:
        return f"unreadable: {e}"
    if key in _load_cache:
        return _load_cache[key]
    problem = None
    try:
        if fmt == "onnx":
            import onnxruntime as ort

            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        elif fmt == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            Interpreter(model_path=str(path)).allocate_tensors()
        elif fmt == "savedmodel":
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import tensorflow as tf

            tf.saved_model.load(str(path))
        elif fmt == "keras":
            if not zipfile.is_zipfile(path):
                problem = "not a zip"
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        problem = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    _load_cache[key] = problem
    return problem


def final_named_artifacts(out_dir: Path) -> dict[Path, str]:
    """Model files an OUTDIR holds under final (non-hidden) names: {resolved path: format}."""
    found: dict[Path, str] = {}
    for p in out_dir.rglob("*"):
        rel = p.relative_to(out_dir).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.is_file() and p.suffix in (".onnx", ".tflite"):
            found[p.resolve()] = p.suffix[1:]
        elif p.is_file() and p.suffix == ".keras":
            found[p.resolve()] = "keras"
        elif p.is_dir() and (p / "saved_model.pb").is_file():
            found[p.resolve()] = "savedmodel"
    return found


def leftover_partials(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if any(m in p.name for m in PARTIAL_MARKERS))


@dataclass
class Findings:
    """What is wrong with one OUTDIR. Empty lists mean the OUTDIR keeps every invariant of issue 13."""

    corrupt: list[str] = field(default_factory=list)     # listed but missing/unloadable/hash mismatch, or broken under a final name
    unlisted: list[str] = field(default_factory=list)    # intact under a final name but not in report.json
    outside: list[str] = field(default_factory=list)     # report.json points outside OUTDIR
    report: list[str] = field(default_factory=list)      # report.json missing (with artifacts present) or unparsable
    partials: list[str] = field(default_factory=list)    # .partial / .old- files
    empty_files: list[str] = field(default_factory=list)  # 0-byte files outside the cache

    def merge(self, other: Findings) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))

    def ok(self, *, allow_partials: bool = False) -> bool:
        return not (self.corrupt or self.unlisted or self.outside or self.report or self.empty_files
                    or (self.partials and not allow_partials))


def check_outdir(out_dir: Path, *, load: bool = True) -> Findings:
    """The issue's invariants on one OUTDIR holding one report.json."""
    f = Findings()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return f
    root = out_dir.resolve()
    files = final_named_artifacts(out_dir)
    listed: set[Path] = set()
    report_path = out_dir / "report.json"
    records: list[dict] = []
    if report_path.is_file():
        try:
            data = json.loads(report_path.read_text())
            records = list(data.get("artifacts", []))
        except (ValueError, OSError, AttributeError) as e:
            f.report.append(f"{report_path}: unreadable ({type(e).__name__})")
    elif files:
        f.report.append(f"{report_path}: missing while {len(files)} artifact(s) exist")
    for rec in records:
        rel = rec.get("path")
        if not rel:
            continue
        path = Path(rel) if Path(rel).is_absolute() else out_dir / rel
        real = path.resolve()
        if root != real and root not in real.parents:
            f.outside.append(f"{rec.get('name')}: {rel}")
            continue
        listed.add(real)
        if not path.exists():
            f.corrupt.append(f"{rec.get('name')}: listed but missing ({rel})")
        elif content_sha256(path) != rec.get("sha256"):
            f.corrupt.append(f"{rec.get('name')}: sha256 differs from report.json ({rel})")
        elif load and (problem := load_problem(rec.get("format", files.get(real, "")), path)):
            f.corrupt.append(f"{rec.get('name')}: does not load ({problem})")
    for real, fmt in files.items():
        if real in listed:
            continue
        problem = load_problem(fmt, real) if load else None
        (f.corrupt if problem else f.unlisted).append(
            f"{real.relative_to(root)}: {'broken under a final name: ' + problem if problem else 'intact but unlisted'}")
    f.partials = [str(p.relative_to(out_dir)) for p in leftover_partials(out_dir)]
    f.empty_files = [str(p.relative_to(out_dir)) for p in out_dir.rglob("*")
                     if p.is_file() and p.stat().st_size == 0 and ".mdeploy-cache" not in p.parts]
    return f


def check_zoo_outdir(out_dir: Path, *, load: bool = True) -> Findings:
    """A zoo OUTDIR: zoo-summary.json (when present) parses, and each model directory keeps the invariants."""
    f = Findings()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return f
    summary = out_dir / "zoo-summary.json"
    if summary.is_file():
        try:
            json.loads(summary.read_text())
        except ValueError:
            f.report.append(f"{summary}: unreadable")
    for d in sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        f.merge(check_outdir(d, load=load))
    f.partials.extend(str(p.relative_to(out_dir)) for p in out_dir.glob("*") if any(m in p.name for m in PARTIAL_MARKERS))
    return f


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """Every file and directory under `root` except the `skip` trees: {relative path: (size, mtime_ns)}."""
    skip_real = {Path(s).resolve() for s in skip}
    state: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d).resolve() not in skip_real]
        for name in dirnames + filenames:
            p = here / name
            try:
                st = p.lstat()
            except OSError:
                continue
            state[str(p.relative_to(root))] = (st.st_size if not p.is_dir() else 0, st.st_mtime_ns if not p.is_dir() else 0)
    return state


def snapshot_diff(before: dict, after: dict) -> list[str]:
    changed = [f"+{k}" for k in after if k not in before] + [f"-{k}" for k in before if k not in after]
    changed += [f"~{k}" for k in after if k in before and after[k] != before[k]]
    return sorted(changed)
