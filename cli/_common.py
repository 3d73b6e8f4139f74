"""What every command shares: option aliases, the error-to-exit-code mapping, progress and output rendering."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mdeploy.passes.core.errors import Interrupted

if TYPE_CHECKING:  # imported where used: `mdeploy --help` imports neither the calibration readers nor numpy
    from mdeploy.passes.core.artifact import Trust

# stdout carries only machine output (--json) or the final table; everything else goes to stderr.
# Piped output (CI logs) gets room for the comparison table instead of rich's 80-column default.
_PIPE_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
stdout = Console(soft_wrap=True, width=_PIPE_WIDTH)
stderr = Console(stderr=True, soft_wrap=True)

UNSAFE_KERAS_ENV = "MDEPLOY_UNSAFE_KERAS"
MAX_MODEL_BYTES_FLAG = "--max-model-bytes"


def parse_bytes(text: str) -> int:
    """'20GB', '512MiB' or '1000000' -> bytes; BadInput for anything else."""
    from mdeploy.passes.core.limits import parse_size

    return parse_size(text, MAX_MODEL_BYTES_FLAG, "--max-model-bytes 20GB")


@dataclass(frozen=True)
class GlobalOptions:
    """The flags that go anywhere on the line, decided once in `run()` and handed to commands through Click's
    context (`global_options()`), never through a module global."""

    debug: bool = False
    verbose: bool = False
    unsafe_keras: bool = False  # --unsafe-keras or MDEPLOY_UNSAFE_KERAS=1: Keras safe_mode off for the models given
    max_model_bytes: int | None = None  # --max-model-bytes: None = limits.default_max_model_bytes()
    custom_objects: tuple[str, ...] = ()  # --custom-objects module[:Name,...] (repeatable): imported, so it runs

    @property
    def trust(self) -> Trust:
        from mdeploy.passes.core.artifact import Trust

        return Trust(self.unsafe_keras, self.custom_objects)

    @classmethod
    def from_argv(cls, argv: list[str], environ: dict[str, str]) -> tuple[GlobalOptions, list[str]]:
        flags = {"--debug": "debug", "--verbose": "verbose", "--unsafe-keras": "unsafe_keras"}
        found = {flags[a] for a in argv if a in flags}
        rest, max_bytes, i, custom = [], None, 0, []
        while i < len(argv):
            arg = argv[i]
            if arg == MAX_MODEL_BYTES_FLAG and i + 1 < len(argv):
                max_bytes, i = parse_bytes(argv[i + 1]), i + 2
                continue
            if arg == "--custom-objects" and i + 1 < len(argv):  # MODULE[:Name,...], repeatable, anywhere
                custom.append(argv[i + 1])
                i += 2
                continue
            if arg.startswith("--custom-objects="):
                custom.append(arg.split("=", 1)[1])
            elif arg.startswith(MAX_MODEL_BYTES_FLAG + "="):
                max_bytes = parse_bytes(arg.split("=", 1)[1])
            elif arg not in flags:
                rest.append(arg)
            i += 1
        options = cls(debug="debug" in found, verbose="verbose" in found,
                      unsafe_keras="unsafe_keras" in found or environ.get(UNSAFE_KERAS_ENV) == "1",
                      max_model_bytes=max_bytes, custom_objects=tuple(custom))
        return options, rest


def global_options(ctx: typer.Context) -> GlobalOptions:
    """The invocation's global options, from the root context's `obj` (defaults when a command is called bare)."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()


ModelArg = Annotated[Path, typer.Argument(help="Model: .keras, .h5, .onnx, .tflite or a SavedModel directory.", show_default=False)]
OutDirOpt = Annotated[Path, typer.Option("--output", "-o", help="Output directory (report.json and artifacts go here).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Write the report as JSON to stdout, and nothing else.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing artifacts.")]
DataOpt = Annotated[str | None, typer.Option("--data", help="Inputs for checks: a .npz keyed by input name (default: generated, seed 0).")]
InputShapeOpt = Annotated[list[str] | None, typer.Option(
    "--input-shape", help="An input's shape for generated inputs and checks: NAME:D1,D2,... (repeatable); ? keeps a "
                          "dimension dynamic. Default: batch 1, image height/width 224, sequence 16, fixed dims kept.")]
