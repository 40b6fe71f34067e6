"""`--help` that teaches: every command's help ends with real examples that parse against its
real options, and showing help imports nothing heavy."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import typer

from isoflop.cli import app
from isoflop.cli_examples import EXAMPLES

HEAVY = ("torch", "matplotlib", "pandas", "scipy", "sqlalchemy")


def _group():
    return typer.main.get_command(app)


def _commands() -> list[str]:
    return sorted(_group().commands)


def test_every_command_has_two_or_three_examples():
    missing = [c for c in _commands() if not 2 <= len(EXAMPLES.get(c, [])) <= 3]
    assert not missing, f"commands without 2-3 examples in isoflop/cli_examples.py: {missing}"
    assert set(EXAMPLES) <= set(_commands()), set(EXAMPLES) - set(_commands())  # no examples of a gone command


@pytest.mark.parametrize("command, line", [(c, line) for c, ex in EXAMPLES.items() for line, _ in ex])
def test_example_parses_against_the_real_options(command, line):
    words = shlex.split(line)
    words = words[next(i for i, w in enumerate(words) if w == "isoflop") + 1:]  # after `ENV=... isoflop`
    for stop in (">", "|"):
        words = words[:words.index(stop)] if stop in words else words
    assert words[0] == command
    cmd = _group().commands[command]
    ctx = cmd.make_context(command, words[1:])  # an unknown option or a bad value raises here
    assert ctx.params is not None


def test_help_ends_with_the_examples_and_imports_nothing_heavy():
    code = ("import sys, json\nfrom isoflop.cli import app\nout = {}\n"
            f"for args in [['--help']] + [[c, '--help'] for c in {_commands()!r}]:\n"
            "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "COLUMNS": "160"})
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []
    for command in ("submit", "fit", "demo"):
        text = subprocess.run([sys.executable, "-m", "isoflop", command, "--help"], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "200"}).stdout
        first = EXAMPLES[command][0][0]
        assert "Examples:" in text and first in text and text.index("Examples:") > text.index("--help"), text[-800:]
