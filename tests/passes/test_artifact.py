"""Format recognition and the bad-input messages every command relies on."""
from __future__ import annotations

import pytest

from mdeploy.passes.core.artifact import Artifact, TensorSpec, content_hash, detect_format
from mdeploy.passes.core.errors import BadInput


def test_detects_each_format(digits_model, digits_converted):
    assert detect_format(digits_model)[0] == "keras"
    assert detect_format(digits_converted / "onnx" / "model.onnx")[0] == "onnx"
    assert detect_format(digits_converted / "tflite" / "model.tflite")[0] == "tflite"
    # A TF Serving model root resolves to its highest version directory.
    fmt, path = detect_format(digits_converted / "savedmodel" / "digits")
    assert fmt == "savedmodel" and path.name == "1"


@pytest.mark.parametrize("name,content,fragment", [
    ("empty.onnx", b"", "empty"),
    ("text.keras", b"this is not a model\n", "not a Keras v3 archive"),
    ("noise.tflite", bytes(range(256)) * 4, "not a TFLite flatbuffer"),
    ("weights.h5", b"PK\x03\x04 not hdf5", "not an HDF5 file"),
    ("model.pt", b"\x80\x04pickle", "unknown model type"),
])
def test_bad_files_are_named(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadInput) as err:
        detect_format(path)
    assert fragment in err.value.message and err.value.hint
    assert err.value.exit_code == 2


def test_directory_that_is_not_a_savedmodel(tmp_path):
    with pytest.raises(BadInput, match="not a SavedModel"):
        detect_format(tmp_path)


def test_derive_keeps_lineage_and_never_mutates(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    src = Artifact("onnx", f, (TensorSpec("x", (None, 3), "float32"),), (), meta={"precision": "float32"})
    child = src.derive(format="onnx", path=tmp_path / "q.onnx", name="onnx-int8",
                       produced_by={"pass": "quantize", "params": {}}, precision="int8")
    assert child.parent is src and child.precision == "int8" and src.precision == "float32"
    assert child.inputs == src.inputs and "produced_by" not in src.meta


def test_content_hash_of_directory_depends_on_names_and_bytes(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"1")
    h1 = content_hash(d)
    (d / "a").write_bytes(b"2")
    assert content_hash(d) != h1
    assert TensorSpec("x", (None, 8), "float32").shape_str() == "[?, 8]"
