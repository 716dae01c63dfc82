"""`sftdata balance` through CliRunner: exit codes, exact messages, rejects, report, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from sftdata.cli import cli
from sftdata.schema import from_dicts


def _records(labels: list[str], path: Path) -> Path:
    from_dicts([
        {"id": f"r{i}", "label": value, "source": "s",
         "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i, value in enumerate(labels)
    ]).write_ndjson(path)
    return path


@pytest.fixture
def skewed(tmp_path) -> Path:
    return _records(["a"] * 12 + ["b"] * 4 + ["c"] * 4, tmp_path / "in.jsonl")


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, ["balance", *args], input=input, prog_name="sftdata")


def test_help_has_summary_and_pipe_example():
    result = run("--help")
    assert result.exit_code == 0
    assert "Rebalance records by a class column: caps, target ratios, mixtures." in result.output
    assert "sftdata balance --by label --cap 500" in result.output


def test_cap_writes_records_to_stdout_and_the_report_to_stderr(skewed, tmp_path):
    rejects = tmp_path / "rej.jsonl"
    result = run("--by", "label", "--cap", "3", "--rejects", str(rejects), str(skewed))
    assert result.exit_code == 0, result.stderr
    out = pl.read_ndjson(result.stdout.encode())
    assert out.height == 9
    assert result.stderr.splitlines() == [
        "balance by label (cap 3, seed 0): 20 in -> 9 out (9 kept + 0 copies), 11 dropped",
        "  class  before   after  dropped  copies  share before -> after",
        "  a          12       3        9       0   60.0% -> 33.3%",
        "  b           4       3        1       0   20.0% -> 33.3%",
        "  c           4       3        1       0   20.0% -> 33.3%",
        f"11 dropped record(s) written to {rejects}",
    ]
    dropped = pl.read_ndjson(rejects)
    assert dropped.height == 11
    assert set(dropped["reason"]) == {
        "label=a over --cap 3 (12 records)", "label=b over --cap 3 (4 records)",
        "label=c over --cap 3 (4 records)",
    }
    assert sorted([*out["id"], *dropped["id"]]) == sorted(f"r{i}" for i in range(20))


def test_without_rejects_the_drop_is_still_reported(skewed):
    result = run("--by", "label", "--target", "uniform", str(skewed))
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-1] == (
        "8 dropped record(s) not written (pass --rejects FILE to keep them)"
    )


def test_same_seed_gives_byte_identical_output(skewed, tmp_path):
    args = ["--by", "label", "--target", "a=0.5,b=0.25,c=0.25", "--strategy", "upsample",
            "--total", "30", "--seed", "11"]
    first, second = run(*args, str(skewed)), run(*args, str(skewed))
    assert first.exit_code == second.exit_code == 0
    assert first.stdout_bytes == second.stdout_bytes
    assert run(*args[:-1], "12", str(skewed)).stdout_bytes != first.stdout_bytes


def test_parquet_output_and_json_report(skewed, tmp_path):
    out, report = tmp_path / "out.parquet", tmp_path / "balance.json"
    result = run("--by", "label", "--target", "uniform", "--strategy", "upsample",
                 "--report", str(report), "-o", str(out), str(skewed))
    assert result.exit_code == 0, result.stderr
    frame = pl.read_parquet(out)
    assert frame.height == 36
    data = json.loads(report.read_text())
    assert (data["records_in"], data["records_out"], data["copies"], data["dropped"]) == (20, 36, 16, 0)
    assert data["classes"]["b"] == {
        "before": 4, "after": 12, "kept": 4, "copies": 8, "dropped": 0,
        "share_before": 0.2, "share_after": 0.333333, "target_share": 0.333333,
    }


def test_mix_from_stdin(tmp_path):
    path = _records(["x"] * 10, tmp_path / "a.jsonl")
    frame = pl.read_ndjson(path).with_columns(
        pl.when(pl.int_range(pl.len()) < 2).then(pl.lit("narrow")).otherwise(pl.lit("broad")).alias("source")
    )
    result = run("--by", "source", "--mix", "narrow=0.5,broad=0.5", "-",
                 input=frame.write_ndjson().encode())
    assert result.exit_code == 0, result.stderr
    # all of the small source, as many of the big one, input order kept
    assert pl.read_ndjson(result.stdout.encode())["source"].to_list() == ["narrow", "narrow", "broad", "broad"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--by", "label"], "Error: choose one of --cap, --target, --mix or --temperature.\n"),
        (["--by", "label", "--cap", "3", "--target", "uniform"],
         "Error: --cap cannot be combined with --target, --mix or --temperature.\n"),
        (["--by", "label", "--cap", "3", "--total", "5"],
         "Error: --total needs --target, --mix or --temperature.\n"),
        (["--by", "label", "--target", "uniform", "--total", "30"],
         "Error: --total 30 needs 10 records of label=b but only 4 exist; "
         "use --strategy upsample to allow copies, or a smaller --total.\n"),
        (["--by", "label", "--target", "a=0.5,b"],
         "Usage: sftdata balance [OPTIONS] [INPUT]\nTry 'sftdata balance --help' for help.\n\n"
         "Error: --target expects key=value pairs separated by commas, got 'b'\n"),
        (["--by", "nolabel", "--cap", "2"],
         "Error: --by nolabel: no such column; the input has: "
         "id, messages, source, task, label, group, split, meta\n"),
    ],
)
def test_usage_errors_exit_2_with_exact_messages(skewed, args, message):
    result = run(*args, str(skewed))
    assert result.exit_code == 2
    assert result.stderr == message


def test_flag_problems_are_reported_before_reading_input(tmp_path):
    result = run("--by", "label", str(tmp_path / "absent.jsonl"))
    assert result.exit_code == 2
    assert result.stderr == "Error: choose one of --cap, --target, --mix or --temperature.\n"
