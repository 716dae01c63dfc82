"""`sftdata tokenize` through Click: flag checks, exit codes, report, plot, rejects."""

from __future__ import annotations

import json

import polars as pl
from click.testing import CliRunner
from conftest import FIXTURES, chat

from sftdata.cli import cli
from sftdata.io import write_table
from sftdata.ops.render_template import render_template
from sftdata.schema import from_dicts

TINY_HF = str(FIXTURES / "tokenizers/tiny-chatml")
TINY_TIKTOKEN = str(FIXTURES / "tokenizers/tiny.tiktoken")


def run(*args):
    return CliRunner().invoke(cli, ["tokenize", *map(str, args)])


def rendered_file(tmp_path, *records):
    path = tmp_path / "rendered.parquet"
    write_table(render_template(from_dicts(list(records)), "chatml").records, path)
    return path


def test_help_has_a_summary_and_a_pipe_example():
    result = run("--help")
    assert result.exit_code == 0
    assert "Tokenize rendered records into input_ids and labels (-100: not trained)." in result.output
    assert "Example:" in result.output and "| sftdata tokenize" in result.output


def test_flag_combinations_are_checked_first(tmp_path):
    path = rendered_file(tmp_path, chat("hi", "yo"))
    result = run(path, "-t", TINY_HF, "--truncation", "left")
    assert result.exit_code == 2 and "--truncation needs --max-len." in result.output
    result = run(path, "-t", TINY_HF, "--special", "<x>=1")
    assert result.exit_code == 2 and "--special applies to tiktoken tokenizers only." in result.output
    result = run(path, "-t", TINY_HF, "--plot", tmp_path / "p.svg")
    assert result.exit_code == 2 and "--plot writes a PNG; give a file name ending in .png." in result.output
    result = run(path, "-t", "o200k_base")
    assert result.exit_code == 2 and "tiktoken encoding 'o200k_base' is not on this machine" in result.output


def test_tokenizes_with_report_plot_and_summary(tmp_path):
    path = rendered_file(tmp_path, chat("hi", "hello"), chat("q " * 30, "a"))
    report, plot, out = tmp_path / "r.json", tmp_path / "h.png", tmp_path / "t.parquet"
    result = run(path, "-t", TINY_HF, "--max-len", 40, "--truncation", "left", "--report", report,
                 "--plot", plot, "-o", out)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["rows_in"] == 2 and data["rows_out"] == 2 and data["rows_truncated"] == 1
    assert data["tokenizer"]["name"] == "tiny-chatml"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tokenize: 2 rows in, 2 out, 0 dropped;" in result.stderr
    assert "Warning: 1 rows truncated (left), 0 supervised tokens lost" in result.stderr
    frame = pl.read_parquet(out)
    assert frame["n_tokens"].max() == 40 and frame.schema["labels"] == pl.List(pl.Int32)


def test_rows_left_without_supervision_fail_unless_rejects(tmp_path):
    path = rendered_file(tmp_path, chat("q " * 40, "a"), chat("hi", "yo"))
    result = run(path, "-t", TINY_HF, "--max-len", 20)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: {path}, row 1: no supervised token left after right truncation to 20; 1 row(s) "
        "in all would have none. Fix: pass --rejects FILE to drop them with a reason, raise "
        "--max-len, or change --train-on\n"
    )
    rejects = tmp_path / "rej.jsonl"
    result = run(path, "-t", TINY_HF, "--max-len", 20, "--rejects", rejects)
    assert result.exit_code == 0
    assert json.loads(rejects.read_text())["reason"] == "no supervised token left after right truncation to 20"
    assert len(result.stdout.splitlines()) == 1
    assert "Warning: 1 rows with no supervised token dropped" in result.stderr


def test_fail_policy_exits_1_naming_the_row(tmp_path):
    path = rendered_file(tmp_path, chat("hi", "yo"), chat("q " * 40, "a"))
    result = run(path, "-t", TINY_HF, "--max-len", 20, "--truncation", "fail")
    assert result.exit_code == 1
    # rows count from 1 (L3): the second row is row 2
    assert f"{path}, row 2: field 'text':" in result.stderr and "longer than --max-len 20" in result.stderr


def test_unrendered_input_is_a_data_error(tmp_path):
    path = tmp_path / "raw.jsonl"
    write_table(from_dicts([chat("a", "b")]), path)
    result = run(path, "-t", TINY_HF)
    assert result.exit_code == 1
    assert "no 'text' or 'spans' column. Fix: run the records through `sftdata render-template` first" in result.stderr


def test_tiktoken_file_with_specials(tmp_path):
    path = rendered_file(tmp_path, chat("hi", "yo"))
    result = run(path, "-t", TINY_TIKTOKEN, "--special", "<|im_start|>=2000,<|im_end|>=2001,<|endoftext|>=2002")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["input_ids"][0] == 2000 and row["input_ids"].count(2001) == 2
    info = json.loads(row["tokenizer"])
    assert info["backend"] == "tiktoken" and info["eos_id"] == 2002 and info["pad_id"] == 2002
