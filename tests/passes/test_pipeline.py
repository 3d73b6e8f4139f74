"""The pipeline runner: format refusal, step records, and the content-addressed cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import atomic_output
from mdeploy.passes.core.pipeline import Context, Node, Pipeline, pass_params, run_branches, run_plan


@dataclass(frozen=True)
class AppendByte:
    """A real (if tiny) pass: writes a new file whose bytes are the input's plus one byte."""

    name: ClassVar[str] = "append"
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    produces: ClassVar[str] = "onnx"
    byte: int = 1
    tag: str = "a"

    def run(self, artifact: Artifact, ctx: Context) -> Artifact:
        out = Path(ctx.out_dir) / f"{artifact.path.stem}.{self.tag}.onnx"
        with atomic_output(out, ctx.force) as tmp:
            tmp.write_bytes(artifact.path.read_bytes() + bytes([self.byte]))
        return artifact.derive(format="onnx", path=out, name=f"{artifact.name}+{self.tag}",
                               produced_by={"pass": self.name, "params": pass_params(self)})


@dataclass(frozen=True)
class TfliteOnly:
    name: ClassVar[str] = "tflite-only"
    accepts: ClassVar[tuple[str, ...]] = ("tflite",)

    def run(self, artifact, ctx):  # pragma: no cover - refused before it runs
        raise AssertionError("must not run")


@pytest.fixture
def source(tmp_path) -> Artifact:
    p = tmp_path / "in.onnx"
    p.write_bytes(b"model")
    return Artifact("onnx", p)


def test_chain_records_each_step(source, tmp_path):
    ctx = Context(out_dir=tmp_path / "out")
    produced, steps = Pipeline([AppendByte(1, "a"), AppendByte(2, "b")]).run(source, ctx)
    assert produced[-1].path.read_bytes() == b"model\x01\x02"
    assert [s.pass_name for s in steps] == ["append", "append"]
    assert steps[0].params == {"byte": 1, "tag": "a"} and steps[1].input == str(produced[0].path)
    assert all(s.seconds >= 0 for s in steps)
    assert produced[-1].parent.parent is source
    assert source.path.read_bytes() == b"model"  # the input is never modified


def test_refuses_a_pass_that_cannot_take_the_format(source, tmp_path):
    with pytest.raises(BadInput) as err:
        Pipeline([AppendByte(), TfliteOnly()]).run(source, Context(out_dir=tmp_path))
    assert "tflite-only" in err.value.message and "onnx" in err.value.message
    assert not (tmp_path / "in.a.onnx").exists()  # refused before any work


def test_cache_reuses_a_finished_step_and_misses_on_changed_params(source, tmp_path):
    ctx = Context(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", force=True)
    _, first = Pipeline([AppendByte(1)]).run(source, ctx)
    _, second = Pipeline([AppendByte(1)]).run(source, ctx)
    assert not first[0].cached and second[0].cached
    _, third = Pipeline([AppendByte(7)]).run(source, ctx)
    assert not third[0].cached
    # A tampered output is not trusted.
    (tmp_path / "out" / "in.a.onnx").write_bytes(b"tampered")
    _, fourth = Pipeline([AppendByte(7)]).run(source, ctx)
    assert not fourth[0].cached


def test_existing_output_needs_force(source, tmp_path):
    ctx = Context(out_dir=tmp_path / "out")
    Pipeline([AppendByte()]).run(source, ctx)
    with pytest.raises(BadInput, match="already exists"):
        Pipeline([AppendByte()]).run(source, ctx)


@pytest.mark.parametrize("jobs", [1, 2])
def test_branches_serial_and_in_parallel_processes(source, tmp_path, jobs):
    ctx = Context(out_dir=tmp_path / "out")
    branches = {"x": [Node("x1", AppendByte(1, "x")), Node("x2", AppendByte(3, "z"), input="x1")],
                "y": [Node("y1", AppendByte(2, "y"))]}
    results = run_branches(branches, {"source": source}, ctx, jobs=jobs)
    assert results["x"].artifacts["x2"].path.read_bytes() == b"model\x01\x03"
    assert results["y"].artifacts["y1"].path.read_bytes() == b"model\x02"
    assert [s.status for s in results["x"].steps] == ["ok", "ok"]


def test_plan_keeps_going_past_a_failed_node(source, tmp_path):
    ctx = Context(out_dir=tmp_path / "out")
    nodes = [Node("bad", TfliteOnly()), Node("after-bad", AppendByte(), input="bad"), Node("good", AppendByte(5, "g"))]
    result = run_plan(nodes, {"source": source}, ctx)
    assert set(result.artifacts) == {"good"}
    assert "cannot take a onnx model" in result.failures["bad"]
    assert result.failures["after-bad"] == "skipped: bad failed"
    assert [s.status for s in result.steps] == ["failed", "skipped", "ok"]


@dataclass(frozen=True)
class AppendFileByte:
    """Appends the first byte of a data file: its output depends on that file's contents."""

    name: ClassVar[str] = "append-file"
    accepts: ClassVar[tuple[str, ...]] = ("onnx",)
    data: str = ""

    def run(self, artifact: Artifact, ctx: Context) -> Artifact:
        out = Path(ctx.out_dir) / "with-data.onnx"
        with atomic_output(out, ctx.force) as tmp:
            tmp.write_bytes(artifact.path.read_bytes() + Path(self.data).read_bytes()[:1])
        return artifact.derive(format="onnx", path=out, name="with-data", produced_by={"pass": self.name, "params": {}})


def test_cache_misses_when_a_named_data_file_changes(source, tmp_path):
    data = tmp_path / "cal.npz"
    data.write_bytes(b"A")
    ctx = Context(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", force=True)
    Pipeline([AppendFileByte(str(data))]).run(source, ctx)
    _, hit = Pipeline([AppendFileByte(str(data))]).run(source, ctx)
    assert hit[0].cached
    data.write_bytes(b"B")
    produced, miss = Pipeline([AppendFileByte(str(data))]).run(source, ctx)
    assert not miss[0].cached and produced[0].path.read_bytes() == b"modelB"
