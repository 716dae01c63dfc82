"""balance over units: the same sample as ops/balance.py without holding the input in one place.

ops.balance draws, per class, positions among that class's records in input order with a
per-class seeded generator. That needs only each class's size, not the records, so:
  1 count   map: records per class in every unit
  2 draw    here: sizes, shares and wanted counts by the op's own functions, then each class's
            positions drawn exactly as the op draws them, and cut into per-unit positions by
            the class counts of the units before it
  3 keep    map: every unit keeps (and copies) its drawn records with the op's _with_copies,
            in input order, each copy after its original; dropped records get the op's reason
The driver holds the class counts of every unit and the drawn positions (8 bytes a kept row).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ..errors import UsageProblem
from ..ops import balance as op


def _keys(frame: pl.DataFrame, by: str) -> pl.Series:
    if by not in frame.columns:
        raise UsageProblem(f"--by {by}: no such column; the input has: {', '.join(frame.columns)}")
    if isinstance(frame.schema[by], (pl.List, pl.Array, pl.Struct)):
        flat = [c for c, t in frame.schema.items()
                if not isinstance(t, (pl.List, pl.Array, pl.Struct))]
        raise UsageProblem(
            f"--by {by}: the column is {frame.schema[by]}, not one value per record; choose a "
            f"column of strings or numbers ({', '.join(flat) or 'the input has none'})")
    return frame[by].cast(pl.String).fill_null(op.NULL_CLASS)


def class_counts(frame: pl.DataFrame, unit: Any, by: str) -> dict[str, int]:
    counts = _keys(frame, by).value_counts()
    return dict(zip(counts[by].to_list(), counts["count"].to_list(), strict=True)) \
        if frame.height else {}


def balance(engine: Any, units: list, by: str, *, cap=None, target=None, mix=None,
            temperature=None, strategy=None, total=None, seed: int = 0):
    """(report, iterator of (kept frame, dropped frame with reason) per unit)."""
    mode = op.check_options(cap, target, mix, temperature, strategy, total)
    strategy = strategy or "downsample"
    per_unit = list(engine.map(units, class_counts, by))
    sizes: dict[str, int] = {}
    for counts in per_unit:
        for cls, n in counts.items():
            sizes[cls] = sizes.get(cls, 0) + n
    sizes = dict(sorted(sizes.items()))  # the op's order: class names sorted
    if not sizes:
        wanted, shares = {}, {}
    elif mode == "cap":
        wanted, shares = {c: min(n, cap) for c, n in sizes.items()}, {}
    else:
        shares = op._shares(mode, sizes, target, mix, temperature, by)
        wanted = op._plan_counts(sizes, shares, strategy, total, by)
    reasons = op._reasons(mode, by, cap, shares, sizes, wanted)
    # per class: keep flags and copy counts by position among the class's records
    keep: dict[str, np.ndarray] = {}
    copies: dict[str, np.ndarray] = {}
    for cls, n in sizes.items():
        want, rng = wanted.get(cls, 0), op._class_rng(seed, cls)
        keep[cls] = np.zeros(n, dtype=bool)
        copies[cls] = np.zeros(n, dtype=np.int64)
        if want <= n:
            keep[cls][np.sort(rng.choice(n, size=want, replace=False))] = True
        else:
            keep[cls][:] = True
            extra = want - n
            copies[cls] += extra // n
            copies[cls][rng.choice(n, size=extra % n, replace=False)] += 1
    plans, seen = [], dict.fromkeys(sizes, 0)
    for counts in per_unit:
        plan = {}
        for cls, n in counts.items():
            start = seen[cls]
            plan[cls] = (keep[cls][start:start + n], copies[cls][start:start + n])
            seen[cls] = start + n
        plans.append(plan)
    report = _report(mode, by, seed, strategy, total, cap, shares, sizes, keep, copies)
    return report, engine.map(units, _keep_unit, by, plans, reasons)


def _keep_unit(frame: pl.DataFrame, unit: Any, by: str, plans: list, reasons: dict):
    keys = _keys(frame, by)
    keep = np.zeros(frame.height, dtype=bool)
    copies = np.zeros(frame.height, dtype=np.int64)
    codes = keys.to_numpy()
    for cls, (k, c) in plans[unit.index].items():
        rows = np.flatnonzero(codes == cls)  # the class's records, in input order
        keep[rows] = k
        copies[rows] = c
    out = op._with_copies(frame, keep, copies)
    rows = np.flatnonzero(~keep)
    dropped = frame[rows].with_columns(
        pl.Series("reason", [reasons[k] for k in keys.gather(rows).to_list()], dtype=pl.String))
    return out, dropped


def _report(mode, by, seed, strategy, total, cap, shares, sizes, keep, copies) -> dict:
    """ops.balance._report from the per-class flags (the op's takes them per row)."""
    n_in = int(sum(sizes.values()))
    kept_all = sum(int(k.sum()) for k in keep.values())
    copies_all = sum(int(c.sum()) for c in copies.values())
    n_out = kept_all + copies_all
    classes = {}
    for cls, n in sizes.items():
        kept, copied = int(keep[cls].sum()), int(copies[cls].sum())
        entry = {
            "before": n, "after": kept + copied, "kept": kept, "copies": copied,
            "dropped": n - kept, "share_before": round(n / n_in, 6),
            "share_after": round((kept + copied) / n_out, 6) if n_out else 0.0,
        }
        if shares:
            entry["target_share"] = round(shares[cls], 6)
        classes[cls] = entry
    return {
        "by": by, "mode": mode, "seed": seed,
        "strategy": None if mode == "cap" else strategy, "cap": cap, "total": total,
        "records_in": n_in, "records_out": n_out, "kept": kept_all, "copies": copies_all,
        "dropped": n_in - kept_all, "classes": classes,
    }
