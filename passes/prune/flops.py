"""FLOPs and parameters per Keras layer, counted from the built model's shapes (a multiply-add is 2 FLOPs).

Convolutions and Dense count 2 x MACs plus the bias; normalization, activations, pooling and element-wise
merges count one FLOP per output element (per window element for pooling). Layers it does not know count 0 and
are named in `uncounted`, so a total is never silently partial.
"""
from __future__ import annotations

import math
from typing import Any

_CONV = {"Conv1D", "Conv2D", "Conv3D"}
_DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
_SEPARABLE = {"SeparableConv1D", "SeparableConv2D"}
_ELEMENTWISE = {"BatchNormalization", "LayerNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
                "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Rescaling", "Normalization"}
_POOL = {"MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D"}
_FREE = {"InputLayer", "Flatten", "Reshape", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "ZeroPadding1D",
         "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Concatenate", "Permute", "Identity",
         "GaussianNoise", "GaussianDropout", "ActivityRegularization"}


def _elements(shape) -> int:
    return int(math.prod(int(d) for d in shape[1:] if d is not None))  # per sample: the batch is left out


def _shape(tensor_or_list):
    t = tensor_or_list[0] if isinstance(tensor_or_list, (list, tuple)) else tensor_or_list
    return tuple(t.shape)


def layer_flops(layer) -> int | None:
    """FLOPs of one call of `layer` on one sample; None for a layer type this counter does not know."""
    kind = type(layer).__name__
    out = _shape(layer.output)
    n_out = _elements(out)
    if kind in _FREE:
        return 0
    if kind in _CONV:
        cin = int(_shape(layer.input)[-1])
        k = math.prod(layer.kernel_size)
        return n_out * (2 * k * cin // max(1, int(layer.groups)) + (1 if layer.use_bias else 0))
    if kind in _DEPTHWISE:
        k = math.prod(layer.kernel_size)
        return n_out * (2 * k + (1 if layer.use_bias else 0))
    if kind in _SEPARABLE:
        cin = int(_shape(layer.input)[-1])
        mult = int(layer.depth_multiplier)
        spatial = n_out // int(out[-1])
        k = math.prod(layer.kernel_size)
        return spatial * cin * mult * 2 * k + n_out * (2 * cin * mult + (1 if layer.use_bias else 0))
    if kind == "Dense":
        cin = int(_shape(layer.input)[-1])
        return n_out * (2 * cin + (1 if layer.use_bias else 0))
    if kind in _ELEMENTWISE:
        return n_out
    if kind in _POOL:
        return n_out * math.prod(layer.pool_size)
    if kind.startswith("GlobalAveragePooling") or kind.startswith("GlobalMaxPooling"):
        return _elements(_shape(layer.input))
    return None


def model_flops(model) -> dict[str, Any]:
    """Per-layer and total FLOPs and parameters of a built Keras model (one sample)."""
    layers, uncounted = [], []
    for layer in model.layers:
        flops = layer_flops(layer)
        if flops is None:
            uncounted.append(layer.name)
        params = int(sum(int(math.prod(w.shape)) for w in layer.weights))
        layers.append({"name": layer.name, "kind": type(layer).__name__, "flops": int(flops or 0), "params": params,
                       "out_channels": int(_shape(layer.output)[-1]) if _shape(layer.output) else None})
    return {"flops": int(sum(entry["flops"] for entry in layers)), "params": int(model.count_params()),
            "layers": layers, "uncounted": uncounted}
