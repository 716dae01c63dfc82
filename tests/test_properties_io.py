"""Hypothesis properties: record round trips are lossless; convert is idempotent on records."""

from __future__ import annotations

import string

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.io import read_records, write_table
from sftdata.ops.convert import convert
from sftdata.schema import ROLES, TASKS, from_dicts

# Any text, including quotes, backslashes, control characters, line separators and emoji;
# surrogates cannot be encoded as UTF-8 and so cannot be in a file at all.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
SHORT = st.text(string.ascii_letters + string.digits + "-_ ", min_size=1, max_size=12)

MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES), "content": TEXT},
    optional={
        "train": st.booleans(),
        "weight": st.floats(0, 1, allow_nan=False),
        "name": SHORT,
        "tool_calls": st.just('[{"type":"function","function":{"name":"f","arguments":"{}"}}]'),
        "tool_call_id": SHORT,
    },
)
RECORD = st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, min_size=1, max_size=4)},
    optional={
        "id": SHORT,
        "source": SHORT,
        "task": st.sampled_from(TASKS),
        "label": TEXT,
        "group": SHORT,
        "split": st.sampled_from(["train", "val", "test", "gold"]),
        "meta": st.just('{"k":[1,"é"]}'),
    },
)
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(RECORD, max_size=6), st.sampled_from(["jsonl", "parquet", "arrow"]))
def test_round_trip_is_lossless(tmp_path, rows, fmt):
    frame = from_dicts(rows)
    path = tmp_path / f"records.{fmt}"
    write_table(frame, path)
    back = read_records(path)
    assert back.schema == frame.schema
    assert back.to_dicts() == frame.to_dicts()


def _valid(row: dict) -> bool:
    """Rows convert refuses by design (empty assistant turns) are not canonical input."""
    return all(m["role"] != "assistant" or m["content"].strip() or m.get("tool_calls")
               for m in row["messages"])


@SETTINGS
@given(st.lists(RECORD.filter(_valid), min_size=1, max_size=6))
def test_convert_is_idempotent_and_keeps_canonical_records(rows):
    canonical = from_dicts(rows).with_columns(pl.col("source").fill_null("s"))
    once = convert(canonical.to_dicts(), source="p").records
    twice = convert(once.to_dicts(), source="p").records
    assert twice.to_dicts() == once.to_dicts()
    # records that already have every column set pass through unchanged, train flags included
    # wherever no weight says otherwise
    for before, after in zip(canonical.to_dicts(), once.to_dicts(), strict=True):
        assert {k: v for k, v in after.items() if k != "messages"} == {
            k: v for k, v in before.items() if k != "messages"}
        assert [(m["role"], m["content"]) for m in after["messages"]] == [
            (m["role"], m["content"]) for m in before["messages"]]


@SETTINGS
@given(st.lists(RECORD.filter(_valid), min_size=1, max_size=6))
def test_fast_frame_path_equals_row_path_on_canonical_frames(rows):
    frame = from_dicts(rows)
    from_frame = convert(frame, source="p").records
    from_rows = convert(frame.to_dicts(), source="p").records
    assert from_frame.to_dicts() == from_rows.to_dicts()
