"""`sftdata convert` through CliRunner: exit codes, exact messages, rejects, flags, stdin."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from sftdata.cli import cli

RAW = Path(__file__).resolve().parents[1] / "fixtures" / "raw"


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, ["convert", *map(str, args)], input=input)


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_help_has_summary_and_pipe_example():
    result = run("--help")
    assert result.exit_code == 0
    assert "Convert Alpaca, ShareGPT, OpenAI, OASST, text and label tables to records." in result.output
    assert "Example:" in result.output and "| sftdata convert |" in result.output


@pytest.mark.parametrize(
    ("name", "fmt", "rows", "records"),
    [
        ("alpaca.json", "alpaca", 3, 3),
        ("alpaca.jsonl", "alpaca", 3, 3),
        ("sharegpt.json", "sharegpt", 2, 2),
        ("openai.jsonl", "openai", 3, 3),
        ("prompt_completion.jsonl", "prompt-completion", 2, 2),
        ("preference.jsonl", "prompt-completion", 1, 1),
        ("text.jsonl", "text", 2, 2),
        ("classification.csv", "classification", 3, 3),
        ("news.csv", "classification", 2, 2),
        ("ner.conll", "conll", 3, 3),
        ("prompts.jsonl", "prompts", 2, 2),
    ],
)
def test_every_fixture_format_converts(name, fmt, rows, records):
    result = run(RAW / name)
    assert result.exit_code == 0, result.output
    assert len(lines(result.stdout)) == records
    assert result.stderr == (
        f"convert: {RAW / name}: {rows} rows in = {records} records out + 0 rejected ({fmt})\n")


def test_expanding_formats_report_rows_and_records():
    result = run(RAW / "oasst_tree.jsonl")
    assert result.exit_code == 0
    assert result.stderr.endswith(
        "1 rows in = 1 converted + 0 rejected; the converted rows gave 2 records (oasst)\n")
    result = run(RAW / "oasst_flat.jsonl", "--oasst-best")
    assert result.exit_code == 0
    assert [r["id"] for r in lines(result.stdout)] == ["a5"]


# Each bad-input class stops the command with file, line, field and fix (exit 1).
BAD = {
    "bad_json.jsonl": "line 2: broken JSON (Expecting ',' delimiter at column 56). "
                      "Fix: repair or remove the line, or pass --rejects FILE to skip bad rows",
    "bad_missing_field.jsonl": "line 2: field 'output': missing (alpaca rows need it). Fix: add it, "
                               "map a column with --map output=COLUMN, or force another format "
                               "with --from",
    "bad_role.jsonl": "line 2: field 'conversations[1].from': unknown role 'robot'. Fix: use system, "
                      "user, assistant or tool (or human, gpt, function_call, observation), or map "
                      "it with --roles NAME=ROLE",
    "bad_empty_assistant.jsonl": "line 2: field 'messages[1].content': empty assistant turn. "
                                 "Fix: fill in the answer or drop the row (--rejects FILE skips it)",
    # a number where text belongs; Polars would read it as the string "7" (see jsonl_arrow)
    "bad_type.jsonl": "line 2: field 'input': must be a string, got int. Fix: make it a string",
    "bad_utf8.jsonl": "line 2: invalid UTF-8 at byte 20. "
                      "Fix: re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_row_stops_with_exact_message(name, tmp_path):
    out = tmp_path / "out.parquet"
    result = run(RAW / name, "-o", out)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {RAW / name}, {BAD[name]}\n"
    assert not out.exists()  # atomic: no half file under the final name
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", sorted(BAD))
def test_rejects_file_takes_bad_rows_and_counts_add_up(name, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    result = run(RAW / name, "--rejects", rejects)
    assert result.exit_code == 0, result.output
    (reject,) = lines(rejects.read_text())
    assert reject["file"] == str(RAW / name) and reject["line"] == 2
    message = BAD[name].split(": ", 1)[1].split(". Fix:")[0]
    assert reject["reason"] == message
    original = (RAW / name).read_bytes().splitlines()[1].decode("utf-8", errors="replace")
    assert reject["original"] == original
    total = len((RAW / name).read_bytes().splitlines())
    assert f"{total} rows in = {total - 1} records out + 1 rejected" in result.stderr
    assert f"convert: 1 rejected rows written to {rejects}" in result.stderr


def test_unrecognized_file_is_refused_with_the_reason():
    result = run(RAW / "bad_tokenized.json")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {RAW / 'bad_tokenized.json'}, line 1: cannot tell the source format: already "
        "tokenized data (keys: input_ids, attention_mask, labels), not conversations. Fix: force "
        "a format with --from (canonical, openai, alpaca, sharegpt, oasst, prompt-completion, "
        "classification, conll, text, prompts, benchmark) or rename columns with --map TARGET=COLUMN\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--oasst-best", "--from", "alpaca"],
         "--oasst-best only applies to OASST trees (--from oasst)."),
        (["--template", "{text}", "--from", "alpaca"],
         "--template only applies to classification and CoNLL input."),
        (["--roles", "bot=robot"],
         "--roles bot=robot: 'robot' is not a role; use one of system, user, assistant, tool."),
        (["--map", "instruction"],
         "--map expects key=value pairs separated by commas, got 'instruction'"),
        (["-o", "same.jsonl", "--rejects", "same.jsonl"],
             "-o same.jsonl and --rejects same.jsonl name the same file; give them different paths"),
    ],
)
def test_flag_combinations_are_usage_errors(args, message):
    result = run(RAW / "alpaca.jsonl", *args)
    assert result.exit_code == 2
    assert f"Error: {message}" in result.stderr


def test_map_of_missing_column_is_usage_error():
    result = run(RAW / "custom.jsonl", "--map", "instruction=query,output=answer")
    assert result.exit_code == 2
    assert result.stderr == f"Error: --map: column 'query' is not in {RAW / 'custom.jsonl'}\n"


def test_map_source_task_and_stdin():
    data = (RAW / "custom.jsonl").read_bytes()
    result = run("-", "--map", "instruction=question,output=answer", "--source", "quiz",
                 "--task", "qa", input=data)
    assert result.exit_code == 0, result.output
    recs = lines(result.stdout)
    assert [r["source"] for r in recs] == ["quiz", "quiz"]
    assert [r["task"] for r in recs] == ["qa", "qa"]
    assert recs[1]["messages"][0]["content"] == "How many legs does a spider have?"
    assert result.stderr == "convert: <stdin>: 2 rows in = 2 records out + 0 rejected (alpaca)\n"


def test_from_forces_a_format():
    result = run(RAW / "classification.csv", "--from", "text")
    assert result.exit_code == 0
    assert {r["task"] for r in lines(result.stdout)} == {"text"}


def test_template_for_classification():
    result = run(RAW / "news.csv", "--template", "Which section? {title}")
    assert result.exit_code == 0
    assert lines(result.stdout)[0]["messages"][0]["content"] == "Which section? Stocks rally"


def test_roles_option_maps_unknown_roles():
    result = run(RAW / "bad_role.jsonl", "--roles", "robot=assistant")
    assert result.exit_code == 0
    assert lines(result.stdout)[1]["messages"][1]["role"] == "assistant"


@pytest.mark.parametrize("to", ["parquet", "arrow"])
def test_output_formats_read_back_as_records(to, tmp_path):
    out = tmp_path / f"out.{to}"
    assert run(RAW / "openai.jsonl", "-o", out).exit_code == 0
    again = run(out)
    assert again.exit_code == 0
    direct = run(RAW / "openai.jsonl")
    assert again.stdout == direct.stdout
    assert "(canonical)" in again.stderr


def test_arrow_on_stdout_is_an_ipc_stream():
    result = run(RAW / "alpaca.jsonl", "--to", "arrow")
    assert result.exit_code == 0
    frame = pl.read_ipc_stream(result.stdout_bytes)
    assert frame.height == 3 and frame.columns[:2] == ["id", "messages"]


def test_convert_is_idempotent_on_its_output():
    first = run(RAW / "sharegpt.json")
    second = run("-", input=first.stdout_bytes)
    assert second.exit_code == 0
    assert second.stdout == first.stdout


def test_truncated_parquet_is_a_data_error(tmp_path):
    good = tmp_path / "good.parquet"
    assert run(RAW / "alpaca.jsonl", "-o", good).exit_code == 0
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[:300])
    result = run(bad)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {bad}: unreadable parquet file (")
    assert result.stderr.endswith(
        "Fix: check that it is a complete parquet file (an interrupted copy is truncated)\n")


def test_parquet_and_multi_batch_jsonl_on_stdin(tmp_path):
    out = tmp_path / "a.parquet"
    run(RAW / "alpaca.jsonl", "-o", out)
    result = run("-", input=out.read_bytes())
    assert result.exit_code == 0 and len(lines(result.stdout)) == 3
    big = b"".join(b'{"text": "row %d"}\n' % i for i in range(3000))  # more than the sniffed head
    result = run("-", input=big)
    assert result.exit_code == 0
    assert [r["messages"][0]["content"] for r in lines(result.stdout)][-1] == "row 2999"


def test_unused_template_is_warned_about():
    result = run(RAW / "alpaca.jsonl", "--template", "{text}")
    assert result.exit_code == 0
    assert result.stderr.endswith("Warning: --template was not used: the input is alpaca\n")


def test_unreadable_first_row_is_rejected_and_detection_uses_the_next(tmp_path):
    rejects = tmp_path / "r.jsonl"
    result = run("-", "--rejects", rejects, input=b'{"text": \n{"text": "ok"}\n')
    assert result.exit_code == 0
    assert len(lines(result.stdout)) == 1
    assert "2 rows in = 1 records out + 1 rejected (text)" in result.stderr
    assert lines(rejects.read_text())[0]["line"] == 1


def test_empty_input_gives_empty_output():
    result = run("-", input=b"")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == "convert: <stdin>: 0 rows in = 0 records out + 0 rejected (no rows)\n"


def test_a_key_first_seen_late_still_reaches_meta():
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(300)]
    rows[250]["extra"] = "kept"
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    recs = lines(run("-", input=data).stdout)
    assert json.loads(recs[250]["meta"]) == {"extra": "kept"}
    assert recs[0]["meta"] is None
