"""The mdeploy command line. Thin: each command parses flags, calls a library function and renders its report.

Errors are mapped to `error:`/`hint:` lines and exit codes here, in one place.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Annotated

import typer
from typer._click.exceptions import NoArgsIsHelpError  # typer 0.29 vendors Click; pinned (see cli/commands.py)
from typer.exceptions import TyperException

from mdeploy.cli import _common
from mdeploy.cli.commands import LazyCommands
from mdeploy.passes.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_PASS_FAILED,
    EXIT_SIGINT,
    Interrupted,
    MdeployError,
    environment_error,
    first_line,
)
from mdeploy.passes.core.logs import configure_logging
from mdeploy.passes.core.processes import die_with_parent, interrupt_on_signals

app = typer.Typer(
    name="mdeploy",
    cls=LazyCommands,
    help="Convert, simplify, quantize, prune and validate models for cloud (SavedModel, ONNX) and edge (TFLite).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mdeploy")
    except PackageNotFoundError:
        return "0.0.0+source"


def _version_callback(value: bool) -> None:
    if value:
        print(f"mdeploy {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version_: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors (also accepted after the command).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Let TensorFlow's own logging through (also after the command).")] = False,
    custom_objects: Annotated[list[str] | None, typer.Option("--custom-objects", help="MODULE[:Name,...] (repeatable): import MODULE (this runs its code) and give Keras its custom classes (the named ones, else every Keras class it defines or registers).")] = None,
    unsafe_keras: Annotated[bool, typer.Option("--unsafe-keras", help=f"Turn Keras safe_mode off to load Lambda layers (or set {_common.UNSAFE_KERAS_ENV}=1): runs code from the model file; only for files you trust. Either one prints a warning.")] = False,
    max_model_bytes: Annotated[str | None, typer.Option(_common.MAX_MODEL_BYTES_FLAG, help="Refuse a model that would take more than this to hold (e.g. 20GB): file, inflated .keras, ONNX external data. [default: half the available memory, at most 16 GB]")] = None,
) -> None:
    """mdeploy: verified deployment artifacts from a trained model."""
    # The global flags are read from the whole line by run() (GlobalOptions.from_argv); they are declared here for --help.


def _print_error(message: str, hint: str) -> None:
    from rich.markup import escape

    # escaped: messages name outputs as `metric [output]`, which rich would take for markup and drop
    _common.stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    if hint:
        _common.stderr.print(f"[bold]hint:[/] {escape(hint)}", highlight=False)


# What re-running an interrupted command does, for its hint; every command's temporary files are removed on the way
# out (passes/core/fsio.py), so what is in OUTDIR is whole.
_RESUME = {
    "optimize": "re-run the same command to resume: finished steps come from the step cache",
    "zoo": "re-run the same command to resume: models that finished are recorded under OUTDIR/<model> and skipped",
}


def _interrupted(interrupt: Interrupted, doing: str | None, argv: list[str], traceback_of: BaseException | None) -> int:
    """One `error: interrupted (SIGINT|SIGTERM)` line naming what was being done, one hint, 128 + the signal."""
    if traceback_of is not None:  # --debug
        _print_traceback(traceback_of)
    command = next((a for a in argv if not a.startswith("-")), None)
    where = f" `mdeploy {command}`" if command else ""
    doing = f" ({doing})" if doing else ""
    resume = _RESUME.get(command or "", "re-run the same command (with --force where it wrote outputs) to start again")
    _print_error(f"interrupted ({interrupt.signal_name}) during{where}{doing}",
                 f"nothing half-written was published: temporary files were removed and child processes stopped; {resume}")
    return interrupt.exit_code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the importable entry point tests use)."""
    try:
        options, argv = _common.GlobalOptions.from_argv(list(sys.argv[1:] if argv is None else argv), dict(os.environ))
    except MdeployError as e:
        _print_error(e.message, e.hint)
        return e.exit_code
    configure_logging(options.verbose)
    if options.unsafe_keras and argv and argv[0] not in ("report", "zoo-merge", "bundle"):
        source = "--unsafe-keras" if _common.UNSAFE_KERAS_ENV not in os.environ else f"{_common.UNSAFE_KERAS_ENV}=1"
        _common.warn(f"Keras safe_mode is off ({source}): loading a .keras/.h5 model runs code stored in it")
    if argv and argv[0] not in ("report", "zoo-merge", "bundle"):
        _common.warn_code_data(_common.data_specs_in(argv))
    die_with_parent()  # a zoo's model process ends with its zoo, however the zoo ends
    if options.custom_objects and argv and argv[0] not in ("report", "zoo-merge", "bundle"):
        _common.warn(f"--custom-objects imports {', '.join(o.split(':')[0] for o in options.custom_objects)}: that runs its code")
    failure: BaseException | None = None
    # Click's context and invoke, not app(): Typer's own main would turn an interrupt into a quiet exit 130.
    command = typer.main.get_command(app)
    with interrupt_on_signals() as signals:
        try:
            with command.make_context("mdeploy", argv, obj=options) as ctx:
                rv = command.invoke(ctx)
        except BaseException as e:  # noqa: BLE001 - mapped to an exit code below, once the handlers are restored
            failure = e
    if signals.interrupt is not None or isinstance(failure, KeyboardInterrupt):
        # The signal is the first cause, whatever the interrupt became on its way out (a library may raise its own
        # KeyboardInterrupt, or an error from the clean-up); what was being done rides on the exception.
        interrupt = signals.interrupt or Interrupted(signal.SIGINT)
        doing = interrupt.doing or getattr(failure, "doing", None)
        return _interrupted(interrupt, doing, argv, (failure or interrupt) if options.debug else None)
    if failure is None:
        return rv if isinstance(rv, int) else 0
    if options.debug and not isinstance(failure, typer.Exit):
        _print_traceback(failure)
    return _exit_code_of(failure)


