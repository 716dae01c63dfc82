"""`sftdata leakcheck` through CliRunner: exit codes, exact messages, stdout vs stderr, files."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import chat

from sftdata.cli import cli
from sftdata.schema import from_dicts

NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?"
)


def jsonl(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    from_dicts(rows).write_ndjson(buf)
    return buf.getvalue()


def write(path, rows: list[dict]):
    path.write_bytes(jsonl(rows))
    return str(path)


def run(args, data: bytes = b""):
    return CliRunner().invoke(cli, ["leakcheck", *args], input=data)


@pytest.fixture
def files(tmp_path):
    """train.jsonl with 2 leaks (one exact, one edited), 1 generic opener and 2 clean records."""
    train = write(tmp_path / "train.jsonl", [
        chat("Describe a process of making crepes.", "Mix flour and eggs.", id="clean1"),
        chat(NATALIA.upper(), "72", id="leak1"),
        chat("Who are you?", "I am a helpful assistant.", id="opener"),
        chat("Solve: " + NATALIA.replace("half", "a third"), "60", id="leak2"),
        chat("Write a haiku about the sea.", "Waves...", id="clean2"),
    ])
    bench = write(tmp_path / "bench.jsonl", [
        chat(NATALIA, "72", id="g1"),
        chat("Who are you?", "I am an artificial intelligence", id="t1"),
    ])
    return tmp_path, train, bench


def test_help_has_summary_and_example():
    result = run(["--help"])
    assert result.exit_code == 0
    assert "Find training records that contain benchmark, val, test or gold items." in result.output
    example = result.output.split("Example:")[1]
    assert "sftdata convert gsm8k_test.jsonl | sftdata leakcheck train.parquet --against -" in example


def test_summary_on_stderr_and_nothing_on_stdout_without_drop(files):
    _, train, bench = files
    result = run([train, "--against", bench])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "leakcheck: 5 training records (on prompt) against bench (2 items)"
    assert lines[1].startswith("  bench: 2 contaminated record(s), 1 low-confidence")
    assert "  contaminated: 2 of 5 (40.00%); low-confidence: 1 (reported, not counted)" in lines
    assert "  leak1: exact match with bench item g1 (overlap 1.00)" in lines


def test_report_lists_each_contaminated_record_with_evidence(files):
    tmp, train, bench = files
    report = tmp / "leaks.json"
    result = run([train, "--against", f"gsm={bench}", "--report", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert [c["train_id"] for c in data["contaminated"]] == ["leak1", "leak2"]
    assert [c["train_id"] for c in data["low_confidence"]] == ["opener"]
    leak2 = data["contaminated"][1]["matches"][0]
    assert (leak2["ref_set"], leak2["ref_id"], leak2["kind"]) == ("gsm", "g1", "ngram")
    assert leak2["evidence"]["ngram"]["matching"] and leak2["evidence"]["ratio"] == leak2["overlap"]
    assert data["summary"]["references"]["gsm"]["items"] == 2


def test_drop_writes_clean_records_and_rejects_with_reasons(files):
    tmp, train, bench = files
    rejects = tmp / "dropped.jsonl"
    result = run([train, "--against", bench, "--drop", "--rejects", str(rejects)])
    assert result.exit_code == 0, result.output
    kept = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert kept == ["clean1", "opener", "clean2"]
    dropped = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(d["id"], d["reason"]) for d in dropped] == [
        ("leak1", "leak: high exact match with bench item g1 (overlap 1.0)"),
        ("leak2", "leak: high ngram match with bench item g1 (overlap 0.968)"),
    ]
    assert "dropped 2 contaminated record(s) of 5; wrote 3" in result.stderr


def test_drop_strict_also_drops_low_confidence_to_a_parquet_file(files):
    tmp, train, bench = files
    out = tmp / "clean.parquet"
    result = run([train, "--against", bench, "--drop", "--strict", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out)["id"].to_list() == ["clean1", "clean2"]
    assert "dropped records not written (pass --rejects FILE to keep them)" in result.stderr


@pytest.mark.parametrize("fail_on, code", [("0", 1), ("1", 1), ("2", 0), ("50%", 0), ("39.9%", 1)])
def test_fail_on_count_or_percentage(files, fail_on, code):
    _, train, bench = files
    result = run([train, "--against", bench, "--fail-on", fail_on])
    assert result.exit_code == code, result.output
    if code:
        assert result.stderr.splitlines()[-1] == (
            f"Error: leakcheck failed: 2 contaminated record(s) (40.00%) exceed --fail-on {fail_on}"
        )


def test_reference_from_stdin_as_after_convert(files):
    _, train, _ = files
    result = run([train, "--against", "-"], jsonl([chat(NATALIA, "72", id="g1")]))
    assert result.exit_code == 0, result.output
    assert "against stdin (1 items)" in result.stderr


def test_split_directory_checks_train_against_val_test_and_gold(tmp_path):
    folder = tmp_path / "splits"
    folder.mkdir()
    from_dicts([chat(NATALIA, "72", id="t1"), chat("Hello there.", "Hi!", id="t2")]).write_parquet(
        folder / "train.parquet"
    )
    write(folder / "val.jsonl", [chat("Something unrelated to anything.", "ok", id="v1")])
    write(folder / "gold.jsonl", [chat(NATALIA, "72", id="gold1")])
    result = run([str(folder), "--fail-on", "0"])
    assert result.exit_code == 1
    assert "against val (1 items), gold (1 items)" in result.stderr
    assert "  t1: exact match with gold item gold1 (overlap 1.00)" in result.stderr


@pytest.mark.parametrize("args, message", [
    ([], "Error: give at least one --against REF (a benchmark after `sftdata convert`), "
         "or a split directory as TRAIN"),
    (["--against", "B", "-o", "x.jsonl"], "Error: -o/--output needs --drop: without --drop "
     "leakcheck writes no records, only the summary (stderr) and --report FILE."),
    (["--against", "B", "--to", "parquet", "--rejects", "r.jsonl"], "Error: --to, --rejects need "
     "--drop: without --drop leakcheck writes no records, only the summary (stderr) and --report FILE."),
    (["--against", "B", "--fail-on", "ten"], "Error: --fail-on expects a record count (e.g. 0) or "
     "a percentage (e.g. 0.1%), got 'ten'"),
    (["--against", "B", "--fail-on", "120%"], "Error: --fail-on percentage must be at most 100%, "
     "got '120%'"),
    (["--against", "-"], "Error: stdin can feed only one input: TRAIN and --against both read '-'; "
     "give the training data as a file"),
    (["--against", "B", "--against", "B"], "Error: two reference sets are named 'bench'; name them "
     "apart: --against NAME=PATH"),
    (["--against", "B", "--ngram", "0", "--min-overlap", "2"], "Error: --ngram must be at least 1, "
     "got 0; --min-overlap must be in (0, 1], got 2.0"),
    (["--against", "nope.jsonl"], "Error: nope.jsonl: no such file"),
])
def test_usage_errors_exit_2_with_exact_messages(files, args, message):
    _, train, bench = files
    args = [bench if a == "B" else a for a in args]
    first = "-" if args[:2] == ["--against", "-"] else train  # stdin twice needs stdin as TRAIN
    result = run([first, *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == message


def test_split_directory_without_train_file(tmp_path):
    result = run([str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: {tmp_path}: no train file (expected {tmp_path}/train.parquet, .arrow or .jsonl, "
        "as `sftdata split -o DIR` writes)"
    )


def test_bad_reference_rows_are_data_errors(files):
    tmp, train, _ = files
    bad = tmp / "bad.jsonl"
    bad.write_text('{"id": "x", "messages": []}\n{"id": broken\n')
    result = run([train, "--against", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"Error: {bad}, line 2: broken JSON")


def test_drop_output_passes_a_second_check(tmp_path):
    words13 = " ".join(NATALIA.split()[:13])
    filler = " ".join(f"unrelated{i}" for i in range(30))
    train = write(tmp_path / "train.jsonl", [
        chat(NATALIA, "72", id="copy"),
        chat(f"{words13} {filler}", "x", id="echo1"),
        chat(f"{filler} {words13}", "y", id="echo2"),
        chat("Name a colour.", "Red.", id="clean"),
    ])
    bench = write(tmp_path / "bench.jsonl", [chat(NATALIA, "72", id="g1")])
    out = tmp_path / "kept.jsonl"
    knobs = ["--frequent-cutoff", "2"]
    result = run([train, "--against", bench, "--drop", *knobs, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert ("2 more record(s) contaminated once the first ones were dropped (their shared "
            "n-grams were boilerplate only while those counted); dropped too, 3 checks in all"
            ) in result.stderr
    assert "dropped 3 contaminated record(s) of 4; wrote 1" in result.stderr
    again = run([str(out), "--against", bench, *knobs, "--fail-on", "0"])
    assert again.exit_code == 0, again.output


def test_min_ngram_above_ngram_is_a_usage_error(files):
    """M14: `--min-ngram 50` (above --ngram 13) made exact copies low-confidence and --fail-on 0 passed."""
    _, train, bench = files
    result = run([train, "--against", bench, "--min-ngram", "50", "--fail-on", "0"])
    assert result.exit_code == 2
    assert "Error: --min-ngram 50 must be at most --ngram 13." in result.stderr


def test_shared_template_passes_the_gate_and_says_what_it_ignored(tmp_path):
    template = "Classify the topic of this news headline as World, Sports, Business or Sci/Tech.\n\n"
    story = [f"opener{i % 80} " + " ".join(f"w{i}x{k}" for k in range(8)) for i in range(260)]
    train = write(tmp_path / "train.jsonl",
                  [chat(template + s, "World", id=f"t{i}") for i, s in enumerate(story[:200])])
    bench = write(tmp_path / "bench.jsonl",
                  [chat(template + s, "World", id=f"b{i}") for i, s in enumerate(story[200:])])
    result = run([train, "--against", bench, "--fail-on", "0", "--no-near"])
    assert result.exit_code == 0, result.output
    assert "contaminated: 0 of 200 (0.00%); low-confidence: 0" in result.stderr
    assert ("  boilerplate ignored: 2 frequent n-gram(s) (in more than 10 training texts or "
            "reference items, --frequent-cutoff) and 60 shared n-gram(s) mostly made of them\n"
            ) in result.stderr


def test_gold_verify_frequent_cutoff_must_be_positive(tmp_path):
    gold = write(tmp_path / "gold.jsonl", [chat("q", "a", id="g1")])
    result = CliRunner().invoke(cli, ["gold", "verify", gold, "--frequent-cutoff", "0"])
    assert result.exit_code == 2
    assert "Error: --frequent-cutoff must be at least 1, got 0" in result.output
