"""Labelled data for magika (the content-type classifier in benchmarks/corpus/models.toml), made from files on this
machine: the label is the content type the file's extension says, the input magika's own features (the first and
last 1,024 bytes of the stripped first/last 4 KB block, padded with token 256), as magika 1.0.3 computes them.

Files come from the Python installation and /usr (source, headers, JSON, HTML, shell, images, archives, ELF ...),
at most PER_LABEL per label, deterministically shuffled, then split in two halves: calibration and validation.

    python benchmarks/corpus/magika_data.py OUTDIR     (writes magika_calibration.npz, magika_validation.npz)
"""
from __future__ import annotations

import random
import sys
import sysconfig
from pathlib import Path

BEG, END, BLOCK, PAD = 1024, 1024, 4096, 256
PER_LABEL = 40
# extension -> magika label (only types whose extension says the content unambiguously)
LABELS = {".py": "python", ".c": "c", ".h": "c", ".cpp": "cpp", ".cc": "cpp", ".hpp": "cpp", ".json": "json",
          ".html": "html", ".htm": "html", ".xml": "xml", ".sh": "shell", ".md": "markdown", ".js": "javascript",
          ".css": "css", ".png": "png", ".gz": "gzip", ".zip": "zip", ".pyc": "pythonbytecode", ".pem": "pem",
          ".pl": "perl", ".rb": "ruby", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".ini": "ini",
          ".csv": "csv", ".rst": "rst", ".svg": "svg", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif", ".pdf": "pdf",
          ".tex": "latex", ".go": "go", ".rs": "rust", ".java": "java", ".lua": "lua", ".sql": "sql", ".txt": "txt",
          ".bz2": "bzip", ".xz": "xz", ".so": "elf", ".whl": "zip", ".ico": "ico", ".tcl": "tcl", ".patch": "diff"}
# the output index of each label in magika 1.0.3's standard_v3_3 model (its config.min.json target_labels_space)
MODEL_CLASSES = {"bzip": 16, "c": 17, "cpp": 26, "css": 31, "csv": 32, "diff": 37, "elf": 46, "gif": 58, "go": 61,
                 "gzip": 64, "html": 71, "ico": 73, "ini": 76, "java": 81, "javascript": 83, "jpeg": 86, "json": 87,
                 "latex": 91, "lua": 95, "markdown": 100, "pdf": 127, "pem": 129, "perl": 130, "png": 133, "python":
                 143, "pythonbytecode": 144, "rst": 153, "ruby": 155, "rust": 156, "shell": 161, "sql": 165, "svg":
                 172, "tcl": 176, "toml": 181, "txt": 186, "xml": 206, "xz": 208, "yaml": 209, "zip": 212}
ROOTS = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], "/usr/share", "/usr/include", "/usr/lib"]


def features(path: Path) -> list[int] | None:
    data = path.read_bytes() if path.stat().st_size <= 2 * BLOCK else None
    with open(path, "rb") as f:
        if data is None:
            beg = f.read(BLOCK)
            f.seek(-BLOCK, 2)
            end = f.read(BLOCK)
        else:
            beg = end = data
    small = data is not None and len(data) <= BLOCK
    beg = (beg.strip() if small else beg.lstrip())[:BEG]
    end = (end.strip() if small else end.rstrip())[-END:] if END else b""
    if len(beg) < 8:
        return None  # magika itself does not run its model on files this small
    return list(beg) + [PAD] * (BEG - len(beg)) + [PAD] * (END - len(end)) + list(end)


def build(out_dir: Path, seed: int = 0) -> dict:
    import numpy as np

    index = MODEL_CLASSES
    names = {i: label for label, i in index.items()}
    by_label: dict[str, list[Path]] = {}
    for root in ROOTS:
        for p in sorted(Path(root).rglob("*")) if Path(root).is_dir() else []:
            label = LABELS.get(p.suffix.lower())
            if label in index and p.is_file() and not p.is_symlink() and len(by_label.get(label, [])) < 4 * PER_LABEL:
                by_label.setdefault(label, []).append(p)
    rng = random.Random(seed)
    rows, ys = [], []
    for label, paths in sorted(by_label.items()):
        rng.shuffle(paths)
        kept = 0
        for p in paths:
            try:
                f = features(p)
            except OSError:
                continue
            if f is not None:
                rows.append(f)
                ys.append(index[label])
                kept += 1
            if kept >= PER_LABEL:
                break
    order = list(range(len(rows)))
    rng.shuffle(order)
    x = np.asarray(rows, dtype=np.int32)[order]
    y = np.asarray(ys, dtype=np.int64)[order]
    half = len(x) // 2
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "magika_calibration.npz", bytes=x[:half], labels=y[:half])
    np.savez(out_dir / "magika_validation.npz", bytes=x[half:], labels=y[half:])
    return {"samples": len(x), "labels": sorted({names[i] for i in ys})}


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("magika-data")))
