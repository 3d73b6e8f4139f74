"""Channel graph surgery for Keras 3 functional and Sequential models: which output channels can be removed together,
and the physically smaller model rebuilt from the original's config with the surviving weights copied.

A *group* is a set of channels that must be kept or removed as one: the filters a Conv/Dense produces, followed
through BatchNorm, activations, pooling and DepthwiseConv (multiplier 1); an element-wise merge (Add, Multiply, ...)
ties its inputs' groups position by position into one group with one shared mask; Concatenate on the channel axis
just lays its inputs' groups side by side. A group is *frozen* (left whole) when it reaches a model output (the
classifier is never pruned), a model input, or a layer this module does not know how to slice (Reshape, a grouped
conv, a shared layer, ...); the reason is recorded.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PRODUCERS = {"Conv1D", "Conv2D", "Conv3D", "Dense", "SeparableConv1D", "SeparableConv2D"}
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
NORMS = {"BatchNormalization"}
PASS_THROUGH = {"Activation", "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
                "GaussianNoise", "GaussianDropout", "Identity", "ActivityRegularization", "ZeroPadding1D", "ZeroPadding2D",
                "ZeroPadding3D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D", "MaxPooling1D", "MaxPooling2D",
                "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
                "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
                "GlobalMaxPooling3D"}
MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}


@dataclass
class Seg:
    """`n` consecutive channels of group `gid` (None: channels no group owns, e.g. the model input)."""
    gid: int | None
    n: int


@dataclass
class Tiled:
    """A Flatten's output: the channel layout `segs` repeated once per spatial position (channels vary fastest)."""
    segs: list[Seg]
    repeat: int


@dataclass
class Group:
    size: int
    producers: list[str] = field(default_factory=list)
    frozen: str | None = None  # why the group is left whole
    mask: np.ndarray | None = None


class ChannelGraph:
    """The channel groups of a built Keras model, each layer's input layout, and masks chosen on them."""

    def __init__(self, model):
        self.model = model
        self.groups: list[Group] = []
        self.parent: list[int] = []
        self.layer_in: dict[str, Any] = {}   # layer -> layout of its (first) input
        self.layer_out: dict[str, Any] = {}  # layer -> layout of its output
        self.owned: dict[str, int] = {}      # producer layer -> the group of its output channels
        self.ties: list[str] = []            # merge layers whose inputs were tied into one group
        self._walk()

    # ---------------------------------------------------------------- union-find
    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def _new(self, size: int, producer: str) -> int:
        self.groups.append(Group(size, [producer]))
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def _union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.groups[a].producers += self.groups[b].producers
            self.groups[a].frozen = self.groups[a].frozen or self.groups[b].frozen

    def _freeze(self, layout, why: str) -> None:
        for s in (layout.segs if isinstance(layout, Tiled) else layout or []):
            if s.gid is not None and self.groups[self.find(s.gid)].frozen is None:
                self.groups[self.find(s.gid)].frozen = why

    # ---------------------------------------------------------------- the walk
    def _nodes(self) -> list[tuple[str, str, list[tuple[str, int]]]]:
        """(layer name, class name, inbound (layer, tensor index)) in topological order."""
        cfg = self.model.get_config()
        layers = cfg["layers"]
        if type(self.model).__name__ == "Sequential":
            nodes, prev = [], None
            for entry in layers:
                name = entry["config"]["name"]
                nodes.append((name, entry["class_name"], [(prev, 0)] if prev else []))
                prev = name
            if nodes and nodes[0][1] != "InputLayer":
                nodes.insert(0, ("__input__", "InputLayer", []))
                nodes[1] = (nodes[1][0], nodes[1][1], [("__input__", 0)])
            return nodes
        nodes = []
        for entry in layers:
            inbound = entry.get("inbound_nodes") or []
            if len(inbound) > 1:
                nodes.append((entry["name"], "__shared__", _tensors(inbound)))
            else:
                nodes.append((entry["name"], entry["class_name"], _tensors(inbound[:1])))
        return nodes

    def _channels(self, name: str) -> int:
        shape = self.model.get_layer(name).output.shape
        return int(shape[-1]) if len(shape) > 1 else 1

    def _walk(self) -> None:
        nodes = self._nodes()
        for name, kind, inbound in nodes:
            ins = [self.layer_out[src] for src, _ in inbound]
            if kind == "InputLayer":
                self.layer_out[name] = [Seg(None, int(self.model.inputs[0].shape[-1]) if len(self.model.inputs) == 1
                                            else self._channels(name))]
                continue
            layer = None if kind == "__shared__" else self.model.get_layer(name)
            cout = self._channels(name)
            out = self._layer(name, kind, layer, ins, cout)
            self.layer_out[name] = out
        outputs = (self.model.get_config().get("output_layers") or []) if type(self.model).__name__ != "Sequential" \
            else [[nodes[-1][0], 0, 0]]
        if outputs and isinstance(outputs[0], str):
            outputs = [outputs]
        for entry in outputs:
            self._freeze(self.layer_out[entry[0]], f"reaches the model output ({entry[0]})")

    def _layer(self, name: str, kind: str, layer, ins: list, cout: int):
        def opaque(why: str):
            for layout in ins:
                self._freeze(layout, why)
            return [Seg(None, cout)]

        plain = len(ins) == 1 and not isinstance(ins[0], Tiled)
        if kind == "InputLayer":
            return [Seg(None, cout)]
        if kind == "__shared__":
            return opaque(f"consumed by the shared layer {name}")
        channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
        if kind in PRODUCERS and len(ins) == 1 and channels_last and getattr(layer, "groups", 1) == 1:
            if isinstance(ins[0], Tiled) and kind != "Dense":
                return opaque(f"flattened into {name}")
            if kind == "Dense" and len(layer.input.shape) > 2 and isinstance(ins[0], Tiled):
                return opaque(f"flattened into {name}")
            self.layer_in[name] = ins[0]
            self.owned[name] = self._new(cout, name)
            return [Seg(self.owned[name], cout)]
        if kind in DEPTHWISE and plain and channels_last and layer.depth_multiplier == 1:
            self.layer_in[name] = ins[0]
            return ins[0]
        if kind in NORMS and plain and layer.axis in (-1, len(layer.input.shape) - 1):
            self.layer_in[name] = ins[0]
            return ins[0]
        if kind in PASS_THROUGH and len(ins) == 1 and channels_last:
            if isinstance(ins[0], Tiled) and kind not in ("Dropout", "Activation", "ReLU", "Identity"):
                return opaque(f"consumed by {kind} {name} after a Flatten")
            return ins[0]
        if kind == "Flatten" and plain:
            spatial = math.prod(int(d) for d in layer.input.shape[1:-1])
            return Tiled(ins[0], spatial)
        if kind in MERGES and all(not isinstance(x, Tiled) for x in ins):
            if len({tuple(s.n for s in x) for x in ins}) != 1:
                return opaque(f"merged by {name} with another channel layout")
            for j in range(len(ins[0])):
                column = [x[j] for x in ins]
                owned = [s.gid for s in column if s.gid is not None]
                for other in owned[1:]:
                    self._union(owned[0], other)
                if owned and len(owned) < len(column):
                    self._freeze([column[owned_at] for owned_at in range(len(column)) if column[owned_at].gid is not None],
                                 f"added by {name} to channels no group owns (the model input)")
            self.ties.append(name)
            return ins[0]
        if kind == "Concatenate" and all(not isinstance(x, Tiled) for x in ins) and \
                layer.axis in (-1, len(layer.output.shape) - 1):
            return [s for x in ins for s in x]
        return opaque(f"consumed by {kind} {name}, which mdeploy does not slice")

    # ---------------------------------------------------------------- masks
    def roots(self) -> list[int]:
        return sorted({self.find(g) for g in range(len(self.groups))})

    def prunable(self) -> list[int]:
        return [g for g in self.roots() if self.groups[g].frozen is None]

    def mask_of(self, layout) -> np.ndarray:
        if isinstance(layout, Tiled):
            return np.tile(self.mask_of(layout.segs), layout.repeat)
        parts = []
        for s in layout:
            m = None if s.gid is None else self.groups[self.find(s.gid)].mask
            parts.append(np.ones(s.n, bool) if m is None else m)
        return np.concatenate(parts) if parts else np.ones(0, bool)

    def set_masks(self, masks: dict[int, np.ndarray]) -> None:
        for g in self.roots():
            self.groups[g].mask = masks.get(g)

    def out_mask(self, name: str) -> np.ndarray | None:
        return self.mask_of(self.layer_out[name]) if name in self.layer_out else None


