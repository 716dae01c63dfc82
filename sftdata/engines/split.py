"""split over units in counts mode: exact record counts rank the *unit keys* (group or id) by
their seeded hash, which needs every key but not every record.

  1 keys    map: each unit's rows as (unit key, its hash, stratify value, label), the columns
            ratios mode already gathers for its report
  2 rank    here: ops.split._by_counts over those rows, the op's own ranking, per-stratum
            allocation and cut, gives every unit key its split (and the report)
  3 assign  map: every unit sets its rows' split from the key -> split table (sent with the
            tasks), selected and unselected rows in input order as the op writes them
The driver holds the gathered columns (a key, a hash and a label per record) and the
key -> split table (one row per key), not the records.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from ..errors import DataError, UsageProblem
from ..ops import split as op


def _keys_unit(frame: pl.DataFrame, unit: Any, seed: int, stratify: str | None,
               group_by: str | None) -> tuple[pl.DataFrame, int]:
    for option, column in (("--stratify", stratify), ("--group-by", group_by)):
        if column is not None and column not in frame.columns:
            raise UsageProblem(f"{option}: no column {column!r} in the input (columns: "
                               f"{', '.join(frame.columns)})")
    if frame["id"].null_count():
        raise DataError("id is null", row=int(frame["id"].is_null().arg_max()) + 1, field="id",
                        fix="every record needs an id; `sftdata convert` derives one from the "
                            "content")
    keys = op._unit_keys(frame, group_by)
    cols = [c for c in dict.fromkeys(["label", stratify]) if c and c in frame.columns]
    meta = frame.select(cols).with_columns(keys.alias("_unit"),
                                           op.hash_column(keys, seed).alias("_u"))
    changed = int(frame["split"].is_not_null().sum()) if "split" in frame.columns else 0
    return meta, changed


def _assign_unit(frame: pl.DataFrame, unit: Any, mapping: pl.DataFrame, group_by: str | None,
                 names: list[str], reason: str) -> tuple[dict[str, pl.DataFrame], pl.DataFrame,
                                                         pl.DataFrame]:
    keys = op._unit_keys(frame, group_by)
    split = (pl.DataFrame({"_unit": keys})
             .join(mapping, on="_unit", how="left", maintain_order="left")["split"])
    cols = list(frame.columns) + ([] if "split" in frame.columns else ["split"])
    out = frame.with_columns(split.alias("split")).select(cols)
    chosen = out.filter(pl.col("split") != op.UNSELECTED)
    unselected = (out.filter(pl.col("split") == op.UNSELECTED)
                  .with_columns(pl.lit(None, dtype=pl.String).alias("split"),
                                pl.lit(reason).alias("reason"))
                  .select([*cols, "reason"]))
    return {n: chosen.filter(pl.col("split") == n) for n in names}, chosen, unselected


def split_by_counts(engine: Any, units: list, plan: op.SplitPlan, seed: int,
                    stratify: str | None, group_by: str | None):
    """(report, unselected records, {split: frame} per unit, selected frame per unit): what
    ops.split.split gives for the whole input, with the same assignment of every record."""
    found = list(engine.map(units, _keys_unit, seed, stratify, group_by))
    work = pl.concat([meta for meta, _ in found], how="diagonal_relaxed").with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"))
    assigned = op._by_counts(work, plan, stratify)
    warnings = op._small_strata(assigned, plan, stratify)
    changed = sum(n for _, n in found)
    if changed:
        warnings.insert(0, f"{changed} record(s) already had a split; it was replaced")
    chosen = assigned.filter(pl.col("split") != op.UNSELECTED)
    report = op._report(chosen, assigned.height - chosen.height, plan, seed, group_by, stratify,
                        warnings)
    mapping = assigned.select("_unit", "split").unique("_unit", maintain_order=True)
    results = list(engine.map(units, _assign_unit, mapping, group_by, list(report["splits"]),
                              op.unselected_reason(plan)))
    unselected = pl.concat([r[2] for r in results], how="diagonal_relaxed")
    return report, unselected, (r[0] for r in results), (r[1] for r in results)
