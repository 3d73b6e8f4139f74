"""Structured (filter) pruning of Keras 3 models: rank each channel group's filters, remove the lowest fraction, and
rebuild a physically smaller model (channels.py does the graph surgery, flops.py the counting), optionally fine-tuned.

Ranking: `l1`/`l2` sum the per-filter norms of every producer in a group (each divided by its mean, so a group tied
across an Add weighs its producers equally); `bn` sums the |gamma| of the BatchNorms on the group (groups without one
fall back to l1). `ratio` keeps size - floor(ratio * size) channels of every prunable group, rounded to the nearest
multiple of the group's channel multiple; `flops_target` instead allocates globally: channels go, one multiple at a
time, from the group where they save the most FLOPs per importance lost, until the rebuilt model has at most that
fraction of the original FLOPs; no group loses more than half its channels, and a target that needs more falls back to
the smallest uniform ratio that meets it.

Channel multiple: `auto` (the default) gives a group whose dense width is a multiple of 8 kept counts that are
multiples of 8 (ONNX Runtime's NCHWc convolutions on x86-64 need input channels that are a multiple of their 8-wide
block, and pad output channels up to it; odd counts measured slower than the dense model), and prunes any other group
channel by channel (its width was never aligned). An integer N applies to every group.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mdeploy.passes.backends.tensorflow import load_keras_model
from mdeploy.passes.backends.tf_env import import_keras
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import atomic_output, ensure_writable
from mdeploy.passes.core.pipeline import Context, pass_params
from mdeploy.passes.prune.channels import NORMS, PRODUCERS, ChannelGraph, Tiled, rebuild
from mdeploy.passes.prune.fine_tuning import FineTuning, fit_model
from mdeploy.passes.prune.flops import model_flops
from mdeploy.passes.prune.summary import compressed_size

CRITERIA = ("l1", "l2", "bn")
MAX_RATIO = 0.95
GLOBAL_CAP = 0.5  # under a FLOPs target no group loses more than half its channels (then: uniform ratio)
AUTO = "auto"
# ONNX Runtime's NCHWc block on AVX2 (MlasNchwcGetBlockSize; 16 on AVX-512) and XNNPACK's f32 tile width on x86-64
VECTOR_CHANNELS = 8
# under `auto`, a FLOPs target the 8-channel steps cannot reach is retried with finer steps, each one recorded
AUTO_LEVELS = (VECTOR_CHANNELS, 4, 2, 1)


def parse_multiple(value: int | str | None) -> int | str:
    """--channel-multiple as given on the command line or in a recipe: `auto` or an integer >= 1."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return AUTO
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or (isinstance(value, float) and value != n):
        raise BadInput(f"--channel-multiple must be auto or a whole number >= 1, got {value!r}",
                       "for example --channel-multiple auto (the default) or --channel-multiple 8")
    return n


def group_multiples(graph: ChannelGraph, groups, multiple: int | str, level: int = VECTOR_CHANNELS) -> dict[int, int]:
    """Each group's channel multiple: `multiple` itself when it is an integer; under `auto`, gcd(width, level) for a
    group whose width is a multiple of 8 (so 8 unless a finer level is asked for) and 1 for any other group."""
    if multiple != AUTO:
        return {g: int(multiple) for g in groups}
    return {g: (math.gcd(graph.groups[g].size, level) if graph.groups[g].size % VECTOR_CHANNELS == 0 else 1)
            for g in groups}


def _filter_norms(layer, criterion: str) -> np.ndarray:
    weights = layer.get_weights()
    kernel = np.asarray(weights[1] if type(layer).__name__.startswith("Separable") else weights[0])
    flat = kernel.reshape(-1, kernel.shape[-1])
    return np.sqrt((flat ** 2).sum(0)) if criterion == "l2" else np.abs(flat).sum(0)


def _normalized(values: np.ndarray) -> np.ndarray:
    mean = float(np.mean(values)) if values.size else 0.0
    return values / mean if mean > 0 else np.ones_like(values, dtype=np.float64)