OpsetOpt = Annotated[int, typer.Option("--opset", help="ONNX opset for tf2onnx conversions.")]
# Preprocessing for directories of images, wherever a command reads calibration or validation data.
ImageSizeOpt = Annotated[str | None, typer.Option("--image-size", help="Images: resize to HEIGHTxWIDTH (default: the model's).")]
ImageScaleOpt = Annotated[str | None, typer.Option("--image-scale", help="Images: multiply pixels (0..255) by this. [default: 1/255]")]
ImageMeanOpt = Annotated[str | None, typer.Option("--image-mean", help="Images: subtract after scaling (one value or one per channel).")]
ImageStdOpt = Annotated[str | None, typer.Option("--image-std", help="Images: divide by after the mean (one value or one per channel).")]
ImageLayoutOpt = Annotated[str | None, typer.Option("--image-layout", help="Images: auto, NHWC or NCHW. [default: auto]")]
ImageColorOpt = Annotated[str | None, typer.Option("--image-color", help="Images: auto, rgb, bgr or gray. [default: auto]")]


def wide_console() -> Console:
    """stdout's console, or when stdout is a pipe or file (CI logs), one wide enough for the whole table."""
    if stdout.is_terminal:
        return stdout
    return Console(width=160, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def warn(text: str) -> None:
    stderr.print(f"[yellow]warning:[/] {text}", highlight=False)


DATA_FLAGS = ("--calibration", "--validation", "--data", "--fine-tune")


def data_specs_in(argv: list[str]) -> dict[str, str]:
    """The data options on a command line: {flag: value}, for `--flag value` and `--flag=value`."""
    found: dict[str, str] = {}
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in DATA_FLAGS:
            if eq:
                found[flag] = value
            elif i + 1 < len(argv):
                found[flag] = argv[i + 1]
    return found


def warn_code_data(specs: dict[str, str | None], where: str = "") -> None:
    """One warning line per `module:function` data source: using it imports and runs that code."""
    if not any(specs.values()):
        return
    from mdeploy.calibration.batches import CALLABLE_SPEC

    for flag, spec in specs.items():
        if spec and CALLABLE_SPEC.match(spec) and not Path(spec).exists():
            warn(f"{where}{flag} {spec} is a module:function data source: using it imports and runs that Python code")


def _stage_file_writer():
    """`mdeploy zoo` watches each model's stage through the file named in MDEPLOY_STAGE_FILE (OUTDIR/<model>/.zoo-stage)."""
    path = os.environ.get("MDEPLOY_STAGE_FILE")
    if not path:
        return lambda text: None
    from mdeploy.passes.core.errors import MdeployError
    from mdeploy.passes.core.fsio import write_text_atomic

    def write(text: str) -> None:
        with contextlib.suppress(OSError, MdeployError):  # progress is a courtesy: never fail the model for it
            write_text_atomic(Path(path), text)
    return write


@contextlib.contextmanager
def progress(title: str, quiet: bool = False) -> Iterator[Any]:
    """A live status line on stderr; yields the on_stage callback passes report to. An interrupt (errors.Interrupted)
    that ends the work is told what it interrupted: the title and the last stage."""
    to_file = _stage_file_writer()
    last: list[str] = []

    def on_stage(text: str) -> None:
        last[:] = [text]
        if status is not None:
            status.update(f"[bold]{title}[/] {text}")
        to_file(text)

    status = None
    with naming_interrupts(lambda: f"{title}: {last[0]}" if last else title):
        if quiet or not stderr.is_terminal:
            yield on_stage
            return
        with stderr.status(f"[bold]{title}[/]") as status:
            yield on_stage


@contextlib.contextmanager
def naming_interrupts(describe) -> Iterator[None]:
    """An interrupt that ends the block is told what it interrupted (`describe()`, for the CLI's error line), also
    one a library turned into an error of its own (a converter) or a KeyboardInterrupt of its own (Ray): the CLI
    takes the signal from what it caught itself (processes.interrupt_on_signals), and `doing` from this."""
    try:
        yield
    except BaseException as e:
        interrupt = _interrupt_in(e)
        if interrupt is not None:
            if interrupt.doing is None:
                interrupt.doing = describe()
            raise
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(signal.SIGINT, describe()) from e
        raise


def _interrupt_in(e: BaseException | None) -> Interrupted | None:
    """The Interrupted that `e` is, or that it was raised while handling."""
    for _ in range(20):
        if e is None or isinstance(e, Interrupted):
            return e
        e = e.__cause__ or e.__context__
    return None
