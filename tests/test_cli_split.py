"""`sftdata split` through CliRunner: exit codes, messages, files, stdout vs stderr."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import chat

from sftdata.cli import cli
from sftdata.schema import from_dicts


def jsonl(n: int, **columns) -> bytes:
    rows = [
        chat(f"q{i}", f"a{i}", id=f"r{i}", **{k: (v(i) if callable(v) else v) for k, v in columns.items()})
        for i in range(n)
    ]
    buf = io.BytesIO()
    from_dicts(rows).write_ndjson(buf)
    return buf.getvalue()


def run(args, data: bytes = b""):
    return CliRunner().invoke(cli, ["split", *args], input=data)


def test_help_has_summary_and_example():
    result = run(["--help"])
    assert result.exit_code == 0
    assert "Assign records to splits, stable as the dataset grows." in result.output
    assert "Example:" in result.output and "sftdata split --ratios" in result.output


def test_stdout_gets_records_with_split_and_stderr_the_report():
    result = run(["--seed", "5"], jsonl(40, label=lambda i: "ab"[i % 2]))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(40)]
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    assert result.stderr.startswith("split 40 records (ratios, per record, seed 5, append-stable):")
    assert "labels a=" in result.stderr


def test_output_dir_writes_one_parquet_per_split(tmp_path):
    out = tmp_path / "splits"
    report = tmp_path / "report.json"
    result = run(["-o", str(out), "--report", str(report)], jsonl(60, group=lambda i: f"g{i % 9}"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["test.parquet", "train.parquet", "val.parquet"]
    total = sum(pl.read_parquet(out / f"{s}.parquet").height for s in ("train", "val", "test"))
    assert total == 60
    data = json.loads(report.read_text())
    assert data["group_by"] == "group"  # the group column is used by default
    assert sum(v["groups"] for v in data["splits"].values()) == 9
    assert result.stdout == ""


def test_to_jsonl_changes_extension(tmp_path):
    result = run(["-o", str(tmp_path / "s"), "--to", "jsonl", "--ratios", "train=0.5,test=0.5"], jsonl(10))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["test.jsonl", "train.jsonl"]


def test_counts_with_rejects(tmp_path):
    rejects = tmp_path / "unselected.jsonl"
    result = run(["--ratios", "train=20,test=5", "--rejects", str(rejects)], jsonl(30))
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 25
    dropped = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(dropped) == 5 and dropped[0]["reason"].startswith("unselected:")
    assert "5 unselected record(s) written to" in result.stderr


def test_unselected_without_rejects_is_reported():
    result = run(["--ratios", "train=20,test=5"], jsonl(30))
    assert result.exit_code == 0
    assert "5 unselected record(s) not written (pass --rejects FILE to keep them)" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ratios", "train=0.5,val=0.6"], "Error: --ratios must add up to 1 (got 1.1)"),
        (["--ratios", "train"], "--ratios expects key=value pairs separated by commas"),
        (["-o", "out.jsonl"], "-o out.jsonl: split writes a directory (one file per split)"),
        (["--stratify", "topic"], "Error: --stratify: no column 'topic' in the input"),
    ],
)
def test_usage_errors_exit_2(args, message):
    result = run(args, jsonl(5))
    assert result.exit_code == 2
    assert message in result.output


def test_small_stratum_warning():
    result = run(["--stratify", "label"], jsonl(20, label=lambda i: "rare" if i == 0 else "common"))
    assert result.exit_code == 0
    assert "Warning: stratum label='rare' has 1 unit(s), fewer than the 3 splits" in result.stderr


def test_bad_input_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "messages": []}\n{broken\n')
    result = run([str(bad)])
    assert result.exit_code == 1
    assert f"Error: {bad}, line 2: broken JSON" in result.output


def test_same_seed_byte_identical(tmp_path):
    data = jsonl(50)
    assert run(["--seed", "9"], data).stdout == run(["--seed", "9"], data).stdout


def test_stale_split_files_are_named(tmp_path):
    out = tmp_path / "s"
    assert run(["-o", str(out)], jsonl(10)).exit_code == 0
    again = run(["-o", str(out), "--ratios", "train=0.5,dev=0.5"], jsonl(10))
    assert again.exit_code == 0
    assert f"Warning: {out}/ also holds test.parquet, val.parquet from an earlier run; left as is" in again.stderr
