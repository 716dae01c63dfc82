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


def _scan_unit(frame: pl.DataFrame, unit: Any, index: op.ReferenceIndex, chunk_rows: int,
               exclude: frozenset[str] = frozenset()):
    if exclude:  # records dropped by earlier checks (--drop), matched by id as decontaminate does
        frame = frame.filter(~frame["id"].is_in(list(exclude)))
    text = frame.select(index.view.alias("text"))["text"]
    found = op.scan(text, index, chunk_rows)
    matched = pl.concat([found[k].select("row") for k in ("exact", "hits", "contained",
                                                           "near_candidates")]).unique()
    ids = frame["id"].cast(pl.String).gather(matched["row"].sort())
    near_rows = found["near_candidates"]["row"].unique().sort()
    return (frame.height, found, matched["row"].sort(), ids, near_rows, text.gather(near_rows))


def leakcheck(engine: Any, units: list, references: dict[str, pl.DataFrame], *,
              chunk_rows: int = 20_000, seed: int = 1, exclude: frozenset[str] = frozenset(),
              **params: Any) -> op.LeakResult:
    """ops.leakcheck.leakcheck over the units' records, without the records whose id is in
    ``exclude``."""
    index = op.reference_index(references, **params)
    offset = 0
    found: dict[str, list[pl.DataFrame]] = {}
    id_rows, id_values, text_rows, text_values = [], [], [], []
    for height, part, rows, ids, near_rows, texts in engine.map(units, _scan_unit, index,
                                                                chunk_rows, exclude):
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


def _flagged(result: op.LeakResult, include_low: bool) -> frozenset[str]:
    return frozenset(result.contaminated_ids) | (frozenset(result.low_confidence_ids)
                                                 if include_low else frozenset())


def drop_until_clean(engine: Any, units: list, references: dict[str, pl.DataFrame], *,
                     first: op.LeakResult, include_low: bool = False, max_rounds: int = 5,
                     **params: Any) -> tuple[list[op.LeakResult], bool, Any]:
    """ops.leakcheck.drop_until_clean over units: every further check scans the units without
    the records dropped so far (by id, as decontaminate drops them); then each unit drops its
    records round by round with the op's own decontaminate. Returns the checks, whether the
    last one found nothing, and (kept frame, [dropped frame of each check]) per unit, in
    input order: the op's kept records, and its dropped ones once ordered by check."""
    rounds, flagged = [first], [_flagged(first, include_low)]
    while len(rounds) < max_rounds and flagged[-1]:
        check = leakcheck(engine, units, references, exclude=frozenset().union(*flagged),
                          **params)
        rounds.append(check)
        flagged.append(_flagged(check, include_low))
    return rounds, not flagged[-1], engine.map(units, _drop_unit, rounds, include_low)


def _drop_unit(frame: pl.DataFrame, unit: Any, rounds: list[op.LeakResult], include_low: bool):
    kept, parts = frame, []
    for check, result in enumerate(rounds, start=1):
        kept, dropped = op.decontaminate(kept, result, include_low=include_low)
        parts.append(dropped if check == 1 else op.later_round(dropped, check))
    return kept, parts
