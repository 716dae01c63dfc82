"""Benchmark: `balance` vs the plain Polars one-liners it replaces, and where `validate` spends time.

Part 1, balance on N synthetic records (labels 70/20/9/1 %), in one process, alternating sides,
median of --repeats runs, ratio ours / plain Polars:
  cap      ours: balance(cap=C)                       plain: shuffle + group_by(label).head(C)
  upsample ours: balance(target=uniform, upsample)    plain: per class sample(n=max, replace)
The plain versions return only the kept rows; ours also marks copies (id suffix, meta, group),
builds the before/after report and, when asked (--rejects), the dropped rows with reasons.

Part 2, validate on M records (10% with an empty assistant turn): time of the Polars contract
view, of the pandas conversion, and of the GX suite run (records suite, 12 expectations).

    .venv/bin/python bench/bench_balance.py            # N=1,000,000, M=200,000, 3 repeats
    .venv/bin/python bench/bench_balance.py --quick    # N=100,000, M=20,000, 1 repeat
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import polars as pl
import psutil

from sftdata.schema import conform


def records(n: int, seed: int = 0, empty_every: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["a", "b", "c", "d"], size=n, p=[0.7, 0.2, 0.09, 0.01])
    answer = pl.format("answer number {} with a few words", pl.col("id"))
    if empty_every:
        answer = pl.when(pl.int_range(pl.len()) % empty_every == 0).then(pl.lit("")).otherwise(answer)
    df = pl.DataFrame({"id": [f"r{i}" for i in range(n)], "label": labels, "task": ["chat"] * n})
    df = df.with_columns(
        pl.concat_list(
            pl.struct(pl.lit("user").alias("role"), pl.format("question {}", pl.col("id")).alias("content")),
            pl.struct(pl.lit("assistant").alias("role"), answer.alias("content")),
        ).alias("messages")
    )
    return conform(df)


def plain_cap(df: pl.DataFrame, cap: int, seed: int) -> pl.DataFrame:
    return (
        df.with_row_index("_i").sample(fraction=1.0, shuffle=True, seed=seed)
        .group_by("label").head(cap).sort("_i").drop("_i")
    )


def plain_upsample(df: pl.DataFrame, seed: int) -> pl.DataFrame:
    sizes = df["label"].value_counts()
    top = int(sizes["count"].max())
    parts = [df.filter(pl.col("label") == c).sample(n=top, with_replacement=True, seed=seed)
             for c in sorted(sizes["label"])]
    return pl.concat(parts)


def _with_dropped(result):
    result.dropped  # noqa: B018 - built lazily; force it, as `--rejects FILE` does
    return result.frame


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def part_balance(n: int, repeats: int) -> None:
    from sftdata.ops.balance import balance

    df = records(n)
    cases = {
        "cap 10000": (lambda: balance(df, "label", cap=10_000, seed=1).frame,
                      lambda: plain_cap(df, 10_000, 1)),
        "cap 10000, dropped rows built too (--rejects)": (
            lambda: _with_dropped(balance(df, "label", cap=10_000, seed=1)),
            lambda: plain_cap(df, 10_000, 1)),
        "uniform upsample": (lambda: balance(df, "label", target="uniform", strategy="upsample").frame,
                             lambda: plain_upsample(df, 1)),
    }
    print(f"## balance, {n:,} records, median of {repeats}")
    print("| case | ours s | plain Polars s | ours / plain | rows out (ours, plain) |")
    print("| --- | --- | --- | --- | --- |")
    for name, (ours, plain) in cases.items():
        t_ours, t_plain = [], []
        for _ in range(repeats):
            t, out_ours = timed(ours)
            t_ours.append(t)
            t, out_plain = timed(plain)
            t_plain.append(t)
        mo, mp = statistics.median(t_ours), statistics.median(t_plain)
        print(f"| {name} | {mo:.2f} | {mp:.2f} | {mo / mp:.2f}x | {out_ours.height:,}, {out_plain.height:,} |")
    print(f"peak RSS of this process so far: {psutil.Process().memory_info().rss / 2**20:.0f} MiB")


def part_validate(m: int, repeats: int) -> None:
    from sftdata import contracts

    df = records(m, empty_every=10)
    suite = contracts.build_gx_suite(contracts.load_suite("records"))  # imports GX once
    contracts.run_gx(contracts.contract_view(df.head(10)), suite)  # warm GX caches
    rows = []
    for _ in range(repeats):
        t_view, view = timed(lambda: contracts.contract_view(df))
        t_pandas, _ = timed(view.to_pandas)
        t_total, results = timed(lambda v=view: contracts.run_gx(v, suite))
        rows.append((t_view, t_pandas, t_total - t_pandas))
    view_s, pandas_s, gx_s = (statistics.median(c) for c in zip(*rows, strict=True))
    failed = sum(not r.success for r in results)
    print(f"\n## validate, {m:,} records, records suite, median of {repeats}")
    print("| step | s | share |")
    print("| --- | --- | --- |")
    total = view_s + pandas_s + gx_s
    for name, value in (("Polars contract view", view_s), ("to pandas", pandas_s), ("GX suite", gx_s)):
        print(f"| {name} | {value:.2f} | {value / total:.0%} |")
    print(f"GX / view: {gx_s / view_s:.1f}x; {failed} expectations failed (expected 2: empty answers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n, m, repeats = (100_000, 20_000, 1) if args.quick else (1_000_000, 200_000, 3)
    repeats = args.repeats or repeats
    part_balance(n, repeats)
    part_validate(m, repeats)


if __name__ == "__main__":
    main()
