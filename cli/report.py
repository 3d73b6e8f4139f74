"""`mdeploy report`: one comparison of everything in OUTDIR/report.json, as a table, JSON, Markdown or HTML."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdeploy.cli._common import ForceOpt, stderr, wide_console
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import ensure_writable, write_text_atomic

FORMATS = ("table", "json", "markdown", "html")


def render_report(out_dir: Path, format: str = "table") -> str | object:
    """The rendering of OUTDIR's report: a str (json, markdown, html) or a rich Table (table)."""
    from mdeploy.passes.report import render as report_render
    from mdeploy.passes.report.model import Report

    if format not in FORMATS:
        raise BadInput(f"unknown report format '{format}'", f"choose one of {', '.join(FORMATS)}")
    if not Path(out_dir).is_dir():
        raise BadInput(f"{out_dir}: no such directory", "pass the OUTDIR given to convert/quantize/validate/bench with -o")
    report = Report.load(out_dir)
    if format == "json":
        return report.to_json() + "\n"
    if format == "markdown":
        return report_render.to_markdown(report)
    if format == "html":
        return report_render.to_html(report)
    return report_render.to_table(report)


def report_cli(
    out_dir: Annotated[Path, typer.Argument(help="The OUTDIR holding report.json.", show_default=False)],
    format: Annotated[str, typer.Option("--format", "-f", help="table, json, markdown or html.")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    force: ForceOpt = False,
) -> None:
    """Compare every artifact in OUTDIR: size, latency, accuracy and check status, with the best per target marked."""

    if output is not None:
        ensure_writable(output, force)
    rendered = render_report(out_dir, format.lower())
    if not isinstance(rendered, str):  # a rich Table
        if output is None:
            wide_console().print(rendered)
            return
        import io

        from rich.console import Console

        console = Console(file=io.StringIO(), width=200, color_system=None)
        console.print(rendered)
        rendered = console.file.getvalue()
    if output is None:
        import sys

        sys.stdout.write(rendered)
        sys.stdout.flush()
    else:
        write_text_atomic(output, rendered)
        stderr.print(f"wrote {output}", highlight=False)
