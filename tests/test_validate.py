"""validate(): contracts run through Great Expectations on the contract view.

GX is slow to import, so this file keeps the number of validation runs small: one run checks
every broken property at once, each broken record breaking exactly one expectation.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from sftdata import contracts
from sftdata.contracts import Suite
from sftdata.errors import DataError
from sftdata.ops.validate import validate
from sftdata.schema import RECORD_SCHEMA, from_dicts


def _msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def clean_rows() -> list[dict]:
    return [
        {"id": "c0", "task": "chat", "source": "t",
         "messages": _msgs(("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello."))},
        {"id": "c1", "task": "qa",
         "messages": _msgs(("user", "2+2?"), ("assistant", "4"), ("user", "3+3?"), ("assistant", "6"))},
        {"id": "c2", "task": "classification", "label": "positive",
         "messages": _msgs(("user", "Great film. Sentiment?"), ("assistant", "positive"))},
        {"id": "c3", "task": "text", "messages": _msgs(("assistant", "Plain pretraining text."))},
        {"id": "c4", "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": '[{"id": "k1"}]'},
            {"role": "tool", "content": "sunny", "tool_call_id": "k1"},
            {"role": "assistant", "content": "Sunny."},
        ]},
    ]


# id -> (the record, the description of the one expectation it breaks)
BROKEN = {
    "dup-conv": ({"messages": _msgs(("user", "2+2?"), ("assistant", "4"), ("user", "3+3?"), ("assistant", "6"))},
                 "no two records hold the same conversation"),
    "bad-role": ({"messages": _msgs(("user", "hi"), ("bot", "beep"), ("assistant", "ok"))},
                 "roles are system, user, assistant or tool"),
    "starts-assistant": ({"messages": _msgs(("assistant", "Hi!"), ("user", "hey"), ("assistant", "yo"))},
                         "the first non-system turn is the user's"),
    "ends-user": ({"messages": _msgs(("user", "a"), ("assistant", "b"), ("user", "c"))},
                  "the last turn is the assistant's"),
    "blank-answer": ({"messages": _msgs(("user", "why?"), ("assistant", "   "))},
                     "no empty assistant turn"),
    "empty-question": ({"messages": _msgs(("user", ""), ("assistant", "answer"))},
                       "no empty user or assistant text"),
    "too-long": ({"messages": _msgs(("user", "long?"), ("assistant", "x" * 200_001))},
                 "no turn longer than 200,000 characters"),
    "bad-task": ({"task": "poetry", "messages": _msgs(("user", "p"), ("assistant", "q"))},
                 "task is one of the known tasks"),
    "no-label": ({"task": "classification", "messages": _msgs(("user", "Bad film."), ("assistant", "neg"))},
                 "classification records carry a label"),
}


@pytest.fixture(scope="module")
def broken_report():
    rows = clean_rows()
    rows.append({**rows[0], "messages": _msgs(("user", "other"), ("assistant", "thing"))})  # dup id c0
    rows += [{"id": rid, **record} for rid, (record, _) in BROKEN.items()]
    return validate(from_dicts(rows), "records")


def _short(description: str) -> str:
    return description.split(" (")[0]


def test_clean_records_pass_the_records_suite():
    report = validate(from_dicts(clean_rows()), "records")
    assert report.ok, [(o.headline(), o.offending_ids, o.error) for o in report.failed]
    assert report.rows == 5
    assert len(report.outcomes) == len(contracts.load_suite("records").expectations)


def test_each_broken_property_fails_its_expectation_with_offending_ids(broken_report):
    failed = {_short(o.description): o.offending_ids for o in broken_report.failed}
    expected = {_short(why): [rid] for rid, (_, why) in BROKEN.items()}
    expected["no two records hold the same conversation"] = ["c1", "dup-conv"]
    expected["ids are unique"] = ["c0", "c0"]
    assert failed == expected


def test_offending_rows_point_back_into_the_input(broken_report):
    [outcome] = [o for o in broken_report.failed if o.description == "ids are unique"]
    assert outcome.offending_rows == [0, 5]
    assert outcome.unexpected_count == 2


def test_report_dict_is_json_and_counts_failures(broken_report):
    data = json.loads(json.dumps(broken_report.to_dict()))
    assert data["success"] is False
    assert data["failed"] == len(BROKEN) + 1
    assert data["rows"] == 6 + len(BROKEN)


def test_gx_alone_misses_duplicate_messages_that_the_view_catches():
    """Why the contract view exists: GX's uniqueness check on the nested column passes."""
    import great_expectations.expectations as gxe
    from great_expectations.core import ExpectationSuite

    same = _msgs(("user", "hi"), ("assistant", "yo"))
    df = from_dicts([{"id": "a", "messages": same}, {"id": "b", "messages": same}])
    gx_says = contracts.run_gx(
        df.select(pl.int_range(pl.len()).alias("row"), "messages"),
        ExpectationSuite(name="raw", expectations=[
            gxe.ExpectColumnValuesToBeUnique(column="messages", meta={"sftdata_index": 0})
        ]),
    )
    assert gx_says[0].success  # wrong, and the reason for the view
    view_says = contracts.run_gx(
        contracts.contract_view(df),
        ExpectationSuite(name="view", expectations=[
            gxe.ExpectColumnValuesToBeUnique(column="content_hash", meta={"sftdata_index": 0})
        ]),
    )
    assert not view_says[0].success


