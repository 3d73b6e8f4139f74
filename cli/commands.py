"""Every `mdeploy` command, and the root command that imports a command's module only when that command runs or
shows its help: `mdeploy --help` and `mdeploy --version` import none, and no command pays for another's imports."""
from __future__ import annotations

from difflib import get_close_matches

import typer
from typer._click.exceptions import UsageError
from typer._click.utils import make_default_short_help  # what Click's own listing uses
from typer.core import TyperGroup

# Every command: (module in cli/, function, the first line of its docstring). A command's module is imported only
# when that command runs or shows its help, so `mdeploy --help` lists them from here (a test keeps the lines equal
# to the docstrings) and no command pays for another's imports.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "optimize": ("optimize", "optimize_cli",
                'Convert, simplify, quantize (and prune), validate, bench and report, in one verified pipeline.'),
    "convert": ("convert", "convert_cli",
               'Convert a model to SavedModel (TF Serving layout), ONNX and TFLite, and check each against the source.'),
    "inspect": ("inspect", "inspect_cli",
               "Show a model's format, inputs and outputs, size, parameter count and top ops."),
    "simplify": ("simplify", "simplify_cli",
                'Simplify an ONNX model with onnxsim (constant folding, shape inference, fusions), checked with ONNX Runtime.'),
    "quantize": ("quantize", "quantize_cli",
                'Quantize a model to int8, dynamic-range int8 or fp16 for ONNX Runtime or LiteRT, and measure what it costs.'),
    "prune": ("prune", "prune_cli",
             'Zero the smallest weights of a Keras or ONNX model, or with --structured remove whole filters of a Keras model; report sparsity (or FLOPs and latency), sizes and accuracy before and after.'),
    "validate": ("validate", "validate_cli",
                'Compare candidates with a reference on the same data; exit 1 when one breaks a threshold.'),
    "bench": ("bench", "bench_cli",
             'Measure latency p50/p90/p99, throughput, load time and peak memory, each model in its own process.'),
    "report": ("report", "report_cli",
              'Compare every artifact in OUTDIR: size, latency, accuracy and check status, with the best per target marked.'),
    "zoo": ("zoo", "zoo_cli",
           'Optimize every model of a manifest, in parallel and in isolation, and summarize the best artifacts.'),
    "zoo-merge": ("zoo", "zoo_merge_cli", 'Combine the zoo summaries of several shards into one.'),
    "bundle": ("bundle", "bundle_cli",
              'Write TF Serving / Triton / Kubernetes / KServe bundles, every file validated offline before it is written.'),
    "sign": ("release", "sign_cli",
            'Sign an artifact or a directory (every file in it) with model-signing, offline.'),
    "verify": ("release", "verify_cli",
              "Verify a signed artifact or release: every file, the manifest's sequence and expiry. Exit 1 names the cause."),
    "release": ("release", "release_cli",
               'Write a signed OTA release: the files, an OTA manifest (id, version, sequence, digests, expiry) and mdeploy.sig.'),
    "keygen": ("release", "keygen_cli",
              'Make an EC P-256 key pair for sign/release (for tests and trials; keep production keys in your KMS/HSM).'),
    "micro": ("micro", "micro_cli",
             'Write a 16-byte-aligned C array, the op resolver and a measured, verified tensor arena size for TFLite Micro.'),
}


def command_function(name: str):
    """The Typer function behind `mdeploy NAME` (imports its module)."""
    import importlib

    module, attr, _ = COMMANDS[name]
    return getattr(importlib.import_module(f"mdeploy.cli.{module}"), attr)


class LazyCommands(TyperGroup):
    """The root command: builds a subcommand only when it is asked for, and lists them all from COMMANDS."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
            single.command(cmd_name)(command_function(cmd_name))
            self.commands[cmd_name] = typer.main.get_command(single)
        return self.commands[cmd_name]

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except UsageError as e:  # Typer suggests only from the commands built so far: suggest from all
            matches = get_close_matches(args[0], list(COMMANDS)) if args else []
            if matches and "Did you mean" not in e.message:
                e.message = f"{e.message.rstrip('.')}. Did you mean {', '.join(repr(m) for m in matches)}?"
            raise

    def format_commands(self, ctx, formatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, make_default_short_help(line, limit)) for name, (_, _, line) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
