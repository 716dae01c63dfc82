"""`sftdata validate` through CliRunner: exit codes, exact messages, --report, user suites."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from click.testing import CliRunner

from sftdata.cli import cli
from sftdata.schema import from_dicts

ROOT = Path(__file__).resolve().parents[1]
RECORDS_SUITE = str(ROOT / "schemas" / "records.json")


def _msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def _write(tmp_path: Path, rows: list[dict], name: str = "records.jsonl") -> Path:
    path = tmp_path / name
    from_dicts(rows).write_ndjson(path)
    return path


CLEAN = [
    {"id": "a", "task": "chat", "messages": _msgs(("user", "Hi"), ("assistant", "Hello."))},
    {"id": "b", "task": "classification", "label": "spam",
     "messages": _msgs(("user", "WIN NOW"), ("assistant", "spam"))},
]


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(cli, ["validate", *args], input=input)


def test_help_has_summary_and_pipe_example():
    result = run("--help")
    assert result.exit_code == 0
    assert "Check records against a data contract (Great Expectations suite)." in result.output
    assert "sftdata convert raw.json | sftdata validate" in result.output


def test_clean_file_exits_0_with_summary_on_stderr_only(tmp_path):
    path = _write(tmp_path, CLEAN)
    result = run(str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"validate: {path}: 2 rows, suite records ({RECORDS_SUITE}): 12 of 12 expectations passed\n"
    )


def test_failures_exit_1_listing_each_failed_expectation_with_ids(tmp_path):
    rows = CLEAN + [
        {"id": "a", "messages": _msgs(("user", "again"), ("assistant", "dup id"))},
        {"id": "c", "messages": _msgs(("user", "q"), ("assistant", " "))},
    ]
    stdin = _write(tmp_path, rows).read_bytes()
    report = tmp_path / "out" / "contract.json"
    result = run("--report", str(report), "-", input=stdin)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"validate: <stdin>: 4 rows, suite records ({RECORDS_SUITE}): 10 of 12 expectations passed"
    )
    assert lines[1:] == [
        "FAILED expect_column_values_to_be_unique(column='id')",
        "  ids are unique",
        "  2 rows (50.0%): ids a (row 1), a (row 3)",
        "FAILED expect_column_values_to_be_in_set(column='n_empty_assistant', value_set=[0])",
        "  no empty assistant turn",
        "  1 row (25.0%): ids c (row 4)",
        "Error: 2 of 12 expectations failed in suite records",
    ]
    data = json.loads(report.read_text())
    assert (data["suite"], data["rows"], data["success"], data["failed"]) == ("records", 4, False, 2)
    failed = [r for r in data["results"] if not r["success"]]
    assert [(r["description"], r["offending_ids"]) for r in failed] == [
        ("ids are unique", ["a", "a"]), ("no empty assistant turn", ["c"]),
    ]


def test_unknown_suite_name_is_a_usage_error(tmp_path):
    result = run("--suite", "nosuch", str(_write(tmp_path, CLEAN)))
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --suite nosuch: no such suite; use records or tokenized or a path to a JSON suite\n"
    )


def test_missing_input_file_is_a_usage_error(tmp_path):
    result = run(str(tmp_path / "absent.jsonl"))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path / 'absent.jsonl'}: no such file\n"


def test_user_suite_with_unknown_expectation_type_is_an_error(tmp_path):
    suite = tmp_path / "mine.json"
    suite.write_text(json.dumps({"name": "mine", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
        {"type": "expect_column_to_be_lovely", "kwargs": {"column": "id"}},
    ]}))
    result = run("--suite", str(suite), str(_write(tmp_path, CLEAN)))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {suite}: expectation #2 (expect_column_to_be_lovely): unknown expectation type. "
        "Fix: use an expectation type GX 1.x knows with its documented kwargs (see docs/contracts.md)\n"
    )


def test_user_suite_runs_on_the_view(tmp_path):
    suite = tmp_path / "sources.json"
    suite.write_text(json.dumps({"name": "sources", "expectations": [
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "source", "value_set": ["alpaca"]},
         "meta": {"description": "only alpaca data"}},
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "n_messages", "max_value": 2}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1000},
         "meta": {"description": "at least 1,000 records"}},
    ]}))
    rows = [{**r, "source": s} for r, s in zip(CLEAN, ["alpaca", "scraped"], strict=True)]
    result = run("--suite", str(suite), str(_write(tmp_path, rows)))
    assert result.exit_code == 1
    assert "suite sources" in result.stderr
    assert "  only alpaca data\n  1 row (50.0%): ids b (row 2)\n" in result.stderr
    assert "  at least 1,000 records\n  observed: 2\n" in result.stderr  # table-level: no ids
    assert result.stderr.endswith("Error: 2 of 3 expectations failed in suite sources\n")


def test_input_that_is_not_records_is_a_data_error(tmp_path):
    path = tmp_path / "raw.parquet"
    pl.DataFrame({"instruction": ["x"], "output": ["y"]}).write_parquet(path)
    result = run(str(path))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {path}: not a record table: missing column(s) id, messages. "
        "Fix: run it through `sftdata convert` first\n"
    )