def channel_scores(graph: ChannelGraph, criterion: str) -> dict[int, np.ndarray]:
    """Importance of every channel of every prunable group (higher = keep)."""
    if criterion not in CRITERIA:
        raise BadInput(f"--criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}", "for example --criterion l1")
    model = graph.model
    prunable = set(graph.prunable())
    norm_scores = {g: np.zeros(graph.groups[g].size) for g in prunable}
    bn_scores = {g: np.zeros(graph.groups[g].size) for g in prunable}
    bn_seen: set[int] = set()
    for name, gid in graph.owned.items():
        root = graph.find(gid)
        if root in prunable:
            norm_scores[root] += _normalized(_filter_norms(model.get_layer(name), "l2" if criterion == "l2" else "l1"))
    if criterion == "bn":
        for name, layout in graph.layer_in.items():
            layer = model.get_layer(name)
            if type(layer).__name__ not in NORMS or not layer.scale or isinstance(layout, Tiled):
                continue
            gamma = _normalized(np.abs(np.asarray(layer.gamma.numpy(), np.float64)))
            offset = 0
            for s in layout:
                root = None if s.gid is None else graph.find(s.gid)
                if root in prunable:
                    bn_scores[root] += gamma[offset:offset + s.n]
                    bn_seen.add(root)
                offset += s.n
    return {g: (bn_scores[g] if g in bn_seen else norm_scores[g]) for g in prunable}


def _multiple_of(multiples: int | dict[int, int], g: int) -> int:
    return multiples if isinstance(multiples, int) else multiples[g]


def masks_for_ratio(graph: ChannelGraph, scores: dict[int, np.ndarray], ratio: float,
                    multiples: int | dict[int, int] = 1) -> dict[int, np.ndarray]:
    """Keep the highest-scored channels of each group: all but floor(ratio * size), rounded to the nearest multiple of
    the group's multiple (ties keep more; kernels run fastest on channel counts that fill their vector registers), at
    least one multiple and at most the whole group."""
    masks = {}
    for g, score in scores.items():
        size, m = graph.groups[g].size, _multiple_of(multiples, g)
        keep = max(1, size - int(math.floor(ratio * size + 1e-9)))
        keep = min(size, max(m, int(math.floor(keep / m + 0.5)) * m))
        order = np.argsort(-score, kind="stable")[:keep]
        mask = np.zeros(size, bool)
        mask[order] = True
        masks[g] = mask
    return masks


def estimated_flops(graph: ChannelGraph, dense: dict[str, Any]) -> float:
    """FLOPs after the current masks, from the dense count scaled by the kept fraction of input and output channels
    (exact for convolutions and Dense up to their bias; spatial sizes do not change)."""
    total = 0.0
    for entry in dense["layers"]:
        name, kind = entry["name"], entry["kind"]
        out = graph.out_mask(name)
        fout = 1.0 if out is None or out.size == 0 else float(out.mean())
        if kind in PRODUCERS and name in graph.layer_in:
            fin = graph.mask_of(graph.layer_in[name])
            total += entry["flops"] * (float(fin.mean()) if fin.size else 1.0) * fout
        else:
            total += entry["flops"] * fout
    return total


