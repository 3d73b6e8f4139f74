"""Sparsity masks in plain numpy, shared by the Keras and the ONNX pruners: magnitude masks with a per-layer or
one global threshold, N:M structured masks along the input dimension, and the Zhu & Gupta pruning schedule.

A mask is a boolean array shaped like its weight: True keeps the weight, False zeroes it. Masks prune an exact
count (round(sparsity * size)) so achieved sparsity equals the target even when magnitudes tie.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mdeploy.passes.core.errors import BadInput


def check_sparsity(sparsity: float, what: str = "--sparsity") -> float:
    """A fraction in [0, 1): 1.0 would zero every weight, which is never a model."""
    try:
        s = float(sparsity)
    except (TypeError, ValueError) as e:
        raise BadInput(f"{what} must be a number in [0, 1), got {sparsity!r}", "for example --sparsity 0.5") from e
    if not (0.0 <= s < 1.0) or s != s:
        raise BadInput(f"{what} must be in [0, 1), got {sparsity}",
                       "sparsity is the fraction of weights set to zero: 0.5 zeroes half of them, 1.0 would zero all")
    return s


def parse_pattern(text: str | None) -> tuple[int, int] | None:
    """'2:4' -> (2, 4): keep N of every M consecutive weights."""
    if text is None or text == "":
        return None
    try:
        n_text, m_text = text.split(":")
        n, m = int(n_text), int(m_text)
    except ValueError as e:
        raise BadInput(f"--pattern must be N:M (keep N of every M weights), got {text!r}", "for example --pattern 2:4") from e
    if not (0 < n < m):
        raise BadInput(f"--pattern {text}: need 0 < N < M", "for example --pattern 2:4 keeps two of every four weights")
    return n, m


def prune_count(size: int, sparsity: float) -> int:
    return int(round(sparsity * size))


def magnitude_mask(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the largest-magnitude weights; zero exactly round(sparsity * size) of them."""
    flat = np.abs(np.asarray(weight, dtype=np.float64)).ravel()
    k = prune_count(flat.size, sparsity)
    keep = np.ones(flat.size, dtype=bool)
    if k > 0:
        # stable sort: among equal magnitudes (already-pruned zeros) the order is deterministic
        keep[np.argsort(flat, kind="stable")[:k]] = False
    return keep.reshape(np.shape(weight))


