"""The local engine: every unit read and mapped in this process, one after another.

Row-local commands keep one unit in memory at a time, so a directory input larger than RAM
streams through. Global ops (dedup, ...) read the whole input into one frame, as before.
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
