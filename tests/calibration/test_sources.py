"""Calibration sources: every kind of data, the held-out window, the adapters, and every bad-data case."""
from __future__ import annotations

import pickle
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdeploy.calibration import LABELS, DataSpec, collect, count_samples, open_source
from mdeploy.calibration.adapters import OrtCalibrationReader, calibration_stride, representative_dataset
from mdeploy.calibration.batches import check_batch
from mdeploy.calibration.images import ImageOptions
from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput

IMG = (TensorSpec("image", (None, 8, 8, 1), "float32"),)
TAB = (TensorSpec("features", (None, 3), "float32"),)


def test_npz_streams_the_same_arrays_and_labels(digits_calibration):
    src = open_source(str(digits_calibration), IMG, batch_size=64)
    data = np.load(digits_calibration)
    batches = list(src)
    assert [len(b["image"]) for b in batches] == [64, 64, 64, 64, 44]
    got = collect(src)
    assert np.array_equal(got["image"], data["image"]) and np.array_equal(got[LABELS], data["labels"])
    assert len(src) == 300 and src.has_labels


def test_window_splits_calibration_from_held_out(digits_calibration):
    data = np.load(digits_calibration)
    cal = DataSpec(str(digits_calibration), take=240).open(IMG)
    held = DataSpec(str(digits_calibration), skip=240, take=60).open(IMG)
    assert count_samples(cal) == 240 and count_samples(held) == 60
    assert np.array_equal(collect(held)["image"], data["image"][240:])
    assert held.description.endswith("[240:300]")


def test_npy_directory_one_sample_per_file_with_labels(tmp_path):
    x = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    for i, row in enumerate(x):
        np.save(tmp_path / f"s{i:02d}.npy", row)
    np.save(tmp_path / "labels.npy", np.arange(5))
    src = open_source(str(tmp_path), TAB, batch_size=2)
    got = collect(src)
    assert np.array_equal(got["features"], x) and got[LABELS].tolist() == [0, 1, 2, 3, 4]
    assert [len(b["features"]) for b in src] == [2, 2, 1]


def test_npy_directory_per_input_subdirectories(tmp_path):
    inputs = (TensorSpec("features", (None, 6), "float32"), TensorSpec("extra", (None, 4), "float32"))
    for name, width in (("features", 6), ("extra", 4)):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "a.npy", np.ones((3, width), np.float32))  # a batch of 3 in one file
    got = collect(open_source(str(tmp_path), inputs))
    assert got["features"].shape == (3, 6) and got["extra"].shape == (3, 4)


def _write_images(root, n_per_class=2, size=(10, 12), mode="RGB"):
    from PIL import Image

    for c, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            arr = np.full((*size, 3), 50 * (c + 1) + i, np.uint8)
            Image.fromarray(arr).convert(mode).save(root / cls / f"{i}.png")


def test_image_directory_preprocessing_nhwc_with_class_labels(tmp_path):
    _write_images(tmp_path)
    spec = (TensorSpec("img", (None, 4, 4, 3), "float32"),)
    src = open_source(str(tmp_path), spec, image=ImageOptions(scale=1 / 255, mean=(0.5,), std=(0.25,)))
    got = collect(src)
    assert got["img"].shape == (4, 4, 4, 3)
    assert got[LABELS].tolist() == [0, 0, 1, 1]
    assert np.allclose(got["img"][0], (50 / 255 - 0.5) / 0.25, atol=1e-5)


def test_image_directory_nchw_gray_and_explicit_size(tmp_path):
    _write_images(tmp_path, mode="L")
    spec = (TensorSpec("img", (None, 1, None, None), "float32"),)
    got = collect(open_source(str(tmp_path), spec, image=ImageOptions(size=(6, 5), layout="NCHW", color="gray", scale=1.0)))
    assert got["img"].shape == (4, 1, 6, 5) and got["img"][2, 0, 0, 0] == 100.0


def test_image_channel_mismatch_is_named(tmp_path):
    _write_images(tmp_path)
    with pytest.raises(BadInput, match="gray.*expects 3"):
        open_source(str(tmp_path), (TensorSpec("img", (None, 4, 4, 3), "float32"),), image=ImageOptions(color="gray"))


def test_csv_with_header_and_label_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label,c\n1,2,0,3\n4,5,1,6\n7,8,1,9\n")
    src = open_source(str(path), TAB, batch_size=2)
    got = collect(src)
    assert got["features"].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]] and got[LABELS].tolist() == [0, 1, 1]
    assert src.has_labels


def test_csv_bad_row_names_the_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("1,2,3\n4,x,6\n")
    with pytest.raises(BadInput, match=r"t.csv:2: not a number"):
        collect(open_source(str(path), TAB))
    path.write_text("1,2,3\n4,5\n")
    with pytest.raises(BadInput, match=r"t.csv:2: 2 columns, expected 3"):
        collect(open_source(str(path), TAB))


