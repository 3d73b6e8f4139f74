"""What `mdeploy verify` costs next to a plain sha256 of the same files (issue 14: at most ~1.2x).

Writes a release of generated files (or of the files under --dir, e.g. MobileNetV2's artifacts), then times, in
turn and in one process (so interpreter start-up and imports are not counted, and the page cache is equally warm):

    A: mdeploy's verify(): model-signing's signature check, every file hashed, the OTA manifest checked
    B: hashlib.sha256 over the same files, 1 MiB reads, one thread

and prints the median of A/B over the pairs, for model-signing's default thread pool and for --workers N.
Whole-process start-up (Python, the CLI, model-signing's imports) is a fixed cost on top: see docs/release.md.

    python benchmarks/verify_cost.py [--mb 400] [--files 8] [--dir DIR] [--repeats 7] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def plain_sha256(root: Path) -> int:
    n = 0
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    n += len(chunk)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=400, help="generated data in MB (without --dir)")
    ap.add_argument("--files", type=int, default=8, help="split the generated data into this many files")
    ap.add_argument("--dir", type=Path, help="release the files of this directory instead of generated ones")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="also time these thread counts")
    args = ap.parse_args()

    from mdeploy.passes.workflows.release import keygen, release, verify

    with tempfile.TemporaryDirectory(prefix="verify-cost-") as tmp:
        tmp = Path(tmp)
        src = args.dir
        if src is None:
            src = tmp / "artifacts"
            src.mkdir()
            rng = np.random.default_rng(0)
            per = args.mb * (1 << 20) // args.files
            for i in range(args.files):
                (src / f"part-{i:02d}.bin").write_bytes(rng.bytes(per))
        keys = keygen(tmp / "keys")
        rel = tmp / "release"
        release(src, rel, model_id="bench", version="1.0.0", sequence=1, key=Path(keys["private_key"]))
        files = rel / "files"
        size = sum(p.stat().st_size for p in rel.rglob("*") if p.is_file())
        print(f"release: {size / 1e6:.0f} MB in {sum(1 for p in rel.rglob('*') if p.is_file())} files")
        plain_sha256(rel)  # warm the page cache for both
        for workers in [None, *args.workers]:
            ratios, ta, tb = [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                verdict = verify(rel, key=Path(keys["public_key"]), workers=workers)
                t1 = time.perf_counter()
                plain_sha256(rel)
                t2 = time.perf_counter()
                assert verdict.ok, verdict.to_dict()
                ta.append(t1 - t0)
                tb.append(t2 - t1)
                ratios.append((t1 - t0) / (t2 - t1))
            label = "default pool" if workers is None else f"{workers} thread(s)"
            print(f"verify ({label}): {statistics.median(ta):.3f}s  sha256: {statistics.median(tb):.3f}s  "
                  f"ratio median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
                  f"sha256 {size / statistics.median(tb) / 1e9:.2f} GB/s", flush=True)
        del files


if __name__ == "__main__":
    main()
