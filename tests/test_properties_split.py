"""Hypothesis properties of split: disjoint and covering, ratios within tolerance, groups intact,
same seed same result, and stable under appends."""

from __future__ import annotations

import math

import polars as pl
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sftdata.ops.split import split
from sftdata.schema import from_dicts

RATIO_SETS = st.sampled_from(
    [
        {"train": "0.8", "val": "0.1", "test": "0.1"},
        {"train": "0.5", "test": "0.5"},
        {"a": "0.7", "b": "0.2", "c": "0.05", "d": "0.05"},
    ]
)


def make(ids: list[str], groups: list[str | None] | None = None) -> pl.DataFrame:
    groups = groups or [None] * len(ids)
    return from_dicts(
        [
            {"id": i, "messages": [{"role": "user", "content": i}], "group": g, "label": str(len(i) % 3)}
            for i, g in zip(ids, groups, strict=True)
        ]
    )


ID_LISTS = st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=60, unique=True)


@settings(max_examples=40, deadline=None)
@given(ids=ID_LISTS, ratios=RATIO_SETS, seed=st.integers(0, 2**31))
def test_disjoint_covering_and_seed_stable(ids, ratios, seed):
    df = make(ids)
    first = split(df, ratios, seed=seed)
    again = split(df, ratios, seed=seed)
    assert first.frame.equals(again.frame)
    # every record exactly once, in exactly one of the named splits
    assert first.frame["id"].to_list() == ids
    assert set(first.frame["split"].to_list()) <= set(ratios)
    parts = first.parts()
    assert sum(p.height for p in parts.values()) == len(ids)
    seen = [i for p in parts.values() for i in p["id"].to_list()]
    assert sorted(seen) == sorted(ids)


@settings(max_examples=30, deadline=None)
@given(
    old=st.integers(0, 80),
    new=st.integers(1, 80),
    ratios=RATIO_SETS,
    seed=st.integers(0, 1000),
    grouped=st.booleans(),
)
def test_appending_never_moves_existing_records(old, new, ratios, seed, grouped):
    ids = [f"r{i}" for i in range(old + new)]
    groups = [f"g{i % 7}" if grouped and i % 2 else None for i in range(old + new)]
    before = split(make(ids[:old], groups[:old]), ratios, seed=seed, group_by="group").frame
    after = split(make(ids, groups), ratios, seed=seed, group_by="group").frame
    assert after.head(old)["split"].to_list() == before["split"].to_list()


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=30),
    singles=st.integers(0, 20),
    ratios=RATIO_SETS,
    seed=st.integers(0, 1000),
)
def test_groups_are_never_split(sizes, singles, ratios, seed):
    ids, groups = [], []
    for g, size in enumerate(sizes):
        for k in range(size):
            ids.append(f"g{g}-{k}")
            groups.append(f"group{g}")
    for k in range(singles):
        ids.append(f"single{k}")
        groups.append(None)
    frame = split(make(ids, groups), ratios, seed=seed, group_by="group").frame
    per_group = frame.drop_nulls("group").group_by("group").agg(pl.col("split").n_unique())
    assert per_group["split"].max() == 1


LARGE = make([f"id-{i}" for i in range(4000)])


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31), ratios=RATIO_SETS)
def test_ratios_within_tolerance_for_large_n(seed, ratios):
    n = LARGE.height
    result = split(LARGE, ratios, seed=seed)
    for name, wanted in ratios.items():
        p = float(wanted)
        got = result.report["splits"][name]["records"] / n
        # five standard deviations of the binomial share: fails by chance ~1 in 1.7 million
        assert abs(got - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 80),
    counts=st.lists(st.integers(0, 20), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
)
def test_counts_mode_is_exact_and_accounts_for_every_row(n, counts, seed):
    assume(1 < sum(counts) <= n)  # a lone 1 reads as the ratio 1.0
    ratios = {f"s{k}": str(c) for k, c in enumerate(counts)}
    result = split(make([f"r{i}" for i in range(n)]), ratios, seed=seed, stratify="label")
    got = [result.report["splits"][name]["records"] for name in ratios]
    assert got == counts
    assert result.frame.height + result.unselected.height == n
