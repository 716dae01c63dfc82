"""Issue 11 findings in sftdata, sfttrain generate and merge, each pinned with its exact exit
code and message (the finding's ID in the test name). Lines and rows count from 1, as in every
project message (sftdata/errors.py: `FILE, line N` for text files, `FILE, row N` for tables)."""

from __future__ import annotations

import json

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


TINY_HF = "fixtures/tokenizers/tiny-chatml"


def test_M10_tokenize_prompts_without_any_assistant_span(tmp_path):
    """convert -> render-template -> tokenize on prompts: the spans column is List(Null)."""
    records = sftdata("convert", "fixtures/raw/prompts.jsonl").stdout
    rendered = sftdata("render-template", "-t", "chatml", input=records).stdout
    path = tmp_path / "p.jsonl"
    path.write_text(rendered)
    result = sftdata("tokenize", "-t", TINY_HF, path)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {path}, row 1: no supervised token (no assistant turn to train); 2 row(s) in all "
        "would have none. Fix: records without an answer (prompts) are input for `sfttrain "
        "generate`, not for training; pass --rejects FILE to drop them with a reason, or "
        "--train-prompt to train on the whole text\n"
    )
    result = sftdata("tokenize", "-t", TINY_HF, input=rendered)
    assert result.exit_code == 1 and result.output.startswith("Error: <stdin>, row 1: ")
    rejects = tmp_path / "r.jsonl"
    result = sftdata("tokenize", "-t", TINY_HF, path, "--rejects", rejects)
    assert result.exit_code == 0 and result.stdout == ""
    assert [json.loads(x)["reason"] for x in rejects.read_text().splitlines()] == [
        "no supervised token (no assistant turn to train)"] * 2
    result = sftdata("tokenize", "-t", TINY_HF, path, "--train-prompt")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2
