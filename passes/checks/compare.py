"""Numerical comparison of two models' outputs: the metrics parity, quantization quality and validate share.

Outputs are matched by name when both sides use the same names, otherwise by position.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mdeploy.passes.core.errors import BadInput


def match_outputs(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """Pairs (reference name, candidate name). Raises BadInput on a count or shape mismatch."""
    if set(ref) == set(cand):
        pairs = [(k, k) for k in ref]
    elif len(ref) == len(cand):
        pairs = list(zip(ref, cand))
    else:
        raise BadInput(f"the reference has {len(ref)} outputs ({', '.join(ref)}) but the candidate has {len(cand)} ({', '.join(cand)})",
                       "compare models with the same outputs")
    for r, c in pairs:
        rs, cs = np.shape(ref[r]), np.shape(cand[c])
        if rs != cs and not (len(rs) == len(cs) and int(np.prod(rs)) == int(np.prod(cs))):
            raise BadInput(f"output '{r}' has shape {list(rs)} in the reference but '{c}' has {list(cs)} in the candidate",
                           "the models do not compute the same thing; check you passed the right files")
    return pairs


def is_classifier_output(y: np.ndarray) -> bool:
    """A 2-D (batch, classes) float output with at least two classes: top-k agreement makes sense."""
    return y.ndim == 2 and y.shape[1] >= 2 and y.dtype.kind == "f"


def sqnr_db(ref: np.ndarray, cand: np.ndarray) -> float:
    signal = float(np.sum(np.square(ref, dtype=np.float64)))
    noise = float(np.sum(np.square(ref.astype(np.float64) - cand.astype(np.float64))))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def topk_agreement(ref: np.ndarray, cand: np.ndarray, k: int) -> float:
    """Fraction of rows whose reference top-1 class is among the candidate's top-k.

    One tie rule everywhere, as accuracy's argmax: among equal scores the lowest class index ranks first
    (a stable sort), so a tied int8 output counts as agreeing exactly when its argmax does."""
    if ref.shape[1] < k:
        return float("nan")
    top1 = np.argmax(ref, axis=1)
    topk = np.argsort(-cand, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(topk == top1[:, None], axis=1)))


def compare_arrays(ref: np.ndarray, cand: np.ndarray) -> dict[str, float | int]:
    """Error metrics of one candidate output against its reference."""
    ref = np.asarray(ref)
    cand = np.asarray(cand).reshape(ref.shape)
    r = ref.astype(np.float64)
    c = cand.astype(np.float64)
    finite = np.isfinite(c)
    diff = np.abs(np.where(finite, c, 0.0) - r)
    scale = np.max(np.abs(r)) if r.size else 0.0
    denom = np.linalg.norm(r.ravel()) * np.linalg.norm(np.where(finite, c, 0.0).ravel())
    out: dict[str, float | int] = {
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        # relative to the output's range, so near-zero entries do not blow it up
        "max_rel_error": float(diff.max() / scale) if diff.size and scale > 0 else 0.0,
        "cosine_similarity": float(np.dot(r.ravel(), np.where(finite, c, 0.0).ravel()) / denom) if denom > 0 else 1.0,
        "sqnr_db": sqnr_db(r, np.where(finite, c, 0.0)),
        "nan_count": int(np.isnan(c).sum()),
        "inf_count": int(np.isinf(c).sum()),
    }
    if is_classifier_output(ref):
        out["top1_agreement"] = topk_agreement(ref, cand, 1)
        out["top5_agreement"] = topk_agreement(ref, cand, 5)
    return out


def compare_outputs(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray]) -> dict[str, dict[str, float | int]]:
    """Per-output metrics keyed by the reference output name."""
    return {r: compare_arrays(ref[r], cand[c]) for r, c in match_outputs(ref, cand)}


def worst(per_output: Mapping[str, Mapping[str, float]], metric: str) -> float:
    """The worst value of `metric` across outputs (max for errors, min for similarities)."""
    values = [m[metric] for m in per_output.values() if metric in m]
    if not values:
        return float("nan")
    lower_is_better = metric.endswith("error") or metric.endswith("count")
    return max(values) if lower_is_better else min(values)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of a (batch, classes) output against integer (or one-hot) labels; ties go to the lowest
    class index (argmax), the rule top-k agreement uses too."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = np.argmax(labels, axis=1)
    return float(np.mean(np.argmax(probs.reshape(len(probs), -1), axis=1) == labels.reshape(-1)))
