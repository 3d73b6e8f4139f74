"""Fault injection for issue 13: interrupt `mdeploy optimize` and `mdeploy zoo` at random moments, run writers
concurrently, fill the disk and feed hostile files; after each, check what an OUTDIR must keep, and print counts.

    python benchmarks/fault_injection.py            # 200 interruptions, plus the concurrent, full-disk and hostile cases
    python benchmarks/fault_injection.py --n 40     # fewer
    python benchmarks/fault_injection.py --quick    # about 10 interruptions, for CI sampling

Each interruption sends SIGINT (to the process group, as Ctrl-C does), SIGTERM or SIGKILL (to the mdeploy process,
as `kill` does) after a random delay, into a fresh OUTDIR or into one that earlier runs (and their interruptions)
left behind. After each: every artifact report.json lists exists, loads on its runtime (ONNX Runtime, LiteRT,
tf.saved_model) and matches its sha256; every intact artifact under a final name is listed; nothing outside
OUTDIR changed (the parent directory, with a victim directory beside OUTDIR and the working directory, is
snapshotted); no process of the run is left (found by an environment mark children inherit). An OUTDIR that
earlier runs use is then re-run to completion, which must succeed and remove the interrupted run's partial files.

mdeploy is driven only through its CLI. Needs root for the tmpfs full-disk case; otherwise RLIMIT_FSIZE stands in.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "safety"))

from safety_harness import (  # noqa: E402
    DIGITS,
    DIGITS_CAL,
    DIGITS_VAL,
    Findings,
    build_config_bomb_keras,
    build_external_data_onnx,
    build_tiny_onnx,
    build_unloadable_onnx,
    check_outdir,
    check_zoo_outdir,
    child_env,
    fill_disk,
    kill_marked,
    leftover_partials,
    lines_starting,
    marked_processes,
    mdeploy_cmd,
    run_with_memory_cap,
    snapshot,
    snapshot_diff,
    tiny_optimize_args,
)

GiB = 1 << 30
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
GRACE_S = 60  # how long SIGINT/SIGTERM may take before the process counts as hung (and is killed)


class Sandbox:
    """root/{out, cwd, tmp} and root/victim: OUTDIR, an empty working directory, TMPDIR, and a bystander."""

    def __init__(self, root: Path):
        self.root = root
        self.out, self.cwd, self.tmp, self.victim = root / "out", root / "cwd", root / "tmp", root / "victim"
        for d in (self.cwd, self.tmp, self.victim):
            d.mkdir(parents=True, exist_ok=True)
        (self.victim / "report.json").write_text('{"precious": true}\n')

    def snap(self) -> dict:
        return snapshot(self.root, skip=(self.out, self.tmp))

    def env(self, marker: str, **extra: str) -> dict[str, str]:
        return child_env(marker, TMPDIR=str(self.tmp), **extra)


class Tally:
    def __init__(self):
        self.c: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, key: str, items: list[str] | int, where: str = "") -> None:
        n = items if isinstance(items, int) else len(items)
        self.c[key] += n
        if n and not isinstance(items, int):
            ex = self.examples.setdefault(key, [])
            limit = 20 if key.startswith("hostile cases") else 6
            if len(ex) < limit:
                ex.extend(f"{where}: {i}" for i in items[: limit - len(ex)])

    def findings(self, f: Findings, where: str, prefix: str = "") -> None:
        self.add(prefix + "corrupt", f.corrupt, where)
        self.add(prefix + "unlisted", f.unlisted, where)
        self.add(prefix + "listed outside OUTDIR", f.outside, where)
        self.add(prefix + "report unreadable/missing", f.report, where)
        self.add(prefix + "0-byte files", f.empty_files, where)


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> bool:
    """True when the process ended by itself within `timeout`."""
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False


def orphans(marker: str, settle: float = 2.0) -> list[str]:
    """Processes of the run still alive after `settle` seconds (each is then killed)."""
    deadline = time.monotonic() + settle
    left = marked_processes(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked_processes(marker)
    names = []
    for p in left:
        try:
            names.append(f"pid {p.pid}: {' '.join(p.cmdline()[1:6])}")
        except Exception:  # noqa: BLE001
            names.append(f"pid {p.pid}")
    kill_marked(marker)
    return names


class Injector:
    def __init__(self, work: Path, rng: random.Random, tally: Tally, verbose: bool):
        self.work, self.rng, self.t, self.verbose = work, rng, tally, verbose
        inputs = work / "inputs"
        self.tiny = build_tiny_onnx(inputs / "tiny")
        self.digits_recipe = inputs / "digits_recipe.toml"
        self.digits_recipe.write_text("jobs = 1\n[validate]\nmax_accuracy_drop = 1.0\n[bench]\nenabled = false\n")
        edge = inputs / "digits_edge.toml"
        edge.write_text('target = "edge"\njobs = 1\n[validate]\nmax_accuracy_drop = 1.0\n[bench]\nenabled = false\n')
        self.manifest = inputs / "zoo.toml"
        self.manifest.write_text(
            f'[[model]]\nname = "tiny"\npath = "{self.tiny["model"]}"\ncalibration = "{self.tiny["cal"]}"\n'
            f'validation = "{self.tiny["val"]}"\nrecipe = "{self.tiny["recipe"]}"\n\n'
            f'[[model]]\nname = "digits"\npath = "{DIGITS}"\ncalibration = "{DIGITS_CAL}"\nvalidation = "{DIGITS_VAL}"\n'
            f'recipe = "{edge}"\n')
        self.tiny_manifest = inputs / "zoo-tiny.toml"
        self.tiny_manifest.write_text(self.manifest.read_text().split("\n\n[[model]]")[0] + "\n")
        self.persistent = {k: Sandbox(work / "persistent" / k) for k in ("optimize", "zoo")}
        self.duration: dict[str, float] = {}
        self.runs = 0

    # ------------------------------------------------------------------ commands

    def command(self, kind: str, out: Path) -> list[str]:
        if kind == "optimize":
            return mdeploy_cmd("optimize", DIGITS, "--calibration", DIGITS_CAL, "--validation", DIGITS_VAL,
                               "--recipe", self.digits_recipe, "--no-bench", "-o", out)
        return mdeploy_cmd("zoo", self.manifest, "-o", out, "--json")

    def check(self, kind: str, out: Path) -> Findings:
        return check_zoo_outdir(out) if kind == "zoo" else check_outdir(out)

    def log(self, text: str) -> None:
        if self.verbose:
            print(text, flush=True)

    # ------------------------------------------------------------------ interruptions

    def calibrate(self) -> None:
        """One uninterrupted run of each kind: how long a fresh run takes (the delays are drawn from it)."""
        for kind in ("optimize", "zoo"):
            box = Sandbox(self.work / "calibrate" / kind)
            t0 = time.monotonic()
            r = subprocess.run(self.command(kind, box.out), cwd=box.cwd, env=box.env("calibrate"), capture_output=True,
                               text=True)
            self.duration[kind] = time.monotonic() - t0
            kill_marked("calibrate")
            if r.returncode not in (0, 1):
                raise SystemExit(f"a clean `{kind}` run failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
            print(f"clean {kind}: {self.duration[kind]:.1f} s", flush=True)

    def interrupt(self, i: int) -> None:
        kind = "optimize" if self.rng.random() < 0.7 else "zoo"
        reuse = self.rng.random() < 0.5
        sig = self.rng.choice(SIGNALS)
        box = self.persistent[kind] if reuse else Sandbox(self.work / "runs" / f"{i:04d}")
        delay = self.rng.uniform(0.3, self.duration[kind] * 1.05)
        marker = f"fi-{uuid.uuid4().hex[:10]}"
        where = f"#{i} {kind} {'reused' if reuse else 'fresh'} {sig.name}@{delay:.1f}s"
        before = box.snap()
        proc = subprocess.Popen(self.command(kind, box.out), cwd=box.cwd, env=box.env(marker), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.runs += 1
        try:
            proc.wait(timeout=delay)
            self.t.add("finished before the signal", 1)
        except subprocess.TimeoutExpired:
            try:
                if sig == signal.SIGINT:
                    os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground group
                else:
                    proc.send_signal(sig)
            except ProcessLookupError:
                pass
            if not wait_or_kill(proc, GRACE_S):
                self.t.add("hung after SIGINT/SIGTERM", [f"still running {GRACE_S}s later"], where)
        self.t.add(f"signal {sig.name}", 1)
        stderr = proc.stderr.read() if proc.stderr else ""
        if "Traceback" in stderr:
            self.t.add("tracebacks", [stderr.strip().splitlines()[-1][:160]], where)
        self.t.add("orphans", orphans(marker), where)
        self.t.add("escaped writes", snapshot_diff(before, box.snap()), where)
        findings = self.check(kind, box.out)
        self.t.findings(findings, where)
        self.t.add("partials after the interruption", findings.partials, where)
        # .ses is a session file some runtime library writes into TMPDIR on every run, clean or not
        self.t.add("leftover temp files", [p.name for p in box.tmp.iterdir() if p.name != ".ses"], where)
        for p in box.tmp.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        self.log(f"{where}: exit {proc.returncode}, {len(findings.corrupt)} corrupt, {len(findings.unlisted)} unlisted, "
                 f"{len(findings.partials)} partials")
        if reuse:
            self.recover(kind, box, where)
        else:
            shutil.rmtree(box.root, ignore_errors=True)

    def recover(self, kind: str, box: Sandbox, where: str) -> None:
        """Re-run the same command to the end: it must succeed, keep the invariants and clear the partials."""
        marker = f"fi-{uuid.uuid4().hex[:10]}"
        before = box.snap()
        r = subprocess.run(self.command(kind, box.out), cwd=box.cwd, env=box.env(marker), capture_output=True, text=True)
        where = f"{where}, then a full re-run"
        if r.returncode not in (0, 1):
            errors = lines_starting(r.stderr, "error:") or [r.stderr.strip()[-160:]]
            self.t.add("re-runs that failed", [f"exit {r.returncode}: {errors[-1][:200]}"], where)
        self.t.add("orphans", orphans(marker), where)
        self.t.add("escaped writes", snapshot_diff(before, box.snap()), where)
        findings = self.check(kind, box.out)
        self.t.findings(findings, where, prefix="after re-run: ")
        self.t.add("partials surviving the next run", findings.partials, where)
        if kind == "optimize":
            names = {a["name"] for a in _report(box.out).get("artifacts", [])}
            missing = {"savedmodel", "onnx", "onnx-simplified", "onnx-int8", "tflite", "tflite-int8"} - names
            if missing:
                self.t.add("after re-run: artifacts missing from report.json", sorted(missing), where)

    # ------------------------------------------------------------------ concurrency

    def concurrent(self, rounds: int) -> None:
        """Two writers into one OUTDIR, started up to 2 s apart, that add different entries: optimize and
        quantize --mode fp16 (report.json), or two zoo manifests with different model names (zoo-summary.json).
        Acceptable: both succeed and both entries survive, or one exits 2 naming the other's pid."""
        other_manifest = self.work / "inputs" / "zoo-tiny2.toml"
        other_manifest.write_text(self.tiny_manifest.read_text().replace('name = "tiny"', 'name = "tiny2"'))
        writers = {
            "optimize + quantize": (lambda out: mdeploy_cmd(*tiny_optimize_args(self.tiny, out)),
                                    lambda out: mdeploy_cmd("quantize", self.tiny["model"], "--to", "onnx", "--mode",
                                                            "fp16", "-o", out)),
            "two zoo manifests": (lambda out: mdeploy_cmd("zoo", self.tiny_manifest, "-o", out, "--json"),
                                  lambda out: mdeploy_cmd("zoo", other_manifest, "-o", out, "--json")),
        }
        for k in range(rounds):
            for label, (first, second) in writers.items():
                kind = "zoo" if "zoo" in label else "optimize"
                box = Sandbox(self.work / "concurrent" / f"{kind}-{k}")
                marker = f"fi-{uuid.uuid4().hex[:10]}"
                where = f"{label}, round {k + 1}"
                before = box.snap()
                order = [first, second] if self.rng.random() < 0.5 else [second, first]
                procs = []
                for make in order:
                    procs.append(subprocess.Popen(make(box.out), cwd=box.cwd, env=box.env(marker),
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                                  start_new_session=True))
                    time.sleep(self.rng.uniform(0.0, 2.0))
                outcomes = []
                for p in procs:
                    wait_or_kill(p, 600)
                    err = p.stderr.read()
                    other = next(q for q in procs if q is not p)
                    named_holder = any(str(other.pid) in ln for ln in lines_starting(err, "error:"))
                    outcomes.append((p.returncode, named_holder))
                self.runs += 2
                self.t.add("concurrent runs", 2)
                bad = [f"exit {rc}" for rc, named in outcomes if rc not in (0, 1) and not (rc == 2 and named)]
                self.t.add("concurrent: failures other than a named lock", bad, where)
                self.t.add("orphans", orphans(marker), where)
                self.t.add("escaped writes", snapshot_diff(before, box.snap()), where)
                findings = self.check(kind, box.out)
                self.t.findings(findings, where, prefix="concurrent: ")
                self.t.add("concurrent: partials left", findings.partials, where)
                if all(rc in (0, 1) for rc, _ in outcomes):
                    if kind == "zoo":
                        try:
                            rows = json.loads((box.out / "zoo-summary.json").read_text())["models"]
                        except (OSError, ValueError, KeyError):
                            rows = []
                        lost = sorted({"tiny", "tiny2"} - {r.get("name") for r in rows})
                    else:
                        names = {a["name"] for a in _report(box.out).get("artifacts", [])}
                        lost = sorted({"onnx-simplified", "onnx-int8", "onnx-fp16"} - names)
                    self.t.add("concurrent: entries lost", lost, where)
                self.log(f"{where}: {outcomes}, {len(findings.corrupt)} corrupt")

    # ------------------------------------------------------------------ full disk

    def full_disk(self, sizes_kib: list[int]) -> None:
        for size in sizes_kib:
            box = Sandbox(self.work / "fulldisk" / f"{size}k")
            disk = box.root / "disk"
            disk.mkdir()
            mounted = os.geteuid() == 0 and subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", str(disk)], capture_output=True).returncode == 0
            preexec = None
            if not mounted:
                def preexec(limit=size * 1024):
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                    import resource

                    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            marker = f"fi-{uuid.uuid4().hex[:10]}"
            where = f"full disk {size} KiB ({'tmpfs' if mounted else 'RLIMIT_FSIZE'})"
            out = disk / "out"
            leftovers: set[str] = set()
            try:
                for step in ("optimize", "validate", "report"):
                    if step == "optimize":
                        cmd = mdeploy_cmd(*tiny_optimize_args(self.tiny, out))
                    elif step == "validate":
                        if mounted:
                            fill_disk(disk)
                        cmd = mdeploy_cmd("validate", self.tiny["model"], self.tiny["model"], "--data", self.tiny["val"],
                                          "-o", out)
                    else:
                        cmd = mdeploy_cmd("report", out, "--format", "html", "-o", disk / "again.html")
                    r = subprocess.run(cmd, cwd=box.cwd, env=box.env(marker), capture_output=True, text=True,
                                       preexec_fn=preexec)
                    self.runs += 1
                    self.t.add("full-disk runs", 1)
                    if r.returncode not in (0, 2) or (r.returncode == 2 and len(lines_starting(r.stderr, "error:")) != 1):
                        last = (lines_starting(r.stderr, "error:") or [r.stderr.strip()[-160:]])[-1]
                        self.t.add("full disk: not a clean exit 0/2", [f"{step} exit {r.returncode}: {last[:160]}"], where)
                    leftovers |= {str(p.relative_to(disk)) for p in leftover_partials(disk)}
                    leftovers |= {str(p.relative_to(disk)) for p in disk.rglob("*")
                                  if p.is_file() and p.stat().st_size == 0 and p.name != "filler"}
                findings = check_outdir(out)
                findings.empty_files = []  # counted with the partials, once per disk
                self.t.findings(findings, where, prefix="full disk: ")
                self.t.add("full disk: partial or 0-byte files", sorted(leftovers), where)
                self.t.add("orphans", orphans(marker), where)
            finally:
                if mounted:
                    subprocess.run(["umount", "-l", str(disk)], capture_output=True)

    # ------------------------------------------------------------------ hostile files and names

    def hostile(self) -> None:
        inputs = self.work / "inputs"
        bad_onnx = build_unloadable_onnx(inputs / "unloadable.onnx")
        bloated = build_external_data_onnx(inputs / "bloated", claimed_bytes=3 * GiB)
        bomb = build_config_bomb_keras(inputs / "bomb.keras", inflated_bytes=GiB)
        named_recipe = inputs / "named.toml"
        named_recipe.write_text('name = "../../x"\ntarget = "cloud"\njobs = 1\nsimplify = false\n'
                                '[quantize]\nonnx = []\ntflite = []\n[bench]\nenabled = false\n')
        opset = inputs / "opset.toml"
        opset.write_text(self.tiny["recipe"].read_text().replace("jobs = 1", "jobs = 1\nopset = 999"))
        runs = inputs / "runs.toml"
        runs.write_text(self.tiny["recipe"].read_text().replace("enabled = false", "enabled = true\nruns = -1"))

        def zoo_named(name: str) -> list[str]:
            m = inputs / f"zoo-{uuid.uuid4().hex[:6]}.toml"
            m.write_text(self.tiny_manifest.read_text().replace('name = "tiny"', f'name = "{name}"'))
            return ["zoo", m, "--json"]

        cases = [
            ("zoo name ../victim", lambda b: zoo_named("../victim"), None),
            ("zoo name absolute", lambda b: zoo_named(str(b.victim)), None),
            ("convert --name ../../x", lambda b: ["convert", DIGITS, "--to", "savedmodel", "--name", "../../x"], None),
            ("recipe name ../../x (Keras)", lambda b: ["optimize", DIGITS, "--recipe", named_recipe], None),
            ("recipe opset = 999", lambda b: tiny_optimize_args(self.tiny, b.out, recipe=opset)[:-2], None),
            ("recipe runs = -1", lambda b: tiny_optimize_args(self.tiny, b.out, recipe=runs)[:-2], None),
            ("simplify of an ONNX the runtime cannot load", lambda b: ["simplify", bad_onnx], "file"),
            ("ONNX whose external data claims 3 GB", lambda b: ["simplify", bloated], "file"),
            (".keras whose config.json inflates to 1 GiB", lambda b: ["inspect", bomb], "none"),
        ]
        for label, build, output in cases:
            box = Sandbox(self.work / "hostile" / uuid.uuid4().hex[:8])
            marker = f"fi-{uuid.uuid4().hex[:10]}"
            args = build(box)
            if output == "file":
                args += ["-o", box.out / "model.onnx"]
            elif output is None:
                args += ["-o", box.out]
            before = box.snap()
            run = run_with_memory_cap(mdeploy_cmd(*args), cap_bytes=2 * GiB, timeout=300, cwd=box.cwd,
                                      env=box.env(marker), workdir=box.tmp)
            self.runs += 1
            self.t.add("hostile cases", 1)
            escaped = snapshot_diff(before, box.snap())
            problems = []
            if escaped:
                problems.append(f"wrote outside OUTDIR: {', '.join(escaped[:3])}")
            if run.killed_over_cap:
                problems.append(f"stopped at {run.peak_rss >> 20} MiB RSS")
            elif run.returncode != 2:
                problems.append(f"exit {run.returncode}, not 2")
            elif len(lines_starting(run.stderr, "error:")) != 1 or "Traceback" in run.stderr:
                problems.append("not one error: line")
            if run.returncode == 2 and box.out.exists() and any(box.out.rglob("*")):
                problems.append("wrote into OUTDIR before refusing")
            self.t.add("hostile: escaped writes", escaped, label)
            self.t.add("hostile cases failing", [f"{label}: {'; '.join(problems)}"] if problems else [], "hostile")
            self.t.add("orphans", orphans(marker), label)
            self.log(f"hostile {label}: exit {run.returncode}, peak {run.peak_rss >> 20} MiB, "
                     f"{run.seconds:.1f}s, {'; '.join(problems) or 'ok'}")


