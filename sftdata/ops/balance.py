"""Rebalance records by a class column (label, source, task, ...): caps, target ratios, mixtures.

Modes (exactly one):
  cap          at most ``cap`` records per class; smaller classes are kept whole.
  target       class shares: ``"uniform"`` or explicit ratios {class: share} (normalized).
  mix          mixture weights {class: weight}, optionally sharpened/flattened by ``temperature``.
  temperature  alone: p_c proportional to n_c ** (1 / T) (T=1 keeps the data's own proportions,
               larger T flattens toward uniform, the usual multilingual/multi-source recipe).

For target/mix/temperature the output size is ``total`` when given; otherwise the largest size
that needs no copies (``downsample``) or the smallest that drops nothing (``upsample``). Counts
per class follow the shares by largest remainder, so each class is within one record of its share.

Strategies: ``downsample`` never copies (a short class with an explicit ``total`` is an error);
``upsample`` copies records of short classes. Copies are spread evenly: every record is repeated
floor(k/n) times and the other k mod n copies go to records drawn without repeats. A copy gets
the id ``<id>~up<j>`` and ``upsampled_from`` in its ``meta`` JSON; an original with copies and
its copies share ``group`` (the original's group, else its id) so `split` never separates them.

Sampling is seeded per class (seed, class name): the same input and seed give the same output,
and adding a class does not change which records another class keeps. Output keeps input order;
each copy follows its original. Every record not kept is returned in ``dropped`` with a reason.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..errors import UsageProblem

NULL_CLASS = "(null)"  # how a null value of the --by column is named in reports and ratios
STRATEGIES = ("downsample", "upsample")
COPY_SUFFIX = "~up"


@dataclass
class BalanceResult:
    frame: pl.DataFrame  # kept records and copies, input order, each copy after its original
    report: dict[str, Any] = field(default_factory=dict)
    _source: pl.DataFrame | None = field(default=None, repr=False)
    _drop_reasons: pl.Series | None = field(default=None, repr=False)  # per input row, null = kept

    @functools.cached_property
    def dropped(self) -> pl.DataFrame:
        """Records not kept, with a ``reason`` column (built on first use: copying them is the
        costliest step, and a caller that only counts drops never pays for it)."""
        rows = np.flatnonzero(self._drop_reasons.is_not_null().to_numpy())
        # a gather by row number is several times faster than a boolean filter on nested columns
        return self._source[rows].with_columns(self._drop_reasons.gather(rows))


def balance(
    df: pl.DataFrame,
    by: str,
    *,
    cap: int | None = None,
    target: str | dict[str, float] | None = None,
    mix: dict[str, float] | None = None,
    temperature: float | None = None,
    strategy: str | None = None,
    total: int | None = None,
    seed: int = 0,
) -> BalanceResult:
    """Cap, re-weight or mix the classes of column ``by``; see the module docstring."""
    mode = check_options(cap, target, mix, temperature, strategy, total)
    if by not in df.columns:
        raise UsageProblem(f"--by {by}: no such column; the input has: {', '.join(df.columns)}")
    if isinstance(df.schema[by], (pl.List, pl.Array, pl.Struct)):  # L18: a cast traceback before
        flat = [c for c, t in df.schema.items() if not isinstance(t, (pl.List, pl.Array, pl.Struct))]
        raise UsageProblem(
            f"--by {by}: the column is {df.schema[by]}, not one value per record; choose a column "
            f"of strings or numbers ({', '.join(flat) or 'the input has none'})"
        )
    strategy = strategy or "downsample"
    keys = df[by].cast(pl.String).fill_null(NULL_CLASS)
    # row numbers grouped by class (classes in name order), input order within each class
    ordered = keys.to_frame("k").with_row_index("i").sort("k", maintain_order=True)
    by_class = ordered["i"].to_numpy().astype(np.int64)
    sizes = {cls: int(n) for n, cls in ordered["k"].rle().struct.unnest().iter_rows()}

    if not sizes:  # nothing to balance; an empty input is not an error in a pipe
        wanted: dict[str, int] = {}
        shares: dict[str, float] = {}
    elif mode == "cap":
        wanted = {c: min(n, cap) for c, n in sizes.items()}
        shares = {}
    else:
        shares = _shares(mode, sizes, target, mix, temperature, by)
        wanted = _plan_counts(sizes, shares, strategy, total, by)

    reasons = _reasons(mode, by, cap, shares, sizes, wanted)
    keep_mask = np.zeros(df.height, dtype=bool)
    copies_of = np.zeros(df.height, dtype=np.int64)
    start = 0
    for cls, n in sizes.items():
        rows, start = by_class[start : start + n], start + n
        want = wanted.get(cls, 0)
        rng = _class_rng(seed, cls)
        if want <= n:
            keep_mask[rows[np.sort(rng.choice(n, size=want, replace=False))]] = True
        else:
            keep_mask[rows] = True
            extra = want - n
            copies_of[rows] += extra // n
            copies_of[rows[rng.choice(n, size=extra % n, replace=False)]] += 1

    frame = _with_copies(df, keep_mask, copies_of)
    drop_reasons = (
        pl.select(
            pl.when(pl.Series(keep_mask))
            .then(pl.lit(None, dtype=pl.String))
            .otherwise(keys.replace_strict(reasons, default=None, return_dtype=pl.String))
            .alias("reason")
        ).to_series()
        if reasons
        else pl.Series("reason", [None] * df.height, dtype=pl.String)
    )
    report = _report(mode, by, seed, strategy, total, cap, shares, sizes, keys, keep_mask, copies_of)
    return BalanceResult(frame, report, df, drop_reasons)


# --------------------------------------------------------------------------- options


def check_options(cap, target, mix, temperature, strategy, total) -> str:
    """Which mode, with exact sentences for every bad combination."""
    if cap is None and target is None and mix is None and temperature is None:
        raise UsageProblem("choose one of --cap, --target, --mix or --temperature.")
    if cap is not None and (target is not None or mix is not None or temperature is not None):
        raise UsageProblem("--cap cannot be combined with --target, --mix or --temperature.")
    if target is not None and mix is not None:
        raise UsageProblem("--target and --mix cannot be used together.")
    if target is not None and temperature is not None:
        raise UsageProblem("--temperature applies to --mix weights or class sizes, not to --target.")
    if strategy is not None and strategy not in STRATEGIES:
        raise UsageProblem(f"--strategy must be one of {', '.join(STRATEGIES)}.")
    if cap is not None:
        if cap < 1:
            raise UsageProblem("--cap must be at least 1.")
        if strategy is not None:
            raise UsageProblem("--strategy applies to --target, --mix or --temperature, not to --cap.")
        if total is not None:
            raise UsageProblem("--total needs --target, --mix or --temperature.")
        return "cap"
    if temperature is not None and not temperature > 0:
        raise UsageProblem("--temperature must be greater than 0.")
    if total is not None and total < 1:
        raise UsageProblem("--total must be at least 1.")
    if target is not None:
        if isinstance(target, str) and target != "uniform":
            raise UsageProblem("--target must be 'uniform' or class=share pairs.")
        return "target"
    return "mix" if mix is not None else "temperature"


def _shares(mode, sizes, target, mix, temperature, by) -> dict[str, float]:
    """Normalized share per class present in the data (0 for classes left out)."""
    if mode == "target" and target == "uniform":
        weights = {c: 1.0 for c in sizes}
    elif mode in ("target", "mix"):
        given = target if mode == "target" else mix
        flag = f"--{mode}"
        bad = [k for k, v in given.items() if not (v >= 0 and math.isfinite(v))]
        if bad:
            raise UsageProblem(f"{flag}: shares must be finite and not negative ({', '.join(bad)}).")
        absent = [k for k in given if k not in sizes]
        if absent:
            raise UsageProblem(
                f"{flag} names {', '.join(repr(a) for a in absent)}, which has no records in column "
                f"{by!r} (classes: {', '.join(sizes)})."
            )
        weights = {c: float(given.get(c, 0.0)) for c in sizes}
    else:
        weights = {c: float(n) for c, n in sizes.items()}
    if temperature is not None:
        weights = {c: (w ** (1.0 / temperature) if w > 0 else 0.0) for c, w in weights.items()}
    norm = sum(weights.values())
    if norm <= 0:
        raise UsageProblem(f"--{mode}: at least one class needs a share above 0.")
    return {c: w / norm for c, w in weights.items()}


def _plan_counts(sizes, shares, strategy, total, by) -> dict[str, int]:
    active = {c: p for c, p in shares.items() if p > 0}
    if total is None:
        fits = [sizes[c] / p for c, p in active.items()]
        total = math.floor((min(fits) if strategy == "downsample" else max(fits)) + 1e-9)
    counts = _largest_remainder(total, active)
    if strategy == "downsample":
        short = [c for c, want in counts.items() if want > sizes[c]]
        if short:
            c = short[0]
            raise UsageProblem(
                f"--total {total} needs {counts[c]} records of {by}={c} but only {sizes[c]} exist; "
                "use --strategy upsample to allow copies, or a smaller --total."
            )
    return counts


def _largest_remainder(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to ``total``, each within one of total * share (ties: class name)."""
    quotas = {c: total * p for c, p in shares.items()}
    counts = {c: math.floor(q + 1e-9) for c, q in quotas.items()}
    left = total - sum(counts.values())
    by_remainder = sorted(quotas, key=lambda c: (-(quotas[c] - counts[c]), c))
    for c in by_remainder[:left]:
        counts[c] += 1
    return counts