def test_callable_source_runs_user_code_each_pass(tmp_path, monkeypatch):
    (tmp_path / "user_data.py").write_text(textwrap.dedent("""
        import numpy as np
        CALLS = []
        def samples():
            CALLS.append(1)
            for i in range(5):
                yield {"features": np.full(3, i, np.float32), "labels": i % 2}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    src = open_source("user_data:samples", TAB)
    assert collect(src)["features"][:, 0].tolist() == [0, 1, 2, 3, 4]
    assert collect(src)[LABELS].tolist() == [0, 1, 0, 1, 0]
    assert len(sys.modules["user_data"].CALLS) == 2
    with pytest.raises(BadInput, match="has no function 'nope'"):
        open_source("user_data:nope", TAB)


def test_random_only_by_name_and_seeded():
    a, b = collect(open_source("random", TAB, samples=5, seed=3)), collect(open_source("random", TAB, samples=5, seed=3))
    assert np.array_equal(a["features"], b["features"]) and a["features"].shape == (5, 3)
    with pytest.raises(BadInput, match="no such data file"):
        open_source("rand.npz", TAB)


# --------------------------------------------------------------------------- bad data

def test_wrong_shape_names_input_expected_and_found(tmp_path):
    np.savez(tmp_path / "d.npz", image=np.zeros((4, 8, 8), np.float32))
    with pytest.raises(BadInput) as e:
        collect(open_source(str(tmp_path / "d.npz"), IMG))
    assert "'image'" in e.value.message and "[?, 8, 8, 1]" in e.value.message and "[4, 8, 8]" in e.value.message


def test_wrong_dtype_and_missing_name(tmp_path):
    np.savez(tmp_path / "d.npz", image=np.array([["a"] * 3] * 2))
    with pytest.raises(BadInput, match="expects float32 but the data is"):
        collect(open_source(str(tmp_path / "d.npz"), TAB))
    two = (TensorSpec("features", (None, 6), "float32"), TensorSpec("extra", (None, 4), "float32"))
    np.savez(tmp_path / "e.npz", features=np.zeros((2, 6), np.float32), other=np.zeros((2, 4), np.float32))
    with pytest.raises(BadInput, match="no data for input 'extra'"):
        collect(open_source(str(tmp_path / "e.npz"), two))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_errors(tmp_path, bad):
    x = np.zeros((40, 3), np.float32)
    x[37, 1] = bad
    np.savez(tmp_path / "d.npz", features=x)
    with pytest.raises(BadInput, match="'features' contains NaN or Inf"):
        collect(open_source(str(tmp_path / "d.npz"), TAB))


def test_zero_samples(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.zeros((0, 3), np.float32))
    src = open_source(str(tmp_path / "d.npz"), TAB)
    assert count_samples(src) == 0
    with pytest.raises(BadInput, match="no samples"):
        collect(src)


def test_pickled_npz_npy_and_raw_pickle_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", features=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(BadInput, match="pickled"):
        open_source(str(tmp_path / "obj.npz"), TAB)
    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "0.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInput, match="pickled"):
        collect(open_source(str(tmp_path / "dir"), TAB))
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"features": [1, 2, 3]}))
    with pytest.raises(BadInput, match="not a .npz archive"):
        open_source(str(tmp_path / "p.npz"), TAB)


# --------------------------------------------------------------------------- adapters

def test_ort_reader_strides_and_representative_dataset(digits_calibration):
    src = DataSpec(str(digits_calibration), take=100, batch_size=16).open(IMG)
    reader = OrtCalibrationReader(src)
    assert len(reader) == 7 and calibration_stride(7) == 1 and calibration_stride(8) == 4
    seen = []
    for start in range(0, 7, 1):
        reader.set_range(start, start + 1)
        while (feeds := reader.get_next()) is not None:
            assert set(feeds) == {"image"}
            seen.append(len(feeds["image"]))
    assert sum(seen) == 100
    rows = list(representative_dataset(src)())
    assert len(rows) == 100 and rows[0]["image"].shape == (1, 8, 8, 1)


# --------------------------------------------------------------------------- properties

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 70), batch=st.integers(1, 17), skip=st.integers(0, 80), take=st.one_of(st.none(), st.integers(0, 80)),
       compressed=st.booleans())
def test_npz_stream_equals_np_load_for_any_window(tmp_path_factory, n, batch, skip, take, compressed):
    path = tmp_path_factory.mktemp("prop") / "d.npz"
    x = np.random.default_rng(n).random((n, 3), dtype=np.float32)
    (np.savez_compressed if compressed else np.savez)(path, features=x, y=np.arange(n))
    src = DataSpec(str(path), skip=skip, take=take, batch_size=batch).open(TAB)
    want = x[skip:] if take is None else x[skip:skip + take]
    parts = [b["features"] for b in src]
    got = np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)
    assert np.array_equal(got, want) and all(len(p) <= batch for p in parts)
    assert count_samples(src) == len(want)


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), dtype=st.sampled_from(["float32", "float64", "int32", "uint8", "bool"]),
       bad=st.sampled_from([None, np.nan, np.inf]))
def test_check_batch_accepts_exactly_the_signature(shape, dtype, bad):
    spec = (TensorSpec("x", (None, 2, 3), "float32"),)
    arr = np.zeros(shape, dtype=dtype)
    if bad is not None and arr.dtype.kind == "f":
        arr.flat[0] = bad
    fits = len(shape) == 3 and shape[1:] == [2, 3]
    finite = bad is None or arr.dtype.kind != "f"
    if fits and finite:
        out = check_batch({"x": arr}, spec, "t")
        assert out["x"].dtype == np.float32 and out["x"].shape == tuple(shape)
    else:
        with pytest.raises(BadInput) as e:
            check_batch({"x": arr}, spec, "t")
        assert "'x'" in e.value.message and e.value.hint


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=3, max_size=3), min_size=1, max_size=20),
       header=st.booleans(), batch=st.integers(1, 7))
def test_csv_round_trips_any_numeric_table(tmp_path_factory, rows, header, batch):
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    lines = (["x0,x1,x2"] if header else []) + [",".join(repr(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    got = collect(open_source(str(path), TAB, batch_size=batch))
    assert np.allclose(got["features"], np.asarray(rows, np.float32))
