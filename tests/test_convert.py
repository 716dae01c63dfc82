"""sftdata.ops.convert: counts, rejects, mapping and detection over rows in memory."""

from __future__ import annotations

import polars as pl
import pytest

from sftdata.errors import DataError, UsageProblem
from sftdata.io import InputBatch, RawRow
from sftdata.ops.convert import Converter, convert, summary
from sftdata.schema import RECORD_SCHEMA


def test_convert_detects_and_counts():
    result = convert([{"instruction": "a", "input": "", "output": "b"}] * 2, source="mem")
    assert result.fmt == "alpaca"
    assert result.records.schema == pl.Schema(RECORD_SCHEMA)
    assert (result.rows_in, result.rows_rejected, result.records.height) == (2, 0, 2)
    assert result.summary() == "2 rows in = 2 records out + 0 rejected (alpaca)"


def test_bad_row_raises_with_row_number_by_default():
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "a"}]
    with pytest.raises(DataError) as err:
        convert(rows, source="mem")
    assert str(err.value) == (
        "mem, row 2: field 'output': missing (alpaca rows need it). Fix: add it, map a column "
        "with --map output=COLUMN, or force another format with --from")


def test_keep_going_collects_rejects_and_counts_add_up():
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": ""},
            {"instruction": "c", "output": "d"}]
    result = convert(rows, source="mem", keep_going=True)
    assert (result.rows_in, result.records.height, result.rows_rejected) == (3, 2, 1)
    (reject,) = result.rejects.to_dicts()
    assert reject["row"] == 2 and reject["file"] == "mem"
    assert reject["reason"] == "field 'output': empty assistant turn"
    assert reject["original"] == '{"instruction": "a", "output": ""}'


def test_mapping_renames_source_columns():
    rows = [{"question": "Boiling point of water?", "answer": "100 C"}]
    result = convert(rows, mapping={"instruction": "question", "output": "answer"})
    assert result.fmt == "alpaca"
    assert result.records["messages"][0][1]["content"] == "100 C"


def test_mapping_of_a_missing_column_is_a_usage_problem():
    with pytest.raises(UsageProblem, match="--map: column 'body' is not in memory"):
        convert([{"text": "a"}], mapping={"text": "body"})


def test_forced_format_and_unknown_format():
    with pytest.raises(UsageProblem, match="unknown format 'csvish'"):
        convert([{"text": "a"}], fmt="csvish")
    result = convert([{"text": "a", "label": "x"}], fmt="text")
    assert result.records["task"].to_list() == ["text"]


def test_undetectable_rows_are_refused_with_the_reason():
    with pytest.raises(DataError, match="already tokenized data"):
        convert([{"input_ids": [1], "attention_mask": [1], "labels": [1]}])


def test_frame_input_uses_the_same_conversion():
    frame = pl.DataFrame({"instruction": ["a", "b"], "output": ["x", "y"]})
    from_frame = convert(frame).records
    from_rows = convert(frame.to_dicts()).records
    assert from_frame.equals(from_rows)


def test_flat_oasst_orphans_are_rejected_at_finish():
    rows = [
        {"message_id": "a", "parent_id": None, "text": "Q", "role": "prompter"},
        {"message_id": "b", "parent_id": "a", "text": "A", "role": "assistant"},
        {"message_id": "z", "parent_id": "nowhere", "text": "?", "role": "assistant"},
    ]
    result = convert(rows, keep_going=True)
    assert (result.rows_in, result.rows_rejected, result.records.height) == (3, 1, 1)
    assert result.rejects["reason"].to_list() == [
        "field 'parent_id': its parent message 'nowhere' is not in the file"]


def test_converter_streams_batches_and_parse_errors_become_rejects():
    conv = Converter("f.jsonl", keep_going=True)
    err = DataError("broken JSON (x at column 3)", file="f.jsonl", line=2)
    good = RawRow({"text": "hello"}, line=1, raw=b'{"text": "hello"}')
    bad = RawRow(None, line=2, raw=b'{"text": ', error=err)
    part = conv.feed(InputBatch(None, good, lambda: [good, bad]))
    assert part.records.height == 1
    assert part.rejects.select("line", "reason", "original").to_dicts() == [
        {"line": 2, "reason": "broken JSON (x at column 3)", "original": '{"text": '}]
    assert conv.summary() == "2 rows in = 1 records out + 1 rejected (text)"


def test_summary_of_expanding_formats():
    assert summary("oasst", 10, 1, 30) == (
        "10 rows in = 9 converted + 1 rejected; the converted rows gave 30 records (oasst)")
