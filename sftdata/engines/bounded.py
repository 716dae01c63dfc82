"""Inputs larger than the memory budget, on the local engine: read in units that fit.

A command that would hold its whole input asks :func:`plan_within` first. Parquet (a file or a
dataset of Parquet parts) says its size in its metadata, so the decision comes before any row
is read and the units are whole row groups. A JSONL file (or a dataset of JSONL parts) is judged
by its size on disk; stdin says nothing until read, so it is read in batches while they fit.
JSONL over the budget is spilled, batch by batch, to Parquet files in a scratch directory
(removed on any exit) whose units are then read like any others. Everything else (JSON arrays,
CSV, Arrow files, remote JSONL parts) is read as usual, whatever its size.

Units keep the input's own file name and row numbers, so an error still names the input file
and its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .. import datasets
from ..datasets import Part, Unit

UNIT_SHARE = 8  # one unit's uncompressed bytes: at most this fraction of what is left for units
MIN_UNIT_BYTES = 1 << 20  # the smallest piece (under a budget below the floor)


@dataclass
class Cost:
    """What a command holds besides its units: a fixed floor (interpreter, libraries, writer
    buffers) and bytes per input row (arrays over the whole input); and, read whole, its peak
    per uncompressed input byte."""

    whole_per_byte: float
    floor: int = 0
    per_row: int = 0
    min_unit: int = MIN_UNIT_BYTES
    share: int = UNIT_SHARE  # a piece's input bytes: this fraction of what the floor leaves

    def unit_bytes(self, budget: int, rows: int) -> int:
        return max(self.min_unit, (budget - self.floor - rows * self.per_row) // self.share)

    def minimum(self, rows: int) -> int:
        """The smallest budget the pieces fit in."""
        return self.floor + rows * self.per_row + self.share * self.min_unit


@dataclass
class Within:
    """How to read an input within a budget: its units, and whether they were cut to fit."""

    units: list[Unit]
    streamed: bool  # cut to the budget (or spilled); False: the engine's usual units
    input_bytes: int  # uncompressed bytes (Parquet metadata, file sizes, or JSONL read)
    rows: int  # known for Parquet and for anything read here; 0 when not yet read
    spill: Path | None = None  # the scratch directory the command may spill into too

    def whole(self) -> pl.DataFrame:
        """Every unit as one frame (for an input that fits)."""
        from .local import LocalEngine

        return LocalEngine().read(self.units)


def parquet_size(path: str) -> tuple[int, int, int] | None:
    """(uncompressed bytes, rows, rows of the largest row group) of a Parquet input, or None
    when the input is not all Parquet."""
    if path == "-" or not (datasets.is_dataset(path) or datasets._fmt(path) == "parquet"):
        return None
    parts = datasets.list_parts(path)
    if not parts or any(p.fmt != "parquet" for p in parts):
        return None
    size = rows = largest = 0
    for part in parts:
        meta = datasets._parquet_metadata(part)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            size += group.total_byte_size
            rows += group.num_rows
            largest = max(largest, group.num_rows)
    return size, rows, largest


def plan_within(path: str, budget: int, cost: Cost | float, spill: Path) -> Within:
    """The local engine's units of ``path`` when it fits ``budget`` read whole (``cost``);
    otherwise units of :meth:`Cost.unit_bytes` each (Parquet row groups, or JSONL spilled to
    Parquet in ``spill``). Other formats are read as usual whatever their size."""
    from ..io import open_source

    if not isinstance(cost, Cost):
        cost = Cost(cost)
    bytes_per_byte = cost.whole_per_byte
    unit_bytes = cost.unit_bytes(budget, 0)
    usual = lambda: datasets.plan(path, "local")  # noqa: E731
    sized = parquet_size(path)
    if sized is not None:
        size, rows, largest = sized
        if size * bytes_per_byte <= budget or rows == 0:
            return Within(usual(), False, size, rows)
        unit_bytes = cost.unit_bytes(budget, rows)
        unit_rows = max(1, int(rows * unit_bytes / size) - largest + 1)
        return Within(datasets.units(path, unit_rows), True, size, rows)
    if path == "-":
        source = open_source(path)
        if source.fmt != "jsonl":  # read whole, as before
            from ..io import _conformed, read_table
            from ..schema import empty_frame

            frame = read_table(source)
            frame = _conformed(frame, source.name) if frame.width else empty_frame()
            return Within([Unit(0, None, None, 0, frame)], False, 0, frame.height)
        return _jsonl_within([source], budget, bytes_per_byte, unit_bytes, spill)
    sources = _jsonl_sources(path)
    size = _file_bytes(path)
    if sources is None or size * bytes_per_byte <= budget:
        return Within(usual(), False, size, 0)
    return _jsonl_within(sources, 0, bytes_per_byte, unit_bytes, spill)


def _file_bytes(path: str) -> int:
    import os

    if datasets.is_dataset(path):
        return sum(os.path.getsize(p.path) for p in datasets.list_parts(path) if p.uri is None)
    return os.path.getsize(path)


def _jsonl_sources(path: str) -> list | None:
    """The io.Sources of a local JSONL input (a file or a dataset of JSONL parts), else None."""
    from ..io import open_source

    if datasets.is_dataset(path):
        parts = datasets.list_parts(path)
        if any(p.fmt != "jsonl" or p.uri is not None for p in parts):
            return None
        return [open_source(p.path, "jsonl") for p in parts]
    source = open_source(path)
    return [source] if source.fmt == "jsonl" else None


def _jsonl_within(sources: list, budget: int, bytes_per_byte: float, unit_bytes: int,
                  spill: Path) -> Within:
    """Batches held while they fit the budget; past it, everything goes to Parquet files."""
    from ..io import BATCH_BYTES, _conformed, iter_jsonl_frames
    from ..schema import empty_frame

    batch_bytes = min(BATCH_BYTES, unit_bytes)  # a batch is never more than a unit
    held: list[tuple[str, int, pl.DataFrame]] = []  # (file name, first row, frame)
    units: list[Unit] = []
    size = rows = 0
    spilling = False
    for source in sources:
        row = 0
        for _, raw in iter_jsonl_frames(source, batch_bytes):
            if not raw.width:
                continue
            frame = _conformed(raw, source.name)
            held.append((source.name, row, frame))
            row += frame.height
            rows += frame.height
            size += int(frame.estimated_size())
            spilling = spilling or size * bytes_per_byte > budget
            if spilling:
                _flush(held, units, spill, unit_bytes, final=False)
        if spilling:  # a unit never spans two input files
            _flush(held, units, spill, unit_bytes, final=True)
    if not spilling:  # stdin that fits: the frame read, as one unit
        frames = [f for _, _, f in held]
        whole = pl.concat(frames, how="diagonal_relaxed") if frames else empty_frame()
        return Within([Unit(0, None, None, 0, whole)], False, size, rows)
    return Within(units, True, size, rows)


def _flush(held: list, units: list[Unit], spill: Path, unit_bytes: int, final: bool) -> None:
    """Spill the held batches as units of about ``unit_bytes`` (one input file each); a last
    short run stays held unless ``final``."""
    run: list = []
    run_bytes = 0
    for item in held:
        if run and item[0] != run[0][0]:
            units.append(_spill(run, spill, len(units)))
            run, run_bytes = [], 0
        run.append(item)
        run_bytes += int(item[2].estimated_size())
        if run_bytes >= unit_bytes:
            units.append(_spill(run, spill, len(units)))
            run, run_bytes = [], 0
    if final and run:
        units.append(_spill(run, spill, len(units)))
        run = []
    held[:] = run


def _spill(batches: list[tuple[str, int, pl.DataFrame]], spill: Path, index: int) -> Unit:
    """One unit: batches of one input file written as a Parquet file in the scratch directory."""
    import pyarrow.parquet as pq

    name, first_row = batches[0][0], batches[0][1]
    frame = pl.concat([f for _, _, f in batches], how="diagonal_relaxed")
    path = spill / f"unit-{index:06d}.parquet"
    frame.write_parquet(path, compression="lz4", statistics=False)
    groups = pq.ParquetFile(path).metadata.num_row_groups
    return Unit(index, Part(name, str(path), "parquet"), (0, groups), first_row)


def aligned(frame: pl.DataFrame, columns: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the columns and types of ``columns`` (an empty frame of the union of all
    units' columns), as concatenating every unit would give it."""
    if frame.schema == columns.schema:
        return frame
    return pl.concat([columns, frame], how="diagonal_relaxed")


def union_columns(frames_heads: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames_heads, how="diagonal_relaxed") if frames_heads else pl.DataFrame()