def _print_traceback(e: BaseException) -> None:
    from rich.traceback import Traceback

    _common.stderr.print(Traceback.from_exception(type(e), e, e.__traceback__))


def _exit_code_of(e: BaseException) -> int:
    """The `error:`/`hint:` lines and exit code of a run that ended with `e`."""
    if isinstance(e, MdeployError):
        _print_error(e.message, e.hint)
        return e.exit_code
    if isinstance(e, typer.Exit):
        return e.exit_code
    if isinstance(e, (typer.Abort, EOFError)):  # a prompt that got no answer
        _print_error("aborted", "")
        return EXIT_SIGINT
    if isinstance(e, OSError) and e.errno == errno.EPIPE:  # stdout's reader went away (`mdeploy report | head`)
        from typer._click.utils import PacifyFlushWrapper

        sys.stdout, sys.stderr = PacifyFlushWrapper(sys.stdout), PacifyFlushWrapper(sys.stderr)  # as Click does
        return EXIT_CHECK_FAILED
    if isinstance(e, NoArgsIsHelpError):  # `mdeploy` alone asks what it does: the help, as --help gives it
        typer.echo(e.format_message())
        return 0
    if isinstance(e, TyperException):
        ctx = getattr(e, "ctx", None)
        cmd = ctx.command_path if ctx is not None else "mdeploy"
        _print_error(e.format_message(), f"see `{cmd} --help`")
        return EXIT_BAD_INPUT
    if not isinstance(e, Exception):  # SystemExit and the like: as they say
        raise e
    env = environment_error(e)  # the last line of defence: no traceback unless --debug
    if env is not None:  # a full disk, a read-only or file-shaped OUTDIR: the user's to fix (exit 2)
        _print_error(env.message, env.hint)
        return env.exit_code
    _print_error(f"unexpected {type(e).__name__}: {first_line(e, empty='')}",
                 "re-run with --debug for the traceback, and report it if it looks like a bug")
    return EXIT_PASS_FAILED


def main() -> None:
    sys.exit(run())