def masks_for_flops(graph: ChannelGraph, scores: dict[int, np.ndarray], dense: dict[str, Any], goal: float,
                    multiples: int | dict[int, int] = 1, cap: float = GLOBAL_CAP) -> dict[int, np.ndarray]:
    """Global allocation under a FLOPs budget: repeatedly remove the least important channels of the group where that
    saves the most FLOPs per unit of importance lost (scores are per-group normalized), down to the group's next
    multiple, until the estimated FLOPs reach `goal`; no group loses more than `cap` of its channels."""
    order = {g: np.argsort(score, kind="stable") for g, score in scores.items()}
    removed = {g: 0 for g in scores}

    def mask(g: int, n_removed: int) -> np.ndarray:
        m = np.ones(graph.groups[g].size, bool)
        m[order[g][:n_removed]] = False
        return m

    masks = {g: mask(g, 0) for g in scores}
    graph.set_masks(masks)
    current = estimated_flops(graph, dense)
    while current > goal:
        best = None
        for g, score in scores.items():
            size = graph.groups[g].size
            keep, multiple = size - removed[g], _multiple_of(multiples, g)
            new_keep = (keep - 1) // multiple * multiple
            if new_keep < max(1, math.ceil(size * (1 - cap))):
                continue
            step = keep - new_keep
            cost = float(score[order[g][removed[g]:removed[g] + step]].sum()) + 1e-9
            graph.set_masks({**masks, g: mask(g, removed[g] + step)})
            flops = estimated_flops(graph, dense)
            value = (current - flops) / cost
            if best is None or value > best[0]:
                best = (value, g, step, flops)
        if best is None:
            break
        _, g, step, current = best
        removed[g] += step
        masks[g] = mask(g, removed[g])
    graph.set_masks(masks)
    return masks


def ratio_for_flops(graph: ChannelGraph, scores, dense: dict[str, Any], goal: float,
                    multiples: int | dict[int, int] = 1) -> float:
    """The smallest uniform ratio (to 1e-3) whose estimated FLOPs are at most `goal` (the fallback allocation)."""
    lo, hi = 0.0, MAX_RATIO
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        graph.set_masks(masks_for_ratio(graph, scores, mid, multiples))
        lo, hi = (lo, mid) if estimated_flops(graph, dense) <= goal else (mid, hi)
    graph.set_masks(masks_for_ratio(graph, scores, hi, multiples))
    return hi


def allocate_for_flops(graph: ChannelGraph, scores, dense: dict[str, Any], goal: float, multiples: dict[int, int],
                       keras):
    """Masks for at most `goal` FLOPs, then the rebuilt model and its counted FLOPs. The estimate ignores bias terms,
    so the goal is tightened until the rebuilt model's count agrees."""
    for shrink in (1.0, 0.995, 0.98, 0.95):
        masks_for_flops(graph, scores, dense, goal * shrink, multiples)
        if estimated_flops(graph, dense) > goal * shrink:  # half of every group was not enough
            ratio_for_flops(graph, scores, dense, goal * shrink, multiples)
        small = rebuild(graph, keras)
        after = model_flops(small)
        if after["flops"] <= goal:
            break
    return small, after


