"""`mdeploy --help`, `--version` and every `mdeploy COMMAND --help` stay fast: they import no numpy, TensorFlow,
ONNX or ONNX Runtime, and a command's module is imported only for that command."""
from __future__ import annotations

import inspect
import subprocess
import sys

from mdeploy.cli.commands import COMMANDS, command_function

HEAVY = ("numpy", "tensorflow", "onnx", "onnxruntime", "tf2onnx", "keras")
_PROBE = """
import contextlib, io, json, sys
from mdeploy.cli import run
from mdeploy.cli.commands import COMMANDS

heavy = %r
found = {}
for argv in [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS)]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = run(argv)
    cli_modules = sorted(m.split(".")[-1] for m in sys.modules if m.startswith("mdeploy.cli.") and m.split(".")[-1]
                         not in ("_common", "_format", "commands", "gate_options"))
    found[" ".join(argv)] = {"code": code, "heavy": [m for m in heavy if m in sys.modules], "modules": cli_modules,
                             "out": out.getvalue()}
print(json.dumps(found))
"""


def test_help_and_version_import_no_heavy_module_and_only_their_command():
    proc = subprocess.run([sys.executable, "-c", _PROBE % (HEAVY,)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    found = json.loads(proc.stdout)
    assert found["--help"]["modules"] == [] and found["--version"]["modules"] == []  # no command module at all
    assert all(name in found["--help"]["out"] for name in COMMANDS)
    assert found["--version"]["out"].startswith("mdeploy ")
    seen: set[str] = set()
    for name, (module, _, _) in COMMANDS.items():
        r = found[f"{name} --help"]
        assert r["code"] == 0 and f"Usage: mdeploy {name}" in r["out"], (name, r["out"][:300])
        assert r["heavy"] == [], f"`mdeploy {name} --help` imported {r['heavy']}"
        seen.add(module)
        assert set(r["modules"]) <= seen, f"`mdeploy {name} --help` imported other commands: {set(r['modules']) - seen}"


def test_command_table_matches_the_commands():
    """`mdeploy --help` lists the commands from COMMANDS without importing them: its lines are their docstrings'."""
    for name, (_, _, line) in COMMANDS.items():
        doc = inspect.getdoc(command_function(name)) or ""
        assert line == doc.split("\n\n")[0].replace("\n", " "), name


def test_a_mistyped_command_is_suggested_from_every_command(mdeploy):
    r = mdeploy("quantise")
    assert r.exit_code == 2 and "No such command 'quantise'. Did you mean 'quantize'?" in r.stderr
