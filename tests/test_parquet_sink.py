"""Parquet through Polars' streaming sink: order, schema, abort and errors."""

from __future__ import annotations

import io

import polars as pl
import pytest

from sftdata.io import TableWriter
from sftdata.parquet_sink import ParquetSink


def test_frames_arrive_in_order_and_round_trip(tmp_path):
    frames = [pl.DataFrame({"id": [f"r{i}-{j}" for j in range(i + 1)], "n": [i] * (i + 1)})
              for i in range(20)]
    with TableWriter(tmp_path / "out.parquet") as writer:
        for frame in frames:
            writer.write(frame)
    assert pl.read_parquet(tmp_path / "out.parquet").equals(pl.concat(frames))


def test_later_frames_are_cast_to_the_first_schema():
    buffer = io.BytesIO()
    sink = ParquetSink(buffer)
    sink.write(pl.DataFrame({"a": ["x"], "b": [1.5]}))
    sink.write(pl.DataFrame({"a": [None], "b": [2]}))  # Null and Int64 columns
    sink.close()
    buffer.seek(0)
    back = pl.read_parquet(buffer)
    assert back.schema == pl.Schema({"a": pl.String, "b": pl.Float64})
    assert back.to_dicts() == [{"a": "x", "b": 1.5}, {"a": None, "b": 2.0}]


def test_an_aborted_write_leaves_no_file(tmp_path):
    writer = TableWriter(tmp_path / "out.parquet")
    writer.write(pl.DataFrame({"a": ["x"]}))
    writer.write(pl.DataFrame({"a": ["y"]}))
    writer.close(ok=False)
    assert list(tmp_path.iterdir()) == []


class FailingFile(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(28, "No space left on device")


def test_a_failing_output_is_raised_not_swallowed():
    sink = ParquetSink(FailingFile())
    with pytest.raises(Exception, match="No space left"):
        for _ in range(50):  # the error surfaces at a later write or at close
            sink.write(pl.DataFrame({"a": ["x" * 1000] * 1000}))
        sink.close()


def test_an_empty_output_is_a_valid_file_with_the_record_schema(tmp_path):
    TableWriter(tmp_path / "empty.parquet").close()
    back = pl.read_parquet(tmp_path / "empty.parquet")
    assert back.height == 0 and back.columns[:2] == ["id", "messages"]
