"""Issue 11 findings in sftdata, sfttrain generate and merge, each pinned with its exact exit
code and message (the finding's ID in the test name). Lines and rows count from 1, as in every
project message (sftdata/errors.py: `FILE, line N` for text files, `FILE, row N` for tables)."""

from __future__ import annotations

import json

import pytest
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


FIRST_ROWS = {
    "openai": '{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}',
    "alpaca": '{"instruction":"a","input":"","output":"b"}',
    "sharegpt": '{"conversations":[{"from":"human","value":"a"},{"from":"gpt","value":"b"}]}',
    "prompt-completion": '{"prompt":"a","completion":"b"}',
    "text": '{"text":"a"}',
    "classification": '{"text":"a","label":"x"}',
    "oasst": '{"message_id":"a","parent_id":null,"text":"hi","role":"prompter"}',
}


@pytest.mark.parametrize("fmt", sorted(FIRST_ROWS))
@pytest.mark.parametrize("bad", ["null", "[1,2]", "42", "true"])
def test_M2_a_line_that_is_not_an_object(tmp_path, fmt, bad):
    kind = {"null": "null", "[1,2]": "array", "42": "number", "true": "boolean"}[bad]
    path = tmp_path / "in.jsonl"
    path.write_text(f"{FIRST_ROWS[fmt]}\n{bad}\n")
    result = sftdata("convert", path)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {path}, line 2: expected a JSON object, got {kind}. Fix: make each row one JSON "
        "object, or pass --rejects FILE to skip bad rows\n"
    )
    rejects = tmp_path / "rej.jsonl"
    result = sftdata("convert", path, "--rejects", rejects)
    assert result.exit_code == 0, result.output
    assert [json.loads(x) for x in rejects.read_text().splitlines()] == [
        {"file": str(path), "line": 2, "row": None,
         "reason": f"expected a JSON object, got {kind}", "original": bad}]


def test_M2_first_line_null_and_json_arrays(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('null\n{"text":"a"}\n')  # Arrow's JSON reader crashed (SIGSEGV) on this chunk
    result = sftdata("convert", path)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path}, line 1: expected a JSON object, got null.")
    rejects = tmp_path / "rej.jsonl"
    result = sftdata("convert", path, "--rejects", rejects)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["messages"][0]["content"] == "a"
    assert "2 rows in = 1 records out + 1 rejected (text)" in result.stderr
    array = tmp_path / "in.json"
    array.write_text('[{"instruction":"a","input":"","output":"b"}, null, 42]')
    result = sftdata("convert", array)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {array}, row 2: expected a JSON object, got null.")
    result = sftdata("convert", array, "--rejects", rejects)
    assert result.exit_code == 0
    assert [json.loads(x)["row"] for x in rejects.read_text().splitlines()] == [2, 3]
