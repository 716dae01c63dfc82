"""Parquet written by Polars' streaming sink from frames handed over one at a time.

pyarrow's ParquetWriter encodes and compresses a row group on the calling thread only; for a
text-heavy table that one thread was the slowest stage of `convert`. Polars' streaming sink
encodes row groups on its thread pool and spends less CPU doing it (docs/bench/convert.md), so
batches are fed to it through a small queue from a Python generator registered as an IO source.
"""

from __future__ import annotations

import errno
import queue
import threading
from typing import IO, Any

import polars as pl

_DONE = object()
_ABORT = object()
COMPRESSION_LEVEL = 1  # zstd 1: what pyarrow wrote before; level 3 costs 45% more CPU for 10% less


# Null counts only: min/max of conversation text help no reader and cost 10% of the write.
_STATISTICS = {"min": False, "max": False, "distinct_count": False, "null_count": True}


class SinkAborted(RuntimeError):
    """Raised inside the sink when the writer is closed after an error: no file is finished."""


class ParquetSink:
    """``write`` frames (all of one schema, the first fixes it), then ``close``."""

    def __init__(self, fh: IO[bytes], depth: int = 2) -> None:
        self._fh = fh
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._schema: pl.Schema | None = None
        self._error: BaseException | None = None

    def write(self, df: pl.DataFrame) -> None:
        if self._thread is None:
            self._start(df.schema)
        elif df.schema != self._schema:
            df = df.cast(dict(self._schema))
        self._put(df)

    def close(self, ok: bool = True) -> None:
        if self._thread is None:
            return
        self._put(_DONE if ok else _ABORT, check=False)
        self._thread.join()
        if ok and self._error is not None:
            raise self._error

    def _start(self, schema: pl.Schema) -> None:
        from polars.io.plugins import register_io_source

        self._schema = schema
        frames = register_io_source(self._frames, schema=dict(schema), is_pure=False)
        self._thread = threading.Thread(target=self._sink, args=(frames,), name="sftdata-parquet",
                                        daemon=True)
        self._thread.start()

    def _frames(self, *_: Any) -> Any:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if item is _ABORT:
                raise SinkAborted("the output is being discarded")
            yield item

    def _sink(self, frames: pl.LazyFrame) -> None:
        try:
            frames.sink_parquet(self._fh, compression="zstd", compression_level=COMPRESSION_LEVEL,
                                statistics=_STATISTICS)
        except BaseException as exc:  # raised by the next write or by close
            self._error = _as_broken_pipe(exc)
            _drain(self._queue)

    def _put(self, item: Any, check: bool = True) -> None:
        while True:
            if check and self._error is not None:
                raise self._error
            if not self._thread.is_alive():
                if check and self._error is not None:
                    raise self._error
                return  # the sink ended: nothing reads the queue any more
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def _as_broken_pipe(exc: BaseException) -> BaseException:
    """Polars reports a closed downstream pipe as a ComputeError; the CLI exits quietly (code 0)
    on BrokenPipeError, as `sftdata convert big.jsonl --to parquet | head -c 100` should."""
    text = str(exc)
    if not isinstance(exc, BrokenPipeError) and ("Broken pipe" in text or "os error 32" in text):
        return BrokenPipeError(errno.EPIPE, "Broken pipe")
    return exc


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
