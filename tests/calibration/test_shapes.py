"""Generated-input shapes and --input-shape: fixed dims kept, batch only where dynamic, named dims shared."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mdeploy.calibration import collect
from mdeploy.calibration.shapes import (
    DEFAULT_SEQUENCE,
    DEFAULT_SPATIAL,
    generated_shape,
    model_batch_limit,
    parse_input_shapes,
    pin_input_shapes,
)
from mdeploy.calibration.sources import RandomSource
from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput

dims = st.lists(st.one_of(st.none(), st.integers(1, 64)), min_size=0, max_size=5)


@given(dims, st.integers(1, 8))
def test_fixed_dims_are_kept_and_every_dim_is_positive(shape, batch):
    out = generated_shape(TensorSpec("x", tuple(shape), "float32"), batch)
    assert len(out) == len(shape)
    assert all(o == d for o, d in zip(out, shape) if d is not None)
    assert all(o > 0 for o in out)


def test_default_kinds():
    assert generated_shape(TensorSpec("img", (None, None, None, 3), "float32"), 2) == (2, DEFAULT_SPATIAL, DEFAULT_SPATIAL, 3)
    assert generated_shape(TensorSpec("img", (None, 3, None, None), "float32"), 1) == (1, 3, DEFAULT_SPATIAL, DEFAULT_SPATIAL)
    assert generated_shape(TensorSpec("tokens", (None, None), "int32"), 4) == (4, DEFAULT_SEQUENCE)
    assert generated_shape(TensorSpec("sr", (), "int64"), 4) == ()


def test_named_dims_are_shared_and_a_state_follows_its_input():
    audio = TensorSpec("input", (None, None), "float32", ("batch", "sequence"))
    state = TensorSpec("state", (2, None, 128), "float32", (None, "batch", None))
    source = RandomSource((audio, state, TensorSpec("sr", (), "int64")), samples=3, batch_size=8)
    batches = list(source)
    assert len(batches) == 3  # no common sample axis: one run per batch
    assert batches[0]["input"].shape == (1, DEFAULT_SEQUENCE) and batches[0]["state"].shape == (2, 1, 128)
    assert batches[0]["sr"].shape == ()
    assert collect(source, limit=8)["state"].shape == (2, 1, 128)  # never concatenated along the wrong axis


def test_a_fixed_batch_is_what_a_batch_holds():
    spec = TensorSpec("x", (1, 3, 8, 8), "float32")
    assert model_batch_limit((spec,)) == 1
    assert all(b["x"].shape == (1, 3, 8, 8) for b in RandomSource((spec,), samples=4, batch_size=8))


def test_parse_and_pin():
    shapes = parse_input_shapes(["x:?,7,4", "sr:"])
    assert shapes == (("x", (None, 7, 4)), ("sr", ()))
    pinned = pin_input_shapes((TensorSpec("x", (None, None, 4), "float32"),), (("x", (None, 7, 4)),))
    assert pinned[0].shape == (None, 7, 4)
    with pytest.raises(BadInput, match="rank"):
        pin_input_shapes((TensorSpec("x", (None, 4), "float32"),), (("x", (1, 2, 4)),))
    with pytest.raises(BadInput, match="fixed dimension"):
        pin_input_shapes((TensorSpec("x", (None, 4), "float32"),), (("x", (1, 5)),))
    with pytest.raises(BadInput, match="not an input"):
        pin_input_shapes((TensorSpec("x", (None, 4), "float32"),), (("y", (1, 4)),))


@given(st.text(max_size=20))
def test_bad_spellings_are_bad_input_never_a_crash(text):
    try:
        parse_input_shapes([text])
    except BadInput:
        pass


def test_generated_arrays_match_dtype():
    batch = next(iter(RandomSource((TensorSpec("t", (None, None), "int64"),), samples=2)))
    assert batch["t"].dtype == np.int64 and batch["t"].shape == (2, DEFAULT_SEQUENCE)
