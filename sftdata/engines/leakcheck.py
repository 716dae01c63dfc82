"""leakcheck over units: the reference side is the index, the training side is scanned in parts.

The references (benchmarks, val/test/gold: the small side) are read here and indexed once
(ops.leakcheck.reference_index); the index goes to every worker with the task, and each unit of
training records is scanned against it (ops.leakcheck.scan, row-local). The findings come back
with their rows shifted to input positions, with the ids of the rows that matched anything and
the texts of near-duplicate candidates, and ops.leakcheck.finish turns them into pairs, verdicts
and the summary as it does for the local engine. The driver holds the findings (a few numbers
per matched n-gram), one 24-byte entry per training row (its text hash and length, which the
frequency rules count), and the ids and candidate texts of matched rows only.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ..ops import leakcheck as op


def _scan_unit(frame: pl.DataFrame, unit: Any, index: op.ReferenceIndex, chunk_rows: int):
    text = frame.select(index.view.alias("text"))["text"]
    found = op.scan(text, index, chunk_rows)
    matched = pl.concat([found[k].select("row") for k in ("exact", "hits", "contained",
                                                           "near_candidates")]).unique()
    ids = frame["id"].cast(pl.String).gather(matched["row"].sort())
    near_rows = found["near_candidates"]["row"].unique().sort()
    return (frame.height, found, matched["row"].sort(), ids, near_rows, text.gather(near_rows))


def leakcheck(engine: Any, units: list, references: dict[str, pl.DataFrame], *,
              chunk_rows: int = 20_000, seed: int = 1, **params: Any) -> op.LeakResult:
    index = op.reference_index(references, **params)
    offset = 0
    found: dict[str, list[pl.DataFrame]] = {}
    id_rows, id_values, text_rows, text_values = [], [], [], []
    for height, part, rows, ids, near_rows, texts in engine.map(units, _scan_unit, index,
                                                                chunk_rows):
        for key, frame in part.items():
            found.setdefault(key, []).append(frame.with_columns(pl.col("row") + offset))
        id_rows.append(rows + offset)
        id_values.append(ids)
        text_rows.append(near_rows + offset)
        text_values.append(texts)
        offset += height
    found_all = {k: pl.concat(v) for k, v in found.items()}
    train = _sparse("id", offset, id_rows, id_values)
    train_text = _sparse("text", offset, text_rows, text_values)["text"]
    return op.finish(train, train_text, found_all, index, seed=seed)


def _sparse(name: str, n: int, rows: list[pl.Series], values: list[pl.Series]) -> pl.DataFrame:
    """A column of n rows, null except at the given rows (what finish reads of the records)."""
    known = pl.DataFrame({"row": pl.concat(rows).cast(pl.Int64),
                          name: pl.concat(values).cast(pl.String)})
    return (pl.DataFrame({"row": pl.int_range(n, eager=True, dtype=pl.Int64)})
            .join(known, on="row", how="left", maintain_order="left").select(name))
