"""Assign records to splits from a seeded hash of their group (or id).

Ratios mode (``train=0.8,val=0.1,test=0.1``): each unit (a group, or a record without one) hashes
to a number in [0, 1) and falls into the split whose cumulative-ratio interval holds it. The
assignment depends only on (seed, unit key, ratios), so appending records never moves an existing
record, and the same seed always gives the same result. Proportions are exact only in
expectation (binomial noise of about sqrt(p(1-p)/n)), per stratum too.

Counts mode (``train=1000,val=100,test=100``, one value may be ``rest``): units are ranked by the
same hash and cut at exact record counts (per stratum, proportionally, with --stratify). Exact
counts need ranks, and ranks shift when records are added, so counts mode is NOT append-stable.
Records beyond the requested counts are returned as ``unselected`` with a reason, never dropped
silently.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ..errors import DataError, UsageProblem

REST = "rest"
UNSELECTED = "\x00unselected"  # internal pseudo-split for records beyond the requested counts
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
NULL_LABEL = "(null)"
GROUP_PREFIX = "group\x1f"


@dataclass(frozen=True)
class SplitPlan:
    """Parsed --ratios: split names in order, and either ratios or record counts."""

    names: tuple[str, ...]
    mode: str  # "ratios" or "counts"
    values: tuple[float, ...]  # ratios, or counts (the ``rest`` entry holds -1 until resolved)

    @property
    def rest(self) -> str | None:
        if self.mode != "counts":
            return None
        return next((n for n, v in zip(self.names, self.values, strict=True) if v < 0), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            n: (REST if v < 0 else (int(v) if self.mode == "counts" else v))
            for n, v in zip(self.names, self.values, strict=True)
        }


@dataclass
class SplitResult:
    frame: pl.DataFrame  # every selected record, input order kept, ``split`` column set
    unselected: pl.DataFrame  # counts mode: records beyond the counts, with a ``reason`` column
    report: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def parts(self) -> dict[str, pl.DataFrame]:
        """One frame per split name, in the plan's order (empty splits included)."""
        names = list(self.report["splits"])
        return {n: self.frame.filter(pl.col("split") == n) for n in names}


def parse_plan(spec: Mapping[str, Any]) -> SplitPlan:
    """Ratios or counts from {'train': '0.8', ...}; raises UsageProblem with the exact fix."""
    if not spec:
        raise UsageProblem("--ratios is empty; give e.g. train=0.8,val=0.1,test=0.1")
    names, raw = list(spec), list(spec.values())
    for name in names:
        if not _NAME.match(name):
            raise UsageProblem(
                f"--ratios: split name {name!r} must use only letters, digits, '_', '.' or '-' "
                "(it becomes a file name)"
            )
    rests = [n for n, v in zip(names, raw, strict=True) if str(v).strip().lower() == REST]
    numbers: list[float] = []
    for name, value in zip(names, raw, strict=True):
        if name in rests:
            numbers.append(-1.0)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageProblem(
                f"--ratios: {value!r} for {name!r} is not a number (or 'rest' in counts mode)"
            ) from None
        if not math.isfinite(number) or number < 0:
            raise UsageProblem(f"--ratios: {name}={value} must be a number >= 0")
        numbers.append(number)
    given = [v for v in numbers if v >= 0]
    whole = all(v == int(v) for v in given)
    if rests or any(v > 1 for v in given) or (whole and sum(given) > 1):
        if len(rests) > 1:
            raise UsageProblem("--ratios: only one split may be 'rest'")
        if not whole:
            raise UsageProblem(
                "--ratios mixes ratios and counts; give all ratios (adding up to 1) or all "
                "record counts"
            )
        return SplitPlan(tuple(names), "counts", tuple(numbers))
    if abs(sum(numbers) - 1.0) > 1e-6:
        raise UsageProblem(
            f"--ratios must add up to 1 (got {sum(numbers):g}); or give record counts, "
            "e.g. train=1000,val=100,test=100"
        )
    return SplitPlan(tuple(names), "ratios", tuple(numbers))


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key); stable across runs, machines and versions."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def hash_column(keys: Iterable[str], seed: int) -> pl.Series:
    """:func:`unit_hash` of every key (inlined: this loop is most of split's time)."""
    blake2b, prefix, scale = hashlib.blake2b, f"{seed}\x1f".encode(), 2.0**-64
    from_bytes = int.from_bytes
    values = [
        from_bytes(blake2b(prefix + k.encode(), digest_size=8).digest(), "big") * scale
        for k in keys
    ]
    return pl.Series("_u", values, dtype=pl.Float64)


def default_group_column(df: pl.DataFrame) -> str | None:
    """The ``group`` column when present with any value (e.g. OASST trees), else none."""
    if "group" in df.columns and df["group"].null_count() < df.height:
        return "group"
    return None