def _class_rng(seed: int, cls: str) -> np.random.Generator:
    digest = hashlib.sha256(cls.encode("utf-8")).digest()
    return np.random.default_rng([seed & 0xFFFFFFFF, int.from_bytes(digest[:8], "little")])


# --------------------------------------------------------------------------- output


def _with_copies(df: pl.DataFrame, keep: np.ndarray, copies_of: np.ndarray) -> pl.DataFrame:
    """Kept rows in input order, each followed by its copies (marked)."""
    kept_rows = np.flatnonzero(keep)
    repeat = 1 + copies_of[kept_rows]
    order = np.repeat(kept_rows, repeat)
    out = df[order]
    if not copies_of.any():
        return out
    # copy number within each original: 0 for the original itself, then 1, 2, ...
    copy_no = np.arange(order.size) - np.repeat(np.cumsum(repeat) - repeat, repeat)
    for col in ("group", "meta"):
        if col not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=pl.String).alias(col))
    is_copy = pl.Series(copy_no > 0)
    has_copies = pl.Series(np.repeat(repeat > 1, repeat))
    copy_no_s = pl.Series(copy_no)
    marked = out.with_columns(
        pl.when(is_copy)
        .then(
            pl.when(pl.col("meta").is_null())
            .then(pl.struct(pl.col("id").alias("upsampled_from")).struct.json_encode())
            .otherwise(pl.col("meta"))  # merged below, in Python, for copies that have meta
        )
        .otherwise(pl.col("meta"))
        .alias("meta"),
        pl.when(is_copy)
        .then(pl.col("id") + pl.lit(COPY_SUFFIX) + copy_no_s.cast(pl.String))
        .otherwise(pl.col("id"))
        .alias("id"),
        # an original and its copies form one group, so `split` never separates them
        pl.when(has_copies)
        .then(pl.col("group").fill_null(pl.col("id")))
        .otherwise(pl.col("group"))
        .alias("group"),
    )
    with_meta = np.flatnonzero((copy_no > 0) & out["meta"].is_not_null().to_numpy())
    if with_meta.size:
        ids, metas = out["id"].to_list(), marked["meta"].to_list()
        for i in with_meta:
            metas[i] = _copy_meta(ids[i], metas[i])
        marked = marked.with_columns(pl.Series("meta", metas, dtype=pl.String))
    return marked


