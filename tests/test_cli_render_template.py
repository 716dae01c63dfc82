"""`sftdata render-template` through Click: exit codes, messages, files."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import chat

from sftdata.cli import cli
from sftdata.io import write_table
from sftdata.schema import from_dicts


def _input(tmp_path):
    path = tmp_path / "in.jsonl"
    tool = {"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}
    write_table(from_dicts([chat("hi", "hello"), tool]), path)
    return path


def run(*args):
    return CliRunner().invoke(cli, ["render-template", *map(str, args)])


def test_help_has_a_summary_and_a_pipe_example():
    result = run("--help")
    assert result.exit_code == 0
    assert "Render conversations with a chat template, marking assistant spans." in result.output
    assert "Example:" in result.output and "| sftdata render-template" in result.output


def test_renders_to_stdout_with_counts_on_stderr(tmp_path):
    path = tmp_path / "one.jsonl"
    write_table(from_dicts([chat("hi", "hello")]), path)
    result = run(path, "-t", "chatml")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["text"] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
    assert row["spans"] == [{"start": 52, "end": 67, "turn": 1, "train": None, "weight": None, "eot_start": 57}]
    assert "render-template: 1 rows in, 1 rendered, 0 rejected (template chatml" in result.stderr


def test_refused_row_exits_1_naming_the_row(tmp_path):
    result = run(_input(tmp_path), "-t", "sixtoken")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert (
        f"Error: {tmp_path / 'in.jsonl'}, row 2: field 'messages': template 'sixtoken' refused the "
        "conversation: the sixtoken template has no tool role. Fix: pick a template that accepts "
        "this conversation, or pass --rejects FILE to set such rows aside"
    ) in result.stderr


def test_rejects_file_takes_refused_rows_and_counts_add_up(tmp_path):
    rejects = tmp_path / "rej.jsonl"
    out = tmp_path / "out.parquet"
    result = run(_input(tmp_path), "-t", "sixtoken", "--rejects", rejects, "-o", out)
    assert result.exit_code == 0, result.output
    assert "2 rows in, 1 rendered, 1 rejected" in result.stderr
    assert "has no tool role" in json.loads(rejects.read_text())["reason"]
    import polars as pl

    assert pl.read_parquet(out)["text"].to_list() == ["<SOU>hi<EOU><SOA>hello<EOA>"]


def test_unknown_template_is_a_usage_error(tmp_path):
    result = run(_input(tmp_path), "-t", "nope")
    assert result.exit_code == 2
    assert "unknown template 'nope': not a built-in (chatml, llama3, alpaca, sixtoken), file or directory" in result.output


def test_bad_var_is_a_usage_error(tmp_path):
    result = run(_input(tmp_path), "-t", "chatml", "--var", "novalue")
    assert result.exit_code == 2
    assert "--var expects NAME=VALUE, got 'novalue'" in result.output


def test_generation_prompt_renders_for_inference(tmp_path):
    path = tmp_path / "one.jsonl"
    write_table(from_dicts([chat("hi", "hello")]), path)
    result = run(path, "-t", "llama3", "--generation-prompt")
    row = json.loads(result.stdout)
    assert row["text"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "hello" not in row["text"] and row["spans"] == []
