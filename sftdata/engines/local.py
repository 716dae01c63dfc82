"""The local engine: every unit read and mapped in this process, one after another.

Row-local commands keep one unit in memory at a time, so a directory input larger than RAM
streams through. Under --memory (engines/bounded.py) a single big Parquet or JSONL file is cut
into units too, and dedup, which needs every row, runs in passes over them
(engines/dedup_bounded.py); pack has its own pieces (pack_pieces below).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import polars as pl

from .. import datasets
from ..errors import DataError


class LocalEngine:
    name = "local"

    def plan(self, path: str) -> list[datasets.Unit]:
        return datasets.plan(path, self.name)

    def map(self, units: list[datasets.Unit], fn: Callable[..., Any], *args: Any) -> Iterator[Any]:
        for unit in units:
            yield run_unit(unit, fn, args)

    def read(self, units: list[datasets.Unit]) -> pl.DataFrame:
        """The whole input as one frame (for ops that need every row at once)."""
        frames = [datasets.read_unit(u) for u in units]
        if len(frames) == 1:
            return frames[0]
        return pl.concat(frames, how="diagonal_relaxed")


def run_unit(unit: datasets.Unit, fn: Callable[..., Any], args: tuple) -> Any:
    """Read a unit and apply ``fn``; an error about one of its rows names the part and row."""
    frame = datasets.read_unit(unit)
    try:
        return fn(frame, unit, *args)
    except DataError as exc:
        raise datasets.rebase(exc, unit) from None


# pack under a memory budget. Peak RSS of packing a whole input, measured at 1M and 3M records
# (bench/bench_pack_scale.py): 23.4 and 22.6 bytes per input token (ids + labels are 8 of them),
# so 24 decides whether it fits. Packing piece by piece (engines/pack.py), 3M records in pieces
# of 40M, 80M and 160M tokens peaked at 2.8, 3.6 and 7.2 GiB: a floor of ~1.5 GiB (the reader's
# buffers, the pool of loose sequences) and up to 48 bytes a token of a piece above it.
PACK_WHOLE_BYTES_PER_TOKEN = 24
PACK_PIECE_BYTES_PER_TOKEN = 48
PACK_PIECE_FLOOR = 3 << 29  # 1.5 GiB


def pack_pieces(path: str, budget: int) -> tuple[list[datasets.Unit] | None, int]:
    """(units of whole row groups sized to ``budget``, or None when the whole input fits or is
    not Parquet; the input's token count from the Parquet metadata, 0 when unknown).

    Only Parquet says its size before it is read: the token count is the ``input_ids`` leaf
    values of every row group. Other inputs are read whole, as before.
    """
    if path == "-" or not (datasets.is_dataset(path) or datasets._fmt(path) == "parquet"):
        return None, 0
    parts = datasets.list_parts(path)
    if any(p.fmt != "parquet" for p in parts):
        return None, 0
    tokens = rows = largest = 0
    for part in parts:
        meta = datasets._parquet_metadata(part)
        leaf = [i for i in range(meta.num_columns)
                if meta.schema.column(i).path.split(".")[0] == "input_ids"]
        if not leaf:  # not tokenized records: pack says so when it reads them
            return None, 0
        rows += meta.num_rows
        largest = max([largest] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        tokens += sum(meta.row_group(g).column(leaf[0]).num_values
                      for g in range(meta.num_row_groups))
    if tokens * PACK_WHOLE_BYTES_PER_TOKEN <= budget or rows == 0:
        return None, tokens
    room = max(budget - PACK_PIECE_FLOOR, budget // 4)
    unit_rows = int(room / PACK_PIECE_BYTES_PER_TOKEN / (tokens / rows))
    # units() closes a unit once it reaches unit_rows: aim lower, so none goes past it
    units = datasets.units(path, max(1, unit_rows - largest + 1))
    if len(units) < 2:  # one row group holds it all: nothing to cut at
        return None, tokens
    for unit in units:
        unit.conform = False
    return units, tokens
