"""Issue 11 findings in sftdata, sfttrain generate and merge, each pinned with its exact exit
code and message (the finding's ID in the test name). Lines and rows count from 1, as in every
project message (sftdata/errors.py: `FILE, line N` for text files, `FILE, row N` for tables)."""

from __future__ import annotations

from click.testing import CliRunner

from sftdata.cli import cli


def sftdata(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def test_L7_json_errors_say_at_once(tmp_path):
    bad = tmp_path / "trunc.jsonl"
    bad.write_text('{"instruction": "x", "input": "", "output": "unterminated\n')
    result = sftdata("convert", bad)
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: {bad}, line 1: broken JSON (Unterminated string starting at column 45). Fix: "
    )
    bad.write_text('{"instruction": "x\ty", "input": "", "output": "z"}\n')
    result = sftdata("convert", bad)
    assert "broken JSON (Invalid control character at column 19)" in result.output
    assert " at at " not in result.output