def global_masks(weights: Mapping[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
    """One threshold across all weights: layers with many small weights end up sparser than others."""
    names = list(weights)
    if not names:
        return {}
    flat = np.concatenate([np.abs(np.asarray(weights[n], dtype=np.float64)).ravel() for n in names])
    keep = np.ones(flat.size, dtype=bool)
    k = prune_count(flat.size, sparsity)
    if k > 0:
        keep[np.argsort(flat, kind="stable")[:k]] = False
    masks: dict[str, np.ndarray] = {}
    start = 0
    for n in names:
        size = int(np.size(weights[n]))
        masks[n] = keep[start:start + size].reshape(np.shape(weights[n]))
        start += size
    return masks


def layer_masks(weights: Mapping[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
    """Every weight tensor to the same sparsity."""
    return {n: magnitude_mask(w, sparsity) for n, w in weights.items()}


def nm_mask(weight: np.ndarray, n: int, m: int, axis: int, name: str = "weight", layer: str | None = None) -> np.ndarray:
    """Keep the n largest of every m consecutive weights along `axis` (the input dimension).

    Raises BadInput when `axis` is not a multiple of m, naming the weight and its shape.
    """
    w = np.abs(np.asarray(weight, dtype=np.float64))
    axis = axis % w.ndim
    size = w.shape[axis]
    if size % m:
        raise BadInput(f"--pattern {n}:{m} does not divide the input dimension of {name}: {size} (shape {list(w.shape)}) "
                       f"is not a multiple of {m}",
                       f"keep that layer dense with --exclude '{layer or name}'")
    moved = np.moveaxis(w, axis, -1)
    groups = moved.reshape(*moved.shape[:-1], size // m, m)
    order = np.argsort(-groups, axis=-1, kind="stable")  # largest first
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


def check_nm(weight: np.ndarray, n: int, m: int, axis: int) -> bool:
    """True when every group of m consecutive weights along `axis` has at most n non-zeros."""
    w = np.moveaxis(np.asarray(weight), axis % np.ndim(weight), -1)
    if w.shape[-1] % m:
        return False
    groups = w.reshape(*w.shape[:-1], w.shape[-1] // m, m)
    return bool(np.all(np.count_nonzero(groups, axis=-1) <= n))


def polynomial_sparsity(step: int, *, initial: float, final: float, begin_step: int, end_step: int,
                        exponent: int = 3) -> float:
    """Zhu & Gupta (2017), eq. 1: s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (n * dt))^3 for t in [t_0, t_0 + n*dt].

    Before begin_step the sparsity is `initial`, from end_step on it is `final`. Pruning fast at first and slowly
    near the end gives the network time to recover while few weights are left to remove.
    """
    if end_step <= begin_step or step >= end_step:
        return final if step >= begin_step else initial
    if step <= begin_step:
        return initial
    progress = (step - begin_step) / (end_step - begin_step)
    return final + (initial - final) * (1.0 - progress) ** exponent


def schedule_updates(total_steps: int, begin_step: int, end_step: int, frequency: int) -> list[int]:
    """The steps at which masks are recomputed: every `frequency` steps from begin_step, and at end_step."""
    steps = list(range(begin_step, min(end_step, total_steps) + 1, max(1, frequency)))
    if end_step <= total_steps and (not steps or steps[-1] != end_step):
        steps.append(end_step)
    return steps


def select_layers(layers: list[str], exclude: tuple[str, ...] = (), prune_first_last: bool = False
                  ) -> tuple[list[str], dict[str, str], list[str]]:
    """Which prunable layers (in graph order) get masks.

    Returns (selected, {skipped layer: reason}, exclude patterns that matched nothing). By default the first and
    the last prunable layer stay dense: the first sees the raw input through few channels and the last writes the
    outputs directly; together they hold a small share of the weights but a large share of the accuracy.
    """
    import fnmatch

    skipped: dict[str, str] = {}
    unique = list(dict.fromkeys(layers))
    if not prune_first_last and len(unique) > 2:
        skipped[unique[0]] = "first layer: dense by policy"
        skipped[unique[-1]] = "last layer: dense by policy"
    unmatched = []
    for pattern in exclude:
        hits = [name for name in unique if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.split("/")[-1], pattern)]
        if not hits:
            unmatched.append(pattern)
        for name in hits:
            skipped.setdefault(name, f"--exclude {pattern}")
    return [n for n in unique if n not in skipped], skipped, unmatched


def choose_weights(weights: list, *, sparsity: float, pattern: str | None, scope: str, exclude: tuple[str, ...],
                   prune_first_last: bool, warn, unit: str = "layer") -> tuple[float, tuple[int, int] | None, list, dict[str, str]]:
    """The shared front half of every pruning pass: check the flags, apply the first/last and --exclude policy,
    and drop kernels that cannot hold an N:M pattern.

    `weights` are objects with .layer, .kind and .input_axis, in graph order. Returns
    (target sparsity, parsed pattern, selected weights, {skipped layer: reason}).
    """
    parsed = parse_pattern(pattern)
    target = (1.0 - parsed[0] / parsed[1]) if parsed else check_sparsity(sparsity)
    if scope not in ("layer", "global"):
        raise BadInput(f"--scope must be layer or global, got {scope!r}", "use --scope layer or --scope global")
    order = [w.layer for w in weights]
    selected_layers, skipped, unmatched = select_layers(order, exclude, prune_first_last)
    for p in unmatched:
        warn(f"--exclude {p!r} matched no prunable {unit} ({unit}s: {', '.join(dict.fromkeys(order))})")
    selected = [w for w in weights if w.layer in selected_layers]
    if parsed is not None:
        for w in [w for w in selected if w.input_axis is None]:
            skipped[w.layer] = f"{w.kind}: no N:M along its input"
            warn(f"{w.layer}: a {w.kind} kernel cannot hold an N:M pattern; left dense")
        selected = [w for w in selected if w.input_axis is not None]
    if not selected:
        raise BadInput(f"every prunable {unit} is excluded: nothing to prune",
                       "drop an --exclude pattern, or pass --prune-first-last for a model this small")
    return target, parsed, selected, skipped


def masks_for(weights: list, values: Mapping[str, np.ndarray], sparsity: float, scope: str,
              pattern: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """Masks for the selected weights (objects with .name, .layer, .input_axis) by pattern, global or per layer."""
    if pattern is not None:
        n, m = pattern
        return {w.name: nm_mask(values[w.name], n, m, w.input_axis, w.name, w.layer) for w in weights}
    if scope == "global":
        return global_masks(values, sparsity)
    return layer_masks(values, sparsity)