def _copy_meta(original_id: str, text: str | None) -> str:
    """The original's meta JSON plus ``upsampled_from`` (non-object meta is kept under "meta")."""
    meta: Any = None
    if text:
        try:
            meta = json.loads(text)
        except ValueError:
            meta = text
    if not isinstance(meta, dict):
        meta = {} if meta is None else {"meta": meta}
    merged = {**meta, "upsampled_from": original_id}
    return json.dumps(merged, ensure_ascii=False, separators=(",", ":"))


def _reasons(mode, by, cap, shares, sizes, wanted) -> dict[str, str]:
    out = {}
    for cls, n in sizes.items():
        want = wanted.get(cls, 0)
        if mode == "cap":
            out[cls] = f"{by}={cls} over --cap {cap} ({n} records)"
        elif want == 0 and shares.get(cls, 0) == 0:
            out[cls] = f"{by}={cls} has share 0 in --{mode}"
        else:
            out[cls] = f"{by}={cls} downsampled from {n} to {want} (--{mode})"
    return out


def _report(mode, by, seed, strategy, total, cap, shares, sizes, keys, keep, copies_of) -> dict:
    frame = pl.DataFrame({"k": keys, "keep": keep, "copies": copies_of})
    per = {
        k: (kept, copies)
        for k, kept, copies in frame.group_by("k").agg(
            pl.col("keep").sum(), pl.col("copies").sum()
        ).iter_rows()
    }
    n_in = int(sum(sizes.values()))
    n_out = int(keep.sum() + copies_of.sum())
    classes = {}
    for cls, n in sizes.items():
        kept, copies = (int(v) for v in per[cls])
        entry = {
            "before": n,
            "after": kept + copies,
            "kept": kept,
            "copies": copies,
            "dropped": n - kept,
            "share_before": round(n / n_in, 6),
            "share_after": round((kept + copies) / n_out, 6) if n_out else 0.0,
        }
        if shares:
            entry["target_share"] = round(shares[cls], 6)
        classes[cls] = entry
    return {
        "by": by,
        "mode": mode,
        "seed": seed,
        "strategy": None if mode == "cap" else strategy,
        "cap": cap,
        "total": total,
        "records_in": n_in,
        "records_out": n_out,
        "kept": int(keep.sum()),
        "copies": int(copies_of.sum()),
        "dropped": int((~keep).sum()),
        "classes": classes,
    }
