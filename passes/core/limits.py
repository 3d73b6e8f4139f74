"""Resource limits checked before a model is read (a small file must not make mdeploy allocate gigabytes), and how
sizes are written (human_bytes: these messages, every table and chart).

ONNX external data is summed from what the model declares and checked against the files that hold it (and the
model's folder) before any of it is loaded; a .keras archive's members are checked from its zip directory before
any is inflated (Python's zipfile then never inflates a member past its declared size).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from mdeploy.passes.core.errors import BadInput

MAX_MODEL_BYTES_CEILING = 16 << 30  # 16 GB, in human_bytes' binary units
KERAS_TEXT_MEMBERS = ("config.json", "metadata.json")
MAX_KERAS_TEXT_BYTES = 8 << 20
SPARSE_MIN_BYTES = 64 << 20  # below this a sparse external-data file cannot hurt; above it, holes are refused
HINT = "pass --max-model-bytes N to allow a larger model (default: half the available memory, at most 16 GB)"


def default_max_model_bytes() -> int:
    """Half the memory available now, at most 16 GB: a model is held in memory at least once while it is processed."""
    try:
        import psutil

        available = psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 - no psutil or no /proc: the fixed ceiling alone
        return MAX_MODEL_BYTES_CEILING
    return int(min(available // 2, MAX_MODEL_BYTES_CEILING))


# binary units, as human_bytes writes sizes (KB = 1024 bytes)
SIZE_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "KIB": 1 << 10, "MIB": 1 << 20,
              "GIB": 1 << 30, "TIB": 1 << 40}


def parse_size(text: str | int, what: str, example: str) -> int:
    """'20GB', '512MiB', '1000000' or a positive int -> bytes; else BadInput naming `what`, with `example` in the hint."""
    import re

    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text) if isinstance(text, str) else None
    unit = m.group(2).upper() if m else ""
    if not m or unit not in SIZE_UNITS or float(m.group(1)) <= 0:
        raise BadInput(f"{what} {text!r} is not a size", f"write e.g. {example} (or a number of bytes)")
    return int(float(m.group(1)) * SIZE_UNITS[unit])


def human_bytes(n: float | None) -> str:
    """1.5 KB, 13.3 MB: sizes as every table and chart shows them."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def check_model_bytes(path: Path, size: int, max_bytes: int | None, what: str = "") -> None:
    limit = default_max_model_bytes() if max_bytes is None else max_bytes
    if size > limit:
        raise BadInput(f"{path}{what} is {human_bytes(size)}, over the {human_bytes(limit)} limit for a model", HINT)


def check_keras_archive(path: Path, max_bytes: int | None = None) -> None:
    """Refuse a .keras zip whose config/metadata or whole contents would inflate past the limits."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise BadInput(f"{path} is not a readable Keras v3 archive ({e})",
                       "re-save the model with model.save('model.keras'), or pass the right file") from e
    for m in members:
        if Path(m.filename).name in KERAS_TEXT_MEMBERS and m.file_size > MAX_KERAS_TEXT_BYTES:
            raise BadInput(f"{path}: {m.filename} inflates to {human_bytes(m.file_size)} (a model's config is a few KB; "
                           f"the limit is {human_bytes(MAX_KERAS_TEXT_BYTES)})",
                           "the archive is damaged or hostile; re-save the model with model.save('model.keras')")
    check_model_bytes(path, sum(m.file_size for m in members), max_bytes, " (inflated)")


def _external_tensors(model):
    try:
        from onnx.external_data_helper import _get_all_tensors  # initializers, node attributes and subgraphs

        return list(_get_all_tensors(model))
    except ImportError:
        return list(model.graph.initializer)


def check_onnx_external_data(model, path: Path, max_bytes: int | None = None, *, apply_limit: bool = True) -> None:
    """For an ONNX ModelProto loaded without its external data: refuse data that lives outside the model's folder,
    that its files do not hold (past their end, or in holes of a sparse file), or that is over the size limit."""
    from onnx import TensorProto

    path = Path(path)
    base = path.resolve().parent
    declared: dict[Path, int] = {}
    for t in _external_tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if not location or Path(location).is_absolute() or (target != base and base not in target.parents):
            raise BadInput(f"{path}: tensor '{t.name}' keeps its data at '{location}', outside the model's folder",
                           "external data must sit beside the model (re-save it with onnx.save(..., location=NAME))")
        if not target.is_file():
            raise BadInput(f"{path}: tensor '{t.name}' keeps its data in '{location}', which does not exist",
                           "copy the external data file(s) with the model")
        try:
            offset, length = int(info.get("offset", 0)), int(info["length"]) if "length" in info else None
        except ValueError:
            raise BadInput(f"{path}: tensor '{t.name}' has a malformed external data offset/length", "re-export the model") from None
        size = target.stat().st_size
        length = size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > size:
            raise BadInput(f"{path}: tensor '{t.name}' claims {human_bytes(length)} at offset {offset} of '{location}', "
                           f"which holds {human_bytes(size)}", "the external data file is truncated; copy it again")
        declared[target] = declared.get(target, 0) + length
    for target, length in declared.items():
        allocated = target.stat().st_blocks * 512
        if length > SPARSE_MIN_BYTES and allocated < length // 8:
            raise BadInput(f"{path}: its external data claims {human_bytes(length)} in '{target.name}', of which only "
                           f"{human_bytes(allocated)} exist on disk (a sparse file)",
                           "the external data is damaged or hostile; re-export the model")
    if apply_limit:
        check_model_bytes(path, os.path.getsize(path) + sum(declared.values()), max_bytes, " with its external data")
