"""`sftdata dedup` through Click: exit codes, stdout data only, stderr summary, --dupes file."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import chat

from sftdata.cli import cli
from sftdata.io import write_table
from sftdata.schema import from_dicts


def words(seed: int, n: int = 120) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randrange(400)}" for _ in range(n)]


@pytest.fixture
def records_file(tmp_path):
    a, b = words(1), words(2)
    near = list(a)
    near[50] = "changed"
    rows = [
        chat("q", " ".join(a), id="a"),
        chat("Q", " ".join(a).upper(), id="a-exact"),
        chat("q", " ".join(near), id="a-near"),
        chat("q", " ".join(b), id="b"),
    ]
    path = tmp_path / "in.jsonl"
    write_table(from_dicts(rows).with_columns(score=pl.Series([1, 2, 3, 0])), path)
    return path


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, ["dedup", *args], input=input)


def test_help_has_summary_and_example():
    result = run("--help")
    assert result.exit_code == 0
    assert "Drop exact and near-duplicate records." in result.output
    assert "Example:" in result.output
    assert "sftdata convert raw.json | sftdata dedup" in result.output


def test_kept_rows_on_stdout_summary_on_stderr(records_file, tmp_path):
    dupes = tmp_path / "dupes.jsonl"
    result = run(str(records_file), "--dupes", str(dupes))
    assert result.exit_code == 0, result.stderr
    kept = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert kept == ["a", "b"]
    assert result.stderr.splitlines() == [
        f"dedup {records_file}: 4 in, 2 kept, 2 dropped (exact 1, near 1) in 1 clusters",
        "near: 15 bands x 8 rows for threshold 0.8 (128 permutations; a pair at Jaccard 0.85 "
        "is a candidate with probability 0.992), 1 candidate pairs, 0 rejected by exact "
        "Jaccard below 0.8",
        f"dropped records written to {dupes}",
    ]
    dropped = pl.read_ndjson(dupes)
    assert dropped.select("id", "cluster_id", "kept_id", "reason").rows() == [
        ("a-exact", 0, "a", "exact"),
        ("a-near", 0, "a", "near"),
    ]
    assert dropped["similarity"][0] == 1.0 and 0.8 < dropped["similarity"][1] < 1.0


def test_stdin_to_parquet_with_keep_column(records_file, tmp_path):
    out = tmp_path / "kept.parquet"
    result = run("--keep", "score", "-o", str(out), input=records_file.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert pl.read_parquet(out)["id"].to_list() == ["a-near", "b"]  # highest score wins
    assert result.stdout == ""


def test_output_is_idempotent_and_deterministic(records_file):
    first = run(str(records_file))
    again = run(str(records_file))
    assert first.stdout == again.stdout
    second = run(input=first.stdout_bytes)
    assert second.exit_code == 0
    assert second.stdout == first.stdout
    assert "0 dropped" in second.stderr


def test_verify_is_the_default_and_still_accepted(records_file):
    plain = run(str(records_file))
    old = run(str(records_file), "--verify")
    assert old.exit_code == 0 and old.stdout == plain.stdout and old.stderr == plain.stderr
    assert "--verify" not in run("--help").output  # hidden: exact checking is the default


def test_approx_uses_datasketch_banding_and_the_estimate(records_file):
    result = run(str(records_file), "--approx")
    assert result.exit_code == 0, result.stderr
    assert (
        "near: 9 bands x 13 rows for threshold 0.8 (128 permutations; a pair at Jaccard 0.85 "
        "is a candidate with probability 0.686), 1 candidate pairs, 0 rejected by estimated "
        "Jaccard below 0.8"
    ) in result.stderr


def test_approx_and_verify_together_are_a_usage_error(records_file):
    result = run(str(records_file), "--approx", "--verify")
    assert result.exit_code == 2
    assert (
        "--approx and --verify contradict each other; candidates are verified exactly by "
        "default, so drop --verify (or drop --approx)." in result.stderr
    )


def test_candidates_below_the_threshold_are_reported_as_rejected(tmp_path):
    """M13: a candidate pair whose Jaccard is under --threshold is kept and counted."""
    base = words(3, 60)
    other = list(base)
    for p in (10, 30, 50):
        other[p] = "changed"
    path = tmp_path / "in.jsonl"
    write_table(from_dicts([chat("q", " ".join(base), id="a"), chat("q", " ".join(other), id="b")]), path)
    # seed 11: a seed under which this pair shares a band (most seeds give no candidate)
    result = run(str(path), "--mode", "near", "--threshold", "0.7", "--seed", "11", "--approx",
                 "--ngram", "5")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["a", "b"]
    assert "1 candidate pairs, 1 rejected by estimated Jaccard below 0.7" in result.stderr
    exact = run(str(path), "--mode", "near", "--threshold", "0.7", "--seed", "11", "--ngram", "5")
    assert [json.loads(line)["id"] for line in exact.stdout.splitlines()] == ["a", "b"]
    assert "1 rejected by exact Jaccard below 0.7" in exact.stderr


def test_empty_view_warning(tmp_path):
    path = tmp_path / "in.jsonl"
    rows = [{"id": "t", "messages": [{"role": "assistant", "content": "just text"}]}]
    write_table(from_dicts(rows), path)
    result = run(str(path), "--on", "prompt")
    assert result.exit_code == 0
    assert "Warning: 1 records have an empty prompt and were kept without comparison" in result.stderr


def test_near_flags_with_exact_mode_are_a_usage_error(records_file):
    result = run(str(records_file), "--mode", "exact", "--threshold", "0.5", "--verify")
    assert result.exit_code == 2
    assert (
        "--threshold, --verify only apply to near-duplicate detection; "
        "drop them or use --mode near or both." in result.stderr
    )


def test_dupes_and_output_must_differ(records_file, tmp_path):
    out = tmp_path / "x.jsonl"
    result = run(str(records_file), "-o", str(out), "--dupes", str(out))
    assert result.exit_code == 2
    assert f"-o {out} and --dupes {out} name the same file; give them different paths" in result.stderr


def test_dupes_cannot_go_to_stdout(records_file):
    result = run(str(records_file), "--dupes", "-")
    assert result.exit_code == 2
    assert "--dupes needs a file path; stdout carries the kept records." in result.stderr


def test_unknown_keep_column_is_a_usage_error(records_file):
    result = run(str(records_file), "--keep", "quality")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: --keep quality: no such column; use first, longest or a numeric column (score)"
    )


def test_threshold_out_of_range_is_a_usage_error(records_file):
    result = run(str(records_file), "--threshold", "0")
    assert result.exit_code == 2
    assert "Invalid value for '--threshold'" in result.stderr


def test_broken_input_is_a_data_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "messages": []}\n{broken\n')
    result = run(str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}")
    assert result.stdout == ""


def test_missing_file_is_a_usage_error(tmp_path):
    result = run(str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert "nope.jsonl: no such file" in result.stderr
