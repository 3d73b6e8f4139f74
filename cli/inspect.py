"""`mdeploy inspect`: what a model file is, its inputs and outputs, size, parameters and top ops."""
from __future__ import annotations

from typing import Any

import typer

from mdeploy.cli._common import JsonOpt, ModelArg, emit_json, global_options, stdout
from mdeploy.cli._format import human_bytes


def _shape(shape: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def render(info: dict[str, Any]) -> None:
    from rich.table import Table

    head = f"[bold]{info['path']}[/]  {info['format']}"
    if info.get("opset"):
        head += f" (opset {info['opset']})"
    stdout.print(head + f"  {human_bytes(info['size_bytes'])}  {info['parameters']:,} parameters", highlight=False)
    io = Table(show_edge=False, box=None, pad_edge=False)
    for col in ("", "name", "shape", "dtype"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            io.add_row(kind[:-1], t["name"], _shape(t["shape"]), t["dtype"])
    stdout.print(io)
    if info.get("custom_ops"):
        stdout.print(f"custom ops: {', '.join(info['custom_ops'])}", highlight=False)
    if info.get("sparse_tensors"):
        stdout.print(f"sparse tensors: {info['sparse_tensors']} (stored in the TFLite sparse format)", highlight=False)
    if info.get("runs_on_litert") is False:
        stdout.print(f"LiteRT: does not load it ({info.get('litert_error', '')})", highlight=False)
    if info["top_ops"]:
        ops = Table(title=f"top ops ({info['op_count']} in all)", show_edge=False, box=None)
        ops.add_column("op")
        ops.add_column("count", justify="right")
        for row in info["top_ops"]:
            ops.add_row(row["op"], str(row["count"]))
        stdout.print(ops)


def inspect_cli(ctx: typer.Context, model: ModelArg, json_out: JsonOpt = False) -> None:
    """Show a model's format, inputs and outputs, size, parameter count and top ops."""
    from mdeploy.passes.workflows.inspect import inspect_model

    info = inspect_model(model, trusted=global_options(ctx).trust, max_bytes=global_options(ctx).max_model_bytes)
    if json_out:
        emit_json(info)
    else:
        render(info)