@dataclass(frozen=True)
class PruneStructured:
    """Remove whole filters of a Keras model -> OUTDIR/keras/model.structured.keras (a smaller model, not zeros).

    Parameters:
      ratio: fraction of each prunable group's channels to remove, in [0, 0.95].
      flops_target: instead of ratio, the fraction of the original FLOPs to reach, in (0, 1).
      criterion: l1 | l2 (filter norms) | bn (BatchNorm |gamma|).
      multiple: "auto" (multiples of 8 for groups whose width is one, see the module) or N for every group.
      fine_tuning: train the smaller model afterwards (FineTuning, fine_tuning.py).
    """

    name: ClassVar[str] = "prune.structured"
    accepts: ClassVar[tuple[str, ...]] = ("keras",)
    produces: ClassVar[str] = "keras"
    ratio: float | None = None
    flops_target: float | None = None
    criterion: str = "l1"
    multiple: int | str = AUTO
    fine_tuning: FineTuning | None = None
    file_name: str = "model.structured.keras"

    def output_path(self, ctx: Context) -> Path:
        return Path(ctx.out_dir) / "keras" / self.file_name

    def check(self) -> None:
        if (self.ratio is None) == (self.flops_target is None):
            raise BadInput("structured pruning takes exactly one of --ratio and --flops-target",
                           "for example --ratio 0.3, or --flops-target 0.5 for half the FLOPs")
        if self.ratio is not None and not 0.0 <= self.ratio <= MAX_RATIO:
            raise BadInput(f"--ratio must be in [0, {MAX_RATIO}], got {self.ratio:g}", "for example --ratio 0.3")
        if self.flops_target is not None and not 0.0 < self.flops_target < 1.0:
            raise BadInput(f"--flops-target must be in (0, 1), a fraction of the model's FLOPs, got {self.flops_target:g}",
                           "for example --flops-target 0.5")
        if parse_multiple(self.multiple) != self.multiple:
            raise BadInput(f"--channel-multiple must be auto or a whole number >= 1, got {self.multiple!r}",
                           "for example --channel-multiple auto (the default) or --channel-multiple 8")
        if self.criterion not in CRITERIA:
            raise BadInput(f"--criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}",
                           "for example --criterion l1")

    def run(self, artifact: Artifact, ctx: Context) -> Artifact:
        self.check()
        final = self.output_path(ctx)
        ensure_writable(final, ctx.force)
        keras = import_keras()
        model = load_keras_model(artifact.path, trusted=artifact.trusted)
        if type(model).__name__ not in ("Functional", "Sequential") and not hasattr(model, "_nodes_by_depth"):
            raise BadInput(f"{artifact.path}: structured pruning needs a functional or Sequential Keras model, "
                           f"this is a subclassed {type(model).__name__}",
                           "rebuild it with the functional API, or use unstructured --sparsity")
        ctx.stage("tracing channel groups")
        graph = ChannelGraph(model)
        if not graph.prunable():
            raise BadInput(f"{artifact.path}: no channel group can be pruned (every one reaches an output or a layer "
                           "mdeploy does not slice)", "use unstructured --sparsity for this model")
        dense = model_flops(model)
        scores = channel_scores(graph, self.criterion)
        if self.flops_target is None:
            multiples = group_multiples(graph, scores, self.multiple)
            graph.set_masks(masks_for_ratio(graph, scores, self.ratio, multiples))
            ctx.stage(f"rebuilding with {self.ratio:g} of each group's filters removed")
            small = rebuild(graph, keras)
            after = model_flops(small)
        else:
            goal = self.flops_target * dense["flops"]
            for level in (AUTO_LEVELS if self.multiple == AUTO else (self.multiple,)):
                ctx.stage(f"allocating channels for {self.flops_target:g} of the FLOPs")
                multiples = group_multiples(graph, scores, self.multiple, level)
                small, after = allocate_for_flops(graph, scores, dense, goal, multiples, keras)
                if after["flops"] <= goal:
                    break
            if after["flops"] > goal:
                frozen = sum(1 for g in graph.roots() if graph.groups[g].frozen)
                raise BadInput(f"{artifact.path}: the FLOPs target {self.flops_target:g} cannot be reached: removing up "
                               f"to {MAX_RATIO:.0%} of every prunable group leaves {after['flops'] / dense['flops']:.2f} "
                               f"of the FLOPs ({frozen} group{'s' if frozen != 1 else ''} must stay whole)",
                               "ask for a higher --flops-target" if self.multiple in (AUTO, 1) else
                               "ask for a higher --flops-target, or a smaller --channel-multiple (or auto)")
            if self.multiple == AUTO and level < VECTOR_CHANNELS:
                finer = [g for g, m in multiples.items() if graph.groups[g].size % VECTOR_CHANNELS == 0 and m < VECTOR_CHANNELS]
                ctx.warn(f"the FLOPs target {self.flops_target:g} could not be reached in steps of "
                         f"{VECTOR_CHANNELS} channels: {len(finer)} group{'s' if len(finer) != 1 else ''} used multiples "
                         f"of {level} instead, which "
                         "may run slower on ONNX Runtime (the report lists each group's multiple)")
        removed = sum(int((~graph.groups[g].mask).sum()) for g in scores)
        ratio = removed / sum(graph.groups[g].size for g in scores)
        if self.ratio is not None and abs(ratio - self.ratio) > 0.01:
            ctx.warn(f"--ratio {self.ratio:g} removed {ratio:.3f} of the prunable channels: each group's kept count was "
                     f"rounded to its channel multiple ({_multiples_text(multiples)}); --channel-multiple 1 removes "
                     "floor(ratio x width) of every group exactly")
        workdir = Path(tempfile.mkdtemp(prefix="mdeploy-structured-"))
        try:
            baseline = workdir / "dense.keras"
            model.save(baseline)  # same writer as the output, so sizes compare like with like
            size_before, gzip_before = baseline.stat().st_size, compressed_size(baseline)
            fine_tuned = None
            if self.fine_tuning is not None:
                ctx.stage("fine-tuning the pruned model")
                fine_tuned = fit_model(small, artifact, self.fine_tuning)
                deploy = (keras.Sequential if type(small).__name__ == "Sequential" else keras.Model).from_config(
                    small.get_config())
                deploy.set_weights(small.get_weights())  # without optimizer state
                small = deploy
            with atomic_output(final, ctx.force) as tmp:
                small.save(tmp)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        summary = structured_summary(graph, dense, after, ratio=ratio, criterion=self.criterion, multiple=self.multiple,
                                     multiples=multiples, flops_target=self.flops_target, requested_ratio=self.ratio)
        summary.update(size_bytes_before=size_before, size_bytes_after=final.stat().st_size,
                       gzip_bytes_before=gzip_before, gzip_bytes_after=compressed_size(final),
                       source_size_bytes=artifact.size_bytes(), fine_tune=fine_tuned)
        return artifact.derive(format="keras", path=final, name="structured-keras", precision=artifact.precision,
                               structured=summary, produced_by={"pass": self.name, "params": pass_params(self)})