def _tokenized(rows: list[tuple[list[int], list[int]]], eos: int = 2) -> pl.DataFrame:
    df = from_dicts([{"id": f"t{i}", "messages": _msgs(("user", "q"), ("assistant", "a"))}
                     for i in range(len(rows))])
    tok = json.dumps({"backend": "tiktoken", "name": "test", "eos_id": eos})
    return df.with_columns(
        pl.Series("input_ids", [ids for ids, _ in rows], dtype=pl.List(pl.Int32)),
        pl.Series("labels", [labels for _, labels in rows], dtype=pl.List(pl.Int32)),
        pl.Series("n_tokens", [len(ids) for ids, _ in rows], dtype=pl.Int32),
        pl.Series("n_supervised", [sum(x != -100 for x in labels) for _, labels in rows], dtype=pl.Int32),
        pl.lit(tok).alias("tokenizer"),
    )


def test_tokenized_suite_catches_masked_rows_and_untrained_eos():
    good = ([9, 5, 6, 2, 9, 7, 2], [-100, 5, 6, 2, -100, 7, 2])
    masked = ([9, 5, 6, 2], [-100, -100, -100, -100])
    eos_untrained = ([9, 5, 6, 2], [-100, 5, 6, -100])
    report = validate(_tokenized([good, masked, eos_untrained, good]), "tokenized")
    failed = {o.kwargs.get("column"): o.offending_ids for o in report.failed}
    assert failed == {"n_supervised": ["t1"], "eot_trained": ["t2"]}


def test_tokenized_suite_on_untokenized_records_says_they_are_not_tokenized():
    """One problem, not one 'not in the contract view' error per expectation (L16)."""
    with pytest.raises(DataError, match=r"the input is not tokenized \(no input_ids and labels "
                       r"columns\), and suite tokenized checks tokenize's output \(eot_trained, "
                       r"lengths_consistent, n_supervised, n_tokens\)"):
        validate(from_dicts(clean_rows()), "tokenized")


def test_a_suite_column_missing_from_the_view_is_named():
    suite = Suite("custom", "custom.json", [{"type": "expect_column_values_to_not_be_null",
                                             "kwargs": {"column": "no_such_column"}}])
    report = validate(from_dicts(clean_rows()), suite)
    (failed,) = report.failed
    assert failed.error.startswith("column 'no_such_column' is not in the contract view (it has: row, id,")


