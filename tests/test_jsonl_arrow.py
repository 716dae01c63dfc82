"""The strict JSONL chunk reader behind convert's fast paths: clean chunks become typed frames,
anything the row path would judge differently gives None."""

from __future__ import annotations

import pytest

from sftdata.jsonl_arrow import read_jsonl_frame


def frame_of(chunk: bytes, hint=None):
    return read_jsonl_frame(chunk, hint)[0]


@pytest.mark.parametrize(
    "late",
    [
        b'{"a": "x", "late": "kept"}\n',  # a key first seen after Polars' 100-row inference
        b'{"a": "x", "late": null}\n',  # an explicit null
        b'{"a": "say \\":\\" here", "late": "kept"}\n',  # an escaped quote before a colon
        b'{"a" : "x", "late": "kept"}\n',  # spaces before the colon
    ],
)
def test_keys_first_seen_late_are_kept(late):
    frame = frame_of(b'{"a": "x"}\n' * 150 + late)
    assert frame.columns == ["a", "late"] and frame.height == 151


def test_reads_escapes():
    frame = frame_of(b'{"a": "x:\\"y", "b": "\\u00e9"}\n' * 3)
    assert frame.to_dicts() == [{"a": 'x:"y', "b": "é"}] * 3


@pytest.mark.parametrize(
    "chunk",
    [
        b'{"a": "x"}\n{"a": 7}\n',  # Polars would read the 7 as the string "7"
        b'{"a": "x"}\n{"a": true}\n',
        b'{"a": "x"}\n{"a": {"b": "y"}}\n',
        b'{"a": "x"}\n[1, 2]\n',  # not an object
        b'{"a":\n"x"}\n',  # one object over two lines: the row path calls line 1 broken
        b'{"a": "x"} {"a": "y"}\n',  # two objects on one line
        b'{"a": "caf\xe9"}\n',  # Latin-1, not UTF-8
        b'{"a": "x"}\n{"a": "y"\n',  # broken JSON
    ],
)
def test_chunks_the_row_path_must_judge_give_none(chunk):
    assert frame_of(chunk) is None


def test_date_like_strings_keep_their_spelling():
    frame = frame_of(b'{"d": "2020-01-01", "n": {"t": "2020-01-01 10:00:00"}}\n')
    assert frame.to_dicts() == [{"d": "2020-01-01", "n": {"t": "2020-01-01 10:00:00"}}]


def test_blank_lines_are_skipped():
    assert frame_of(b'{"a": "x"}\n\n   \n{"a": "y"}').to_dicts() == [{"a": "x"}, {"a": "y"}]


def test_a_line_longer_than_a_block_is_read():
    text = "x" * 5_000_000
    frame = frame_of(b'{"a": "' + text.encode() + b'"}\n{"a": "y"}\n')
    assert frame["a"].to_list() == [text, "y"]


def test_the_hint_is_used_and_a_new_key_or_type_falls_back_to_inference():
    first, hint = read_jsonl_frame(b'{"a": "x"}\n')
    assert first.columns == ["a"]
    same, _ = read_jsonl_frame(b'{"a": "y"}\n', hint)
    assert same.to_dicts() == [{"a": "y"}]
    grown, grown_hint = read_jsonl_frame(b'{"a": "y", "b": "z"}\n', hint)
    assert grown.to_dicts() == [{"a": "y", "b": "z"}] and grown_hint.names == ["a", "b"]
    assert read_jsonl_frame(b'{"a": 5}\n', hint)[0]["a"].to_list() == [5]  # consistent within


def test_missing_keys_are_null():
    assert frame_of(b'{"a": "x", "b": "y"}\n{"a": "z"}\n').to_dicts() == [
        {"a": "x", "b": "y"}, {"a": "z", "b": None}]


def test_a_line_that_is_not_an_object_goes_the_row_path():
    """M2: `null` would be a row of nulls (and crashed pyarrow as the first line)."""
    from sftdata.jsonl_arrow import read_jsonl_frame

    for chunk in (b'null\n{"a": "x"}\n', b'{"a": "x"}\nnull\n', b'{"a": "x"}\n  [1]\n',
                  b'{"a": "x"}\n42'):
        assert read_jsonl_frame(chunk) == (None, None)
    frame, _ = read_jsonl_frame(b'{"a": "x"}\n\n  {"a": "y"}\n')
    assert frame.to_dicts() == [{"a": "x"}, {"a": "y"}]