def _report(out: Path) -> dict:
    try:
        return json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="random interruptions (default 200)")
    ap.add_argument("--quick", action="store_true", help="about 10 interruptions and one round of each other case")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--workdir", type=Path, help="where to work (default: a fresh temporary directory, removed after)")
    ap.add_argument("--skip", action="append", default=[], choices=["interruptions", "concurrent", "full-disk", "hostile"])
    ap.add_argument("--json", type=Path, help="also write the counts here")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per run")
    args = ap.parse_args(argv)
    n = 10 if args.quick else args.n
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mdeploy-fault-"))
    work.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    inj = Injector(work, random.Random(args.seed), tally, args.verbose)
    t0 = time.monotonic()
    try:
        if "interruptions" in args.skip:
            n = 0
        else:
            inj.calibrate()
        for i in range(n):
            inj.interrupt(i)
            if (i + 1) % 10 == 0:
                print(f"{i + 1}/{n} interruptions, {time.monotonic() - t0:.0f}s", flush=True)
        if "concurrent" not in args.skip:
            inj.concurrent(1 if args.quick else 3)
        if "full-disk" not in args.skip:
            inj.full_disk([64, 256] if args.quick else [16, 64, 128, 256, 512])
        if "hostile" not in args.skip:
            inj.hostile()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    c = tally.c
    print(f"\nfault injection: {inj.runs} runs ({n} interrupted) in {time.monotonic() - t0:.0f}s, seed {args.seed}")
    for key in ["corrupt", "unlisted", "listed outside OUTDIR", "report unreadable/missing", "escaped writes", "orphans",
                "partials after the interruption", "partials surviving the next run", "leftover temp files",
                "hung after SIGINT/SIGTERM", "tracebacks", "re-runs that failed",
                "after re-run: corrupt", "after re-run: unlisted", "after re-run: listed outside OUTDIR",
                "after re-run: artifacts missing from report.json", "0-byte files",
                "concurrent runs", "concurrent: failures other than a named lock", "concurrent: corrupt",
                "concurrent: unlisted", "concurrent: entries lost", "concurrent: partials left",
                "full-disk runs", "full disk: not a clean exit 0/2", "full disk: partial or 0-byte files", "full disk: corrupt",
                "hostile cases", "hostile cases failing", "hostile: escaped writes",
                "finished before the signal", "signal SIGINT", "signal SIGTERM", "signal SIGKILL"]:
        print(f"  {key:48s} {c[key]}")
    for key, examples in tally.examples.items():
        print(f"\n{key}:")
        for e in examples:
            print(f"  - {e}")
    if args.json:
        args.json.write_text(json.dumps({"runs": inj.runs, "interrupted": n, "counts": dict(c),
                                         "examples": tally.examples}, indent=2) + "\n")
    failed = sum(c[k] for k in ("corrupt", "unlisted", "escaped writes", "orphans", "partials surviving the next run",
                                "concurrent: entries lost",
                                "hostile cases failing", "full disk: partial or 0-byte files"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
