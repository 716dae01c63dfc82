"""sftdata.io: sniffing, readers, batching, CoNLL, atomic and streaming writers."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import polars as pl
import pytest

from sftdata.errors import DataError, UsageProblem
from sftdata.io import (
    BackgroundWriter,
    TableWriter,
    atomic_path,
    iter_conll_rows,
    iter_input_batches,
    iter_jsonl_chunks,
    open_source,
    output_format,
    prefetch,
    read_records,
    read_table,
    sniff_format,
    write_json,
    write_table,
)
from sftdata.schema import from_dicts

RAW = Path(__file__).resolve().parents[1] / "fixtures" / "raw"


@pytest.mark.parametrize(
    ("name", "head", "fmt"),
    [
        ("x.bin", b"PAR1\x15\x04", "parquet"),
        ("x.bin", b"ARROW1\x00\x00", "arrow"),
        ("x.bin", b"\xff\xff\xff\xff\x10\x00", "arrow"),
        ("x.json", b'  [{"a": 1}]', "json"),
        ("x.json", b'{\n  "a": 1\n}', "json"),
        ("x.json", b'{"a": 1}\n{"a": 2}\n', "jsonl"),
        ("x", b'\xef\xbb\xbf{"a": 1}\n', "jsonl"),
        ("x.txt", b'"a prompt"\n"another"\n', "jsonl"),
        ("x", b"-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n", "conll"),
        ("x.csv", b"text,label\n", "csv"),
        ("x.tsv", b"text\tlabel\n", "tsv"),
        ("x.conll", b"EU B-ORG\n", "conll"),
        ("x.txt", b"EU NNP B-ORG\n", "conll"),
        ("x", b"text,label\n", "csv"),
        ("x", b"", "jsonl"),
    ],
)
def test_sniff_format(name, head, fmt):
    assert sniff_format(Path(name), head) == fmt


def test_open_source_refuses_missing_paths_and_directories(tmp_path):
    with pytest.raises(UsageProblem, match="no such file"):
        open_source(tmp_path / "nope.jsonl")
    with pytest.raises(UsageProblem, match="is a directory"):
        open_source(tmp_path)


def test_jsonl_chunks_keep_line_numbers_across_batches():
    data = b"".join(b'{"n": %d}\n' % i for i in range(1, 101))
    from sftdata.io import Source

    source = Source("mem", "jsonl", None, data)
    chunks = list(iter_jsonl_chunks(source, batch_bytes=64))
    assert len(chunks) > 5
    for first_line, chunk in chunks:
        assert chunk.split(b"\n")[0] == b'{"n": %d}' % first_line


def test_input_batches_give_frames_and_rows_with_lines():
    from sftdata.io import Source

    data = b'{"a": "x"}\n\n{"a": "y"}\n{"a": \n'
    batches = list(iter_input_batches(Source("mem", "jsonl", None, data)))
    (batch,) = batches
    assert batch.frame is None  # Polars refused the broken line: rows carry the error
    rows = batch.rows()
    assert [r.line for r in rows] == [1, 3, 4]
    assert rows[2].error is not None and rows[2].error.line == 4
    good = list(iter_input_batches(Source("mem", "jsonl", None, data[:23])))[0]
    assert good.frame.to_dicts() == [{"a": "x"}, {"a": "y"}]


def test_json_array_and_csv_batches_number_rows(tmp_path):
    batches = list(iter_input_batches(open_source(RAW / "alpaca.json"), batch_rows=2))
    assert [[r.row for r in b.rows()] for b in batches] == [[1, 2], [3]]
    (batch,) = iter_input_batches(open_source(RAW / "classification.csv"))
    assert batch.frame.columns == ["text", "label"]
    assert [r.row for r in batch.rows()] == [1, 2, 3]


def test_parquet_input_is_read_in_batches(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"text": [f"t{i}" for i in range(10)]}).write_parquet(path, row_group_size=3)
    batches = list(iter_input_batches(open_source(path), batch_rows=4))
    assert sum(b.frame.height for b in batches) == 10
    assert batches[-1].rows()[-1].row == 10


def test_conll_rows():
    rows = list(iter_conll_rows(open_source(RAW / "ner.conll")))
    assert [r.line for r in rows] == [3, 9, 14]
    assert rows[0].value["tokens"] == ["EU", "rejects", "German", "call", "."]
    assert rows[0].value["tags"] == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert rows[0].value["columns"][0] == ["NNP", "VBZ", "JJ", "NN", "."]
    assert [r.value["doc"] for r in rows] == [1, 1, 2]


def test_conll_line_without_a_tag_is_an_error(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU B-ORG\nrejects\n")
    (row,) = iter_conll_rows(open_source(path))
    assert str(row.error) == (
        f"{path}, line 2: field 'tag': a token line needs at least two columns (token ... tag). "
        "Fix: separate token and tag by whitespace; one token per line")


def test_read_table_broken_json_array_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"a": 1},\n  {"a": 2\n]\n')
    with pytest.raises(DataError, match=r"bad.json, line 4: broken JSON"):
        read_table(open_source(path))


def test_output_format_rules():
    assert output_format("-", None) == "jsonl"
    assert output_format("x.parquet", None) == "parquet"
    assert output_format("x.arrow", None) == "arrow"
    assert output_format("x.out", "jsonl") == "jsonl"
    with pytest.raises(UsageProblem, match="the name says parquet but --to says jsonl"):
        output_format("x.parquet", "jsonl")  # L15: JSONL under a .parquet name
    with pytest.raises(UsageProblem, match="cannot write csv"):
        output_format("x.csv", None)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "t.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    write_json({"b": 1, "a": 2}, target)
    assert target.read_text() == '{\n  "b": 1,\n  "a": 2\n}\n'


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "arrow"])
def test_table_writer_is_atomic_and_batches_concatenate(tmp_path, fmt):
    target = tmp_path / f"out.{fmt}"
    records = from_dicts([{"messages": [{"role": "user", "content": str(i)}]} for i in range(5)])
    with TableWriter(target) as w:
        w.write(records.slice(0, 2))
        assert not target.exists()  # only the temporary file exists while writing
        w.write(records.slice(2, 3))
    assert read_records(target).equals(records)
    with pytest.raises(RuntimeError), TableWriter(target) as w:
        w.write(records)
        raise RuntimeError
    assert read_records(target).equals(records)  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_empty_parquet_output_still_has_the_record_schema(tmp_path):
    target = tmp_path / "empty.parquet"
    with TableWriter(target):
        pass
    assert read_records(target).height == 0


def test_background_writer_propagates_errors_and_discards_the_file(tmp_path):
    target = tmp_path / "out.parquet"
    good = pl.DataFrame({"a": [1]})
    with pytest.raises(Exception), BackgroundWriter(TableWriter(target)) as w:  # noqa: B017
        w.write(good)
        w.write(pl.DataFrame({"b": ["not castable"]}))
        w.write(good)
    assert not target.exists()


def test_prefetch_keeps_order_and_reraises_in_the_consumer():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"):
        for item in prefetch(broken()):
            got.append(item)
    assert got == [1]
    assert threading.active_count() < 20


def test_write_table_to_stdout_buffer(monkeypatch):
    buf = io.BytesIO()

    class Out:
        buffer = buf

    monkeypatch.setattr("sys.stdout", Out())
    write_table(pl.DataFrame({"a": [1, 2]}), "-")
    assert buf.getvalue() == b'{"a":1}\n{"a":2}\n'


def test_stdin_source_is_streamed_after_the_sniffed_head(monkeypatch):
    data = b"".join(b'{"n": %d}\n' % i for i in range(2000))

    class Stdin:
        buffer = io.BytesIO(data)

    monkeypatch.setattr("sys.stdin", Stdin())
    source = open_source("-")
    assert source.fmt == "jsonl" and len(source.data) == 4096  # only the head is in memory
    with source.open() as fh:
        assert fh.read() == data
    assert source.open().read() == b""  # a pipe is read once


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b'{\n  "conversations": []\n}\n', "json"),  # a pretty-printed object on stdin
        (b'{"a": 1}\n{"a": 2}\n', "jsonl"),
        (b'{"a": "' + b"x" * 5000, "jsonl"),  # a first line longer than the sniffed head
    ],
)
def test_sniff_stdin_objects(head, fmt):
    assert sniff_format(None, head[:4096]) == fmt