def _converted(path) -> pl.DataFrame:
    """Real data through the real `sftdata convert` command (auto-detected format)."""
    from click.testing import CliRunner

    from sftdata.cli import cli

    result = CliRunner().invoke(cli, ["convert", str(path)])
    assert result.exit_code == 0, result.stderr
    return pl.read_ndjson(result.stdout.encode(), schema_overrides=RECORD_SCHEMA)


def _rows_in_duplicate_groups(keys: list[str]) -> list[int]:
    counts = Counter(keys)
    return [i for i, k in enumerate(keys) if counts[k] > 1]


def test_realdata_alpaca_demo_fails_only_on_its_real_duplicates(realdata):
    path = realdata / "datasets" / "alpaca_format" / "llamafactory_alpaca_en_demo.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    dup_rows = _rows_in_duplicate_groups(
        [json.dumps([r["instruction"], r.get("input", ""), r["output"]]) for r in raw]
    )
    assert len(dup_rows) == 27  # the file really holds 14 extra copies of 13 records
    report = validate(_converted(path), "records")
    failed = {o.kwargs["column"]: o.offending_rows for o in report.failed}
    assert failed.pop("content_hash") == dup_rows
    assert set(failed) <= {"id"}  # content-hash ids collide exactly where the content does


def test_realdata_openai_toy_chat_has_duplicates_and_userless_conversations(realdata):
    path = realdata / "datasets" / "messages_format" / "openai_toy_chat_fine_tuning.jsonl"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    userless = [
        i for i, r in enumerate(raw)
        if next(m["role"] for m in r["messages"] if m["role"] != "system") != "user"
    ]
    assert userless  # system prompt followed directly by an assistant turn
    report = validate(_converted(path), "records")
    failed = {o.kwargs["column"]: o.offending_rows for o in report.failed}
    assert failed["first_role"] == userless
    assert failed["content_hash"] == _rows_in_duplicate_groups([json.dumps(r["messages"]) for r in raw])
    assert set(failed) == {"first_role", "content_hash", "id"}


def test_realdata_oasst_trees_pass_the_records_suite(realdata):
    path = realdata / "datasets" / "oasst_trees" / "oasst_en_100_tree.jsonl"
    df = _converted(path)
    assert df.height > 100  # every root-to-leaf path of the 100 trees is a record
    report = validate(df, "records")
    assert report.ok, [(o.headline(), o.offending_ids[:3]) for o in report.failed]


@pytest.mark.slow  # imports the tokenizer stack (transformers): ~8 s CPU on top of GX
def test_realdata_tokenized_contract_catches_untrained_end_of_turn(realdata):
    """convert -> render-template -> tokenize (real commands); --no-train-eot must fail."""
    from click.testing import CliRunner

    from sftdata.cli import cli

    tokenizer = str(Path(__file__).resolve().parents[1] / "fixtures" / "tokenizers" / "tiny-chatml")
    path = realdata / "datasets" / "alpaca_format" / "torchtune_alpaca_tiny.json"
    runner = CliRunner()
    rendered = runner.invoke(cli, ["render-template", "-t", "chatml", "-"],
                             input=runner.invoke(cli, ["convert", str(path)]).stdout_bytes)
    assert rendered.exit_code == 0, rendered.stderr

    def tokenized(*flags: str) -> pl.DataFrame:
        result = runner.invoke(cli, ["tokenize", "-t", tokenizer, *flags, "-"], input=rendered.stdout_bytes)
        assert result.exit_code == 0, result.stderr
        return pl.read_ndjson(result.stdout.encode(), infer_schema_length=None)

    good = tokenized("--train-eot")
    bad = tokenized("--no-train-eot").with_columns(pl.col("id") + "-no-eot")
    report = validate(pl.concat([good, bad], how="diagonal_relaxed"), "tokenized")
    assert [o.kwargs["column"] for o in report.failed] == ["eot_trained"]
    assert report.failed[0].unexpected_count == bad.height == 100
    assert report.failed[0].offending_rows[:3] == [100, 101, 102]


def test_validate_is_a_public_function():
    import sftdata

    assert sftdata.validate is validate