def _multiples_text(multiples: dict[int, int]) -> str:
    counts: dict[int, int] = {}
    for m in multiples.values():
        counts[m] = counts.get(m, 0) + 1
    return ", ".join(f"{n} group{'s' if n > 1 else ''} x{m}" for m, n in sorted(counts.items(), reverse=True))


def structured_summary(graph: ChannelGraph, dense: dict[str, Any], after: dict[str, Any], *, ratio: float, criterion: str,
                       multiple: int | str, multiples: dict[int, int], flops_target: float | None,
                       requested_ratio: float | None) -> dict[str, Any]:
    """Per layer and total FLOPs, parameters and channels before/after, and every group with its fate."""
    small = {entry["name"]: entry for entry in after["layers"]}
    layers = []
    for entry in dense["layers"]:
        new = small.get(entry["name"], entry)
        if entry["kind"] == "InputLayer":
            continue
        layers.append({"name": entry["name"], "kind": entry["kind"], "channels_before": entry["out_channels"],
                       "channels_after": new["out_channels"], "flops_before": entry["flops"], "flops_after": new["flops"],
                       "params_before": entry["params"], "params_after": new["params"]})
    groups = []
    for g in graph.roots():
        group = graph.groups[g]
        kept = group.size if group.mask is None else int(group.mask.sum())
        groups.append({"producers": group.producers, "channels": group.size, "kept": kept,
                       "tied": len(group.producers) > 1, "frozen": group.frozen, "multiple": multiples.get(g)})
    return {"method": "structured", "criterion": criterion, "channel_multiple": multiple, "ratio": round(ratio, 4),
            "requested_ratio": requested_ratio,
            "flops_target": flops_target, "flops_before": dense["flops"], "flops_after": after["flops"],
            "flops_ratio": round(after["flops"] / dense["flops"], 4) if dense["flops"] else None,
            "params_before": dense["params"], "params_after": after["params"], "layers": layers, "groups": groups,
            "uncounted_layers": dense["uncounted"],
            "note": "filters are removed, so every runtime runs the smaller model; accuracy needs fine-tuning"}