def _tensors(inbound: list) -> list[tuple[str, int]]:
    """The (layer, tensor index) of every Keras tensor in a functional config's inbound nodes, in order."""
    found: list[tuple[str, int]] = []

    def visit(x):
        if isinstance(x, dict):
            if x.get("class_name") == "__keras_tensor__":
                history = x["config"]["keras_history"]
                found.append((history[0], int(history[2])))
                return
            for v in x.values():
                visit(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)

    visit(inbound)
    return found


# -------------------------------------------------------------------- the smaller model

def rebuilt_config(graph: ChannelGraph) -> dict[str, Any]:
    """The model config with every producer's filters/units set to its kept count."""
    cfg = copy.deepcopy(graph.model.get_config())
    for entry in cfg["layers"]:
        entry.pop("build_config", None)
        name = entry["config"]["name"]
        if name in graph.owned:
            kept = int(graph.mask_of(graph.layer_out[name]).sum())
            entry["config"]["filters" if "filters" in entry["config"] else "units"] = kept
    return cfg


def rebuild(graph: ChannelGraph, keras):
    """The physically smaller model, its surviving weights copied from the original."""
    cfg = rebuilt_config(graph)
    cls = keras.Sequential if type(graph.model).__name__ == "Sequential" else keras.Model
    small = cls.from_config(cfg)
    for layer in small.layers:
        old = graph.model.get_layer(layer.name)
        layer.set_weights(sliced_weights(graph, old))
    return small


def sliced_weights(graph: ChannelGraph, layer) -> list[np.ndarray]:
    kind = type(layer).__name__
    values = [np.asarray(w) for w in layer.get_weights()]
    name = layer.name
    if name not in graph.layer_in:
        return values
    cin = graph.mask_of(graph.layer_in[name])
    cout = graph.out_mask(name)
    if kind in PRODUCERS and kind not in ("SeparableConv1D", "SeparableConv2D"):
        kernel = values[0][..., cin, :][..., cout]
        return [kernel] + [v[cout] for v in values[1:]]
    if kind in ("SeparableConv1D", "SeparableConv2D"):
        mult = int(layer.depth_multiplier)
        depthwise = values[0][..., cin, :]
        pointwise = values[1][..., np.repeat(cin, mult), :][..., cout]
        return [depthwise, pointwise] + [v[cout] for v in values[2:]]
    if kind in DEPTHWISE:
        return [values[0][..., cin, :]] + [v[cin] for v in values[1:]]
    if kind in NORMS:
        return [v[cin] for v in values]
    return values
