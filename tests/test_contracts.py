"""The contract view (Polars) and suite loading: no GX validation run except where noted."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from sftdata import contracts
from sftdata.contracts import Suite, build_gx_suite, contract_view, load_suite
from sftdata.errors import DataError, UsageProblem
from sftdata.schema import from_dicts, json_schema

ROOT = Path(__file__).resolve().parents[1]


def _msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_record_schema_file_equals_json_schema_function():
    path = ROOT / "schemas" / "record.schema.json"
    assert json.loads(path.read_text(encoding="utf-8")) == json_schema()


def test_view_flattens_conversation_shape():
    df = from_dicts([
        {"id": "r1", "task": "chat", "source": "s", "label": "x",
         "messages": _msgs(("system", "be nice"), ("user", "hi"), ("assistant", "hello there"))},
        {"id": "r2", "messages": _msgs(("assistant", "  "), ("user", "q"))},
    ])
    view = contract_view(df)
    assert list(view.columns[:5]) == ["row", "id", "source", "task", "label"]
    first, second = view.row(0, named=True), view.row(1, named=True)
    assert first["roles"] == "system,user,assistant"
    assert (first["first_role"], first["last_role"]) == ("user", "assistant")
    assert (first["n_messages"], first["n_assistant"], first["n_empty_assistant"]) == (3, 1, 0)
    # system turns do not count toward the minimum; every turn counts toward the maximum
    assert (first["min_content_chars"], first["max_content_chars"]) == (2, 11)
    assert (second["first_role"], second["last_role"]) == ("assistant", "user")
    assert second["n_empty_assistant"] == 1
    assert "n_tokens" not in view.columns


def test_assistant_turn_with_tool_calls_is_not_empty():
    df = from_dicts([{"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": '[{"id": "c1"}]'},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        {"role": "assistant", "content": "It is sunny."},
    ]}])
    row = contract_view(df).row(0, named=True)
    assert row["n_empty_assistant"] == 0
    assert row["min_content_chars"] == len("weather?")


def test_content_hash_sees_duplicate_conversations_under_different_ids():
    conv = _msgs(("user", "Hello   World"), ("assistant", "Hi"))
    same_modulo_case = _msgs(("user", "hello world"), ("assistant", "hi"))
    other_role = _msgs(("system", "Hello World"), ("assistant", "Hi"))
    df = from_dicts([
        {"id": "a", "messages": conv},
        {"id": "b", "messages": same_modulo_case},
        {"id": "c", "messages": other_role},
    ])
    hashes = contract_view(df)["content_hash"].to_list()
    assert hashes[0] == hashes[1]
    assert hashes[2] != hashes[0]


def test_token_view_counts_trained_runs_and_eos():
    tok = json.dumps({"backend": "hf", "eos_id": 2})
    df = from_dicts([{"id": str(i), "messages": _msgs(("user", "q"), ("assistant", "a"))}
                     for i in range(3)])
    df = df.with_columns(
        pl.Series("input_ids", [[5, 6, 7, 2], [5, 6, 7, 2], [5, 6, 2]]),
        pl.Series("labels", [[-100, 6, 7, 2], [-100, 6, 7, -100], [-100, -100, -100]]),
        pl.Series("n_tokens", [4, 4, 4], dtype=pl.Int32),
        pl.Series("tokenizer", [tok, tok, None]),
    )
    view = contract_view(df)
    assert view["n_supervised"].to_list() == [3, 2, 0]
    assert view["n_trained_turns"].to_list() == [1, 1, 0]
    assert view["eot_trained"].to_list() == [True, False, None]
    assert view["lengths_consistent"].to_list() == [True, True, False]


def test_builtin_suites_load_and_name_known_view_columns():
    for name in contracts.BUILTIN_SUITES:
        suite = load_suite(name)
        assert suite.expectations, name
        for exp in suite.expectations:
            assert exp["meta"]["description"], exp
            for column in contracts.columns_named(exp["kwargs"]):
                assert column in contracts.VIEW_COLUMNS, (name, column)


def test_records_suite_role_regex_matches_schema_roles():
    suite = load_suite("records")
    [regex] = [e["kwargs"]["regex"] for e in suite.expectations if e["kwargs"].get("column") == "roles"]
    assert regex == contracts.valid_roles_regex()


def test_unknown_suite_name_is_a_usage_problem():
    with pytest.raises(UsageProblem, match="--suite nope: no such suite"):
        load_suite("nope")


@pytest.mark.parametrize(
    "doc, message",
    [
        ("{not json", "broken JSON"),
        ('{"expectations": 3}', "not a suite"),
        ('{"expectations": [{"kwargs": {}}]}', "expectation #1 has no 'type'"),
        ('{"expectations": [{"type": "expect_x", "kwargs": []}]}', "'kwargs' must be an object"),
    ],
)
def test_malformed_suite_files_name_the_file(tmp_path, doc, message):
    path = tmp_path / "mine.json"
    path.write_text(doc)
    with pytest.raises(DataError, match=message) as err:
        load_suite(str(path))
    assert str(path) in str(err.value)


def test_unknown_expectation_type_is_an_error_not_a_silent_drop(tmp_path):
    suite = Suite("mine", str(tmp_path / "mine.json"), [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
        {"type": "expect_column_values_to_be_purple", "kwargs": {"column": "id"}},
    ])
    with pytest.raises(DataError) as err:
        build_gx_suite(suite)
    assert str(err.value).startswith(
        f"{tmp_path / 'mine.json'}: expectation #2 (expect_column_values_to_be_purple): "
        "unknown expectation type"
    )


def test_bad_kwargs_are_an_error_naming_the_expectation(tmp_path):
    suite = Suite("mine", "mine.json", [
        {"type": "expect_column_values_to_be_between", "kwargs": {"colum": "n_messages", "min_value": 1}},
    ])
    with pytest.raises(DataError, match=r"mine.json: expectation #1 \(expect_column_values_to_be_between\): bad kwargs"):
        build_gx_suite(suite)


def test_every_builtin_expectation_builds_in_gx():
    for name in contracts.BUILTIN_SUITES:
        suite = load_suite(name)
        assert len(build_gx_suite(suite).expectations) == len(suite.expectations)
