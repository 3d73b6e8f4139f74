"""What both pruners report: the per-layer summary and the compressed (gzip) size, where zeros pay off."""
from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

DENSE_NOTE = ("zeros make a model smaller only after compression (the gzip column) or on sparse kernels: "
              "the file itself stores every zero as a full-width number")


def compressed_size(path: Path, level: int = 6) -> int:
    """Bytes after deflate (what gzip stores, less its 18-byte header), streamed so large models fit in memory."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    total = 0
    for f in files:
        comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: the gzip container
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                total += len(comp.compress(chunk))
        total += len(comp.flush())
    return total


def pruning_summary(weights: Iterable[tuple[str, str, str, np.ndarray]], *, selected: set[str], skipped: dict[str, str],
                    target: float, scope: str, pattern: str | None, total_params: int, total_zeros: int) -> dict[str, Any]:
    """Target vs achieved sparsity per kernel and overall. `weights` is (layer, weight name, kind, values) for
    every prunable kernel; achieved_sparsity is over the selected (pruned) kernels, model_sparsity over all weights."""
    layers = []
    pruned_params = pruned_zeros = kernel_params = kernel_zeros = 0
    for layer, name, kind, values in weights:
        params = int(np.size(values))
        zeros = int(np.count_nonzero(np.asarray(values) == 0))
        kernel_params += params
        kernel_zeros += zeros
        is_pruned = name in selected
        if is_pruned:
            pruned_params += params
            pruned_zeros += zeros
        layers.append({"name": layer, "weight": name, "kind": kind, "shape": list(np.shape(values)), "params": params,
                       "zeros": zeros, "target": round(target, 6) if is_pruned else None,
                       "achieved": round(zeros / params, 6) if params else 0.0, "pruned": is_pruned,
                       "note": "" if is_pruned else skipped.get(layer, "")})
    return {
        "target_sparsity": round(target, 6),
        "achieved_sparsity": round(pruned_zeros / pruned_params, 6) if pruned_params else 0.0,
        "scope": scope,
        "pattern": pattern,
        "layers": layers,
        "pruned_params": pruned_params,
        "kernel_params": kernel_params,
        "kernel_sparsity": round(kernel_zeros / kernel_params, 6) if kernel_params else 0.0,
        "params": total_params,
        "zeros": total_zeros,
        "model_sparsity": round(total_zeros / total_params, 6) if total_params else 0.0,
        "note": DENSE_NOTE,
    }


XNNPACK_MIN_SPARSITY = 2 / 3
# Measured (docs/pruning.md): MobileNetV2 at 75% sparsity, 51 kernels stored in TFLite's sparse format, ran no faster
# on the installed LiteRT (XNNPACK, x86-64) than stored dense, and ONNX Runtime has no sparse convolution kernels.
SPARSE_RUNTIME_NOTE = ("no measured speedup: the installed LiteRT (XNNPACK on x86-64) ran MobileNetV2 at 75% "
                       "sparsity, its kernels in TFLite's sparse format, no faster than dense, and ONNX Runtime has no "
                       "sparse convolution kernels; zeros pay off in compressed size only. For speed, prune "
                       "--structured (docs/pruning.md)")


def sparse_kernel_candidates(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Which pruned kernels fit XNNPACK's sparse inference (LiteRT, fp32/fp16): 1x1 Conv2D kernels at >= 2/3
    sparsity. Whether they then run sparse depends on the runtime and the subgraph around them: see SPARSE_RUNTIME_NOTE."""
    qualifying = [layer["name"] for layer in layers
                  if layer["kind"] == "Conv2D" and len(layer["shape"]) == 4 and list(layer["shape"][:2]) == [1, 1]
                  and layer["achieved"] >= XNNPACK_MIN_SPARSITY - 1e-9]
    return {"runtime": "XNNPACK sparse inference (LiteRT)", "min_sparsity": round(XNNPACK_MIN_SPARSITY, 4),
            "qualifying_layers": qualifying, "note": SPARSE_RUNTIME_NOTE}
