"""Every command has a one-line summary and a pipe example in its help (sqlite-utils' test_docs)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from sftdata.cli import COMMANDS, cli


def _commands():
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        yield name, command
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                yield f"{name} {sub}", command.get_command(ctx, sub)


@pytest.mark.parametrize("name, command", list(_commands()), ids=lambda v: v if isinstance(v, str) else "")
def test_help_has_summary_and_example(name, command):
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    summary = (command.help or "").strip().splitlines()[0]
    assert summary and summary.endswith("."), f"{name}: first help line must be a sentence"
    if not isinstance(command, click.Group):
        assert "Example:" in result.output, f"{name}: help needs an Example: pipe"
        assert "sftdata" in result.output.split("Example:")[1]


def test_every_registered_command_is_built():
    ctx = click.Context(cli)
    missing = [name for name in COMMANDS if cli.get_command(ctx, name) is None]
    assert not missing, f"registered but not implemented: {missing}"


def test_top_level_help_does_not_import_heavy_modules():
    code = (
        "import sys; from click.testing import CliRunner; from sftdata.cli import cli;"
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output;"
        "heavy = [m for m in ('torch', 'transformers', 'great_expectations', 'datasketch', 'matplotlib')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