def split(
    df: pl.DataFrame,
    ratios: Mapping[str, Any] | SplitPlan,
    *,
    seed: int = 0,
    stratify: str | None = None,
    group_by: str | None = None,
) -> SplitResult:
    """Set the ``split`` column of every record; see the module docstring for the two modes.

    ``group_by`` names a column whose equal values stay in one split (null = the record's own
    id). ``stratify`` names a column whose values are reported per split and, in counts mode,
    allocated proportionally (a group's stratum is its most common value).
    """
    plan = ratios if isinstance(ratios, SplitPlan) else parse_plan(ratios)
    for option, column in (("--stratify", stratify), ("--group-by", group_by)):
        if column is not None and column not in df.columns:
            raise UsageProblem(
                f"{option}: no column {column!r} in the input (columns: {', '.join(df.columns)})"
            )
    if df["id"].null_count():
        row = int(df["id"].is_null().arg_max())
        raise DataError(
            "id is null", row=row + 1, field="id",
            fix="every record needs an id; `sftdata convert` derives one from the content",
        )
    keys = _unit_keys(df, group_by)
    work = df.with_columns(
        keys.alias("_unit"),
        hash_column(keys, seed).alias("_u"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
    )
    if plan.mode == "ratios":
        assigned = work.with_columns(_by_thresholds(plan).alias("split"))
    else:
        assigned = _by_counts(work, plan, stratify)
    warnings = _small_strata(assigned, plan, stratify)
    if "split" in df.columns and df["split"].null_count() < df.height:
        changed = int(df["split"].is_not_null().sum())
        warnings.insert(0, f"{changed} record(s) already had a split; it was replaced")
    chosen = assigned.filter(pl.col("split") != UNSELECTED)
    unselected = assigned.filter(pl.col("split") == UNSELECTED)
    report = _report(chosen, unselected.height, plan, seed, group_by, stratify, warnings)
    cols = list(df.columns) + ([] if "split" in df.columns else ["split"])
    reason = unselected_reason(plan)
    return SplitResult(
        frame=chosen.sort("_row").select(cols),
        unselected=unselected.sort("_row")
        .with_columns(pl.lit(None, dtype=pl.String).alias("split"), pl.lit(reason).alias("reason"))
        .select([*cols, "reason"]),
        report=report,
        warnings=warnings,
    )


def unselected_reason(plan: SplitPlan) -> str:
    return (
        f"unselected: the requested counts ({sum(v for v in plan.values if v > 0):g}) "
        f"leave these records out; add a split with value 'rest' to keep them"
    )


def _unit_keys(df: pl.DataFrame, group_by: str | None) -> pl.Series:
    ids = df["id"].cast(pl.String)
    if group_by is None:
        return ids.rename("_unit")
    # A record without a group keeps its bare id as key, so grouping other records later does not
    # move it; group keys get a prefix with a control character that ids do not contain.
    groups = df[group_by].cast(pl.String)
    return (
        pl.select(
            pl.when(groups.is_not_null())
            .then(pl.lit(GROUP_PREFIX) + groups)
            .otherwise(ids)
            .alias("_unit")
        )
        .to_series()
    )


def _by_thresholds(plan: SplitPlan) -> pl.Expr:
    cumulative, expr = 0.0, None
    for name, ratio in zip(plan.names, plan.values, strict=True):
        cumulative += ratio
        if ratio == 0:
            continue
        cond = pl.col("_u") < cumulative
        expr = pl.when(cond).then(pl.lit(name)) if expr is None else expr.when(cond).then(pl.lit(name))
    last = next(n for n, v in zip(reversed(plan.names), reversed(plan.values), strict=True) if v > 0)
    return expr.otherwise(pl.lit(last))  # float rounding at the top end goes to the last split


def _by_counts(work: pl.DataFrame, plan: SplitPlan, stratify: str | None) -> pl.DataFrame:
    total = work.height
    fixed = sum(v for v in plan.values if v >= 0)
    if fixed > total:
        raise UsageProblem(
            f"--ratios asks for {fixed:g} records but the input has {total}; lower the counts"
        )
    counts = [int(v) if v >= 0 else total - int(fixed) for v in plan.values]
    names = list(plan.names)
    if sum(counts) < total:
        names.append(UNSELECTED)
        counts.append(total - sum(counts))
    units = work.group_by("_unit").agg(pl.len().alias("_size"), pl.col("_u").first())
    if stratify is not None:
        units = units.join(_unit_strata(work, stratify), on="_unit")
    else:
        units = units.with_columns(pl.lit(NULL_LABEL).alias("_stratum"))
    units = units.sort(["_u", "_unit"])
    strata = units.group_by("_stratum").agg(pl.col("_size").sum()).sort("_stratum")
    quotas = allocate(counts, dict(zip(strata["_stratum"], strata["_size"], strict=True)))
    assigned: dict[str, str] = {}
    for stratum, frame in units.group_by("_stratum", maintain_order=True):
        bounds = _cumulative(quotas[stratum[0]])
        position = 0
        for unit, size in zip(frame["_unit"], frame["_size"], strict=True):
            k = next((i for i, b in enumerate(bounds) if position < b), len(bounds) - 1)
            assigned[unit] = names[k]
            position += size
    mapping = pl.DataFrame(
        {"_unit": list(assigned), "split": list(assigned.values())},
        schema={"_unit": pl.String, "split": pl.String},
    )
    return work.drop("split", strict=False).join(mapping, on="_unit", how="left")


def _unit_strata(work: pl.DataFrame, stratify: str) -> pl.DataFrame:
    """Each unit's stratum: its most common value (ties: the smallest), nulls as '(null)'."""
    values = work.select("_unit", pl.col(stratify).cast(pl.String).fill_null(NULL_LABEL).alias("_s"))
    counted = values.group_by("_unit", "_s").agg(pl.len().alias("_n"))
    return (
        counted.sort(["_unit", "_n", "_s"], descending=[False, True, False])
        .group_by("_unit", maintain_order=True)
        .first()
        .select("_unit", pl.col("_s").alias("_stratum"))
    )


def allocate(counts: list[int], strata: dict[str, int]) -> dict[str, list[int]]:
    """Split each target count across strata in proportion to their sizes (largest remainder).

    Every stratum's quotas add up to its size, and every split's quotas add up to its count.
    """
    total = sum(strata.values())
    order = sorted(strata)
    quotas = {s: [0] * len(counts) for s in order}
    left = dict(strata)
    for k, count in enumerate(counts[:-1]):
        exact = {s: count * strata[s] / total for s in order}
        floors = {s: min(int(exact[s]), left[s]) for s in order}
        spare = count - sum(floors.values())
        # largest fractional part first, stratum name breaks ties: deterministic
        for s in sorted(order, key=lambda s: (-(exact[s] - int(exact[s])), s)):
            if spare <= 0:
                break
            if floors[s] < left[s]:
                floors[s] += 1
                spare -= 1
        for s in sorted(order, key=lambda s: (-left[s], s)):  # rounding leftovers, if any
            take = min(spare, left[s] - floors[s])
            floors[s] += take
            spare -= take
        for s in order:
            quotas[s][k] = floors[s]
            left[s] -= floors[s]
    for s in order:
        quotas[s][-1] = left[s]
    return quotas


def _cumulative(values: list[int]) -> list[int]:
    out, running = [], 0
    for v in values:
        running += v
        out.append(running)
    return out


def _small_strata(assigned: pl.DataFrame, plan: SplitPlan, stratify: str | None) -> list[str]:
    if stratify is None:
        return []
    wanted = sum(1 for v in plan.values if v != 0)
    units = assigned.select("_unit").unique().join(_unit_strata(assigned, stratify), on="_unit")
    sizes = units.group_by("_stratum").agg(pl.len().alias("n")).sort("_stratum")
    return [
        f"stratum {stratify}={s!r} has {n} unit(s), fewer than the {wanted} splits: "
        "it cannot appear in every split"
        for s, n in zip(sizes["_stratum"], sizes["n"], strict=True)
        if n < wanted
    ]


def _report(
    chosen: pl.DataFrame,
    unselected: int,
    plan: SplitPlan,
    seed: int,
    group_by: str | None,
    stratify: str | None,
    warnings: list[str],
) -> dict[str, Any]:
    has_labels = "label" in chosen.columns and chosen["label"].null_count() < chosen.height
    label_col = stratify or ("label" if has_labels else None)
    splits: dict[str, Any] = {}
    total = chosen.height + unselected
    for name in plan.names:
        part = chosen.filter(pl.col("split") == name)
        entry: dict[str, Any] = {
            "records": part.height,
            "share": round(part.height / total, 6) if total else 0.0,
            "groups": part["_unit"].n_unique(),
        }
        if label_col is not None:
            counts = (
                part.select(pl.col(label_col).cast(pl.String).fill_null(NULL_LABEL).alias("v"))
                .group_by("v").len().sort("v")
            )
            entry["labels"] = dict(zip(counts["v"], counts["len"], strict=True))
        splits[name] = entry
    return {
        "mode": plan.mode,
        "ratios": plan.as_dict(),
        "seed": seed,
        "group_by": group_by,
        "stratify": stratify,
        "append_stable": plan.mode == "ratios",
        "records_in": total,
        "unselected": unselected,
        "splits": splits,
        "warnings": list(warnings),
    }
