"""read_records on hand-written JSONL: missing optional columns are fine, missing id/messages are not."""

from __future__ import annotations

import pytest

from sftdata.errors import DataError
from sftdata.io import read_records
from sftdata.schema import RECORD_COLUMNS


def test_minimal_jsonl_record_reads_with_every_column(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id":"a","messages":[{"role":"user","content":"hi"}]}\n')
    df = read_records(path)
    assert df.columns[: len(RECORD_COLUMNS)] == list(RECORD_COLUMNS)
    assert df["messages"][0][0]["content"] == "hi"
    assert df["source"].to_list() == [None]


def test_not_a_record_table_says_to_convert(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"instruction":"x","output":"y"}\n')
    with pytest.raises(DataError, match="missing column\\(s\\) id, messages.*sftdata convert"):
        read_records(path)


def test_broken_line_is_named(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id":"a","messages":[]}\n{"id": \n')
    with pytest.raises(DataError, match="line 2: broken JSON"):
        read_records(path)


def test_arrow_ipc_file_input(tmp_path):
    import polars as pl

    path = tmp_path / "r.arrow"
    pl.DataFrame({"id": ["a"], "messages": [[{"role": "user", "content": "x"}]]}).write_ipc(path)
    assert read_records(path)["id"].to_list() == ["a"]


def test_named_pipe_input_is_read_once_like_stdin(tmp_path):
    import os
    import threading

    fifo = tmp_path / "records.fifo"
    os.mkfifo(fifo)
    line = '{"id":"a","messages":[{"role":"user","content":"hi"}]}\n'
    writer = threading.Thread(target=lambda: fifo.write_text(line * 3))
    writer.start()
    df = read_records(fifo)
    writer.join()
    assert df["id"].to_list() == ["a", "a", "a"]


def test_batches_with_different_inferred_types_are_joined(tmp_path, monkeypatch):
    import json

    import sftdata.io

    monkeypatch.setattr(sftdata.io, "BATCH_BYTES", 4096)  # many batches
    rows = [{"id": str(i), "messages": [{"role": "user", "content": "x" * 50}]} for i in range(500)]
    rows.append({"id": "w", "messages": [{"role": "user", "content": "y", "weight": 0.5}], "label": 1})
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = read_records(path)
    assert df.height == 501
    assert df["messages"][500][0]["weight"] == 0.5
    assert df["label"].to_list()[-2:] == [None, "1"]
