"""balance(): caps, target ratios, temperature mixtures; properties with hypothesis."""

from __future__ import annotations

import json
import math
from collections import Counter

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftdata.errors import UsageProblem
from sftdata.ops.balance import NULL_CLASS, balance
from sftdata.schema import from_dicts


def records(labels: list[str | None], *, column: str = "label") -> pl.DataFrame:
    return from_dicts([
        {"id": f"r{i}", column: value,
         "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i, value in enumerate(labels)
    ])


def after(result) -> dict[str, int]:
    return {c: e["after"] for c, e in result.report["classes"].items()}


SKEWED = ["a"] * 60 + ["b"] * 30 + ["c"] * 10


def test_cap_keeps_small_classes_whole_and_reports_reasons():
    result = balance(records(SKEWED), "label", cap=20, seed=3)
    assert after(result) == {"a": 20, "b": 20, "c": 10}
    assert result.dropped.height == 50
    assert Counter(result.dropped["reason"]) == {
        "label=a over --cap 20 (60 records)": 40,
        "label=b over --cap 20 (30 records)": 10,
    }
    ids = result.frame["id"].to_list()
    assert ids == sorted(ids, key=lambda i: int(i[1:]))  # input order kept


def test_target_uniform_downsamples_to_the_smallest_class():
    result = balance(records(SKEWED), "label", target="uniform")
    assert after(result) == {"a": 10, "b": 10, "c": 10}
    assert result.report["copies"] == 0


def test_target_uniform_upsample_drops_nothing_and_marks_copies():
    result = balance(records(SKEWED), "label", target="uniform", strategy="upsample", seed=1)
    assert after(result) == {"a": 60, "b": 60, "c": 60}
    assert result.dropped.height == 0
    copies = result.frame.filter(pl.col("id").str.contains("~up"))
    assert copies.height == 30 + 50
    # copies are spread evenly: each of the 10 'c' records is copied exactly 5 times
    c_copies = copies.filter(pl.col("label") == "c")
    sources = Counter(json.loads(m)["upsampled_from"] for m in c_copies["meta"])
    assert set(sources.values()) == {5} and len(sources) == 10
    # an original and its copies share a group, so split keeps them together
    r99 = result.frame.filter(pl.col("id").str.starts_with("r99"))
    assert r99["id"].to_list() == ["r99", *[f"r99~up{j}" for j in range(1, 6)]]
    assert set(r99["group"]) == {"r99"}
    assert result.frame["id"].n_unique() == result.frame.height


def test_copy_meta_keeps_existing_meta_fields():
    df = records(["a", "b", "b"]).with_columns(pl.lit('{"lang": "en"}').alias("meta"))
    result = balance(df, "label", target="uniform", strategy="upsample")
    [copy] = result.frame.filter(pl.col("id") == "r0~up1")["meta"].to_list()
    assert json.loads(copy) == {"lang": "en", "upsampled_from": "r0"}


def test_explicit_target_with_total_and_unlisted_class_dropped_with_reason():
    result = balance(records(SKEWED), "label", target={"a": 0.75, "b": 0.25}, total=40)
    assert after(result) == {"a": 30, "b": 10, "c": 0}
    reasons = Counter(result.dropped["reason"])
    assert reasons["label=c has share 0 in --target"] == 10
    assert reasons["label=a downsampled from 60 to 30 (--target)"] == 30


def test_downsample_total_that_needs_copies_is_refused():
    with pytest.raises(UsageProblem) as err:
        balance(records(SKEWED), "label", target="uniform", total=90)
    assert str(err.value) == (
        "--total 90 needs 30 records of label=c but only 10 exist; "
        "use --strategy upsample to allow copies, or a smaller --total."
    )


def test_temperature_flattens_toward_uniform():
    sizes = {"a": 60, "b": 30, "c": 10}
    result = balance(records(SKEWED), "label", temperature=2.0, strategy="upsample", total=1000)
    norm = sum(n ** 0.5 for n in sizes.values())
    for cls, n in sizes.items():
        assert abs(after(result)[cls] - 1000 * n ** 0.5 / norm) < 1
    t1 = balance(records(SKEWED), "label", temperature=1.0)  # T=1: the data's own proportions
    assert after(t1) == sizes and t1.dropped.height == 0


def test_mix_keeps_all_narrow_data_and_a_slice_of_broad_data():
    df = records(["narrow"] * 40 + ["broad"] * 400, column="source")
    result = balance(df, "source", mix={"narrow": 0.8, "broad": 0.2}, seed=7)
    assert after(result) == {"broad": 10, "narrow": 40}
    assert result.report["mode"] == "mix"


def test_null_class_is_named_and_can_be_targeted():
    result = balance(records(["a", "a", None, None, "b"]), "label", target={NULL_CLASS: 1.0})
    assert after(result) == {NULL_CLASS: 2, "a": 0, "b": 0}
    assert result.frame["label"].to_list() == [None, None]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "choose one of --cap, --target, --mix or --temperature."),
        ({"cap": 2, "target": "uniform"}, "--cap cannot be combined with --target, --mix or --temperature."),
        ({"target": "uniform", "mix": {"a": 1.0}}, "--target and --mix cannot be used together."),
        ({"target": "uniform", "temperature": 2.0},
         "--temperature applies to --mix weights or class sizes, not to --target."),
        ({"cap": 0}, "--cap must be at least 1."),
        ({"cap": 5, "total": 3}, "--total needs --target, --mix or --temperature."),
        ({"cap": 5, "strategy": "upsample"},
         "--strategy applies to --target, --mix or --temperature, not to --cap."),
        ({"temperature": 0.0}, "--temperature must be greater than 0."),
        ({"target": "skewed"}, "--target must be 'uniform' or class=share pairs."),
        ({"target": {"a": 1.0, "zzz": 1.0}},
         "--target names 'zzz', which has no records in column 'label' (classes: a, b, c)."),
        ({"mix": {"a": -1.0}}, "--mix: shares must be finite and not negative (a)."),
        ({"mix": {"a": 0.0}}, "--mix: at least one class needs a share above 0."),
    ],
)
def test_bad_option_combinations_have_exact_messages(kwargs, message):
    with pytest.raises(UsageProblem) as err:
        balance(records(SKEWED), "label", **kwargs)
    assert str(err.value) == message


def test_unknown_column_is_a_usage_problem():
    with pytest.raises(UsageProblem, match=r"^--by nope: no such column; the input has: id, messages,"):
        balance(records(SKEWED), "nope", cap=3)


# --------------------------------------------------------------------------- properties

labels_strategy = st.lists(st.sampled_from(["x", "y", "z", None]), min_size=1, max_size=80)
PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _accounting_holds(df: pl.DataFrame, result) -> None:
    rep = result.report
    assert rep["records_in"] == df.height == rep["kept"] + rep["dropped"]
    assert rep["records_out"] == result.frame.height == rep["kept"] + rep["copies"]
    assert result.dropped.height == rep["dropped"]
    originals = result.frame.filter(~pl.col("id").str.contains("~up"))["id"]
    # every input record is either kept or dropped, never both, never lost
    assert sorted([*originals, *result.dropped["id"]]) == sorted(df["id"])


@PROPS
@given(labels=labels_strategy, cap=st.integers(1, 30), seed=st.integers(0, 2**31))
def test_property_cap_respected_and_counts_add_up(labels, cap, seed):
    df = records(labels)
    result = balance(df, "label", cap=cap, seed=seed)
    _accounting_holds(df, result)
    sizes = Counter(NULL_CLASS if v is None else v for v in labels)
    for cls, entry in result.report["classes"].items():
        assert entry["after"] == min(sizes[cls], cap)


@PROPS
@given(
    labels=labels_strategy,
    weights=st.fixed_dictionaries({c: st.integers(1, 5) for c in ("x", "y", "z")}),
    strategy=st.sampled_from(["downsample", "upsample"]),
    seed=st.integers(0, 2**31),
)
def test_property_target_ratios_within_one_record(labels, weights, strategy, seed):
    present = {c for c in labels if c is not None}
    target = {c: float(w) for c, w in weights.items() if c in present}
    if not target:
        return
    df = records(labels)
    result = balance(df, "label", target=target, strategy=strategy, seed=seed)
    _accounting_holds(df, result)
    out = result.report["records_out"]
    norm = sum(target.values())
    for cls, entry in result.report["classes"].items():
        share = target.get(cls, 0.0) / norm
        assert math.fabs(entry["after"] - out * share) < 1 + 1e-9
        if strategy == "downsample":
            assert entry["copies"] == 0
        else:
            assert entry["after"] >= entry["before"] or share == 0


@PROPS
@given(labels=labels_strategy, temperature=st.floats(0.25, 8.0), total=st.integers(1, 300))
def test_property_temperature_shares_follow_sizes_to_the_power_one_over_t(labels, temperature, total):
    df = records(labels)
    result = balance(df, "label", temperature=temperature, strategy="upsample", total=total)
    _accounting_holds(df, result)
    sizes = Counter(NULL_CLASS if v is None else v for v in labels)
    norm = sum(n ** (1 / temperature) for n in sizes.values())
    for cls, n in sizes.items():
        expected = total * n ** (1 / temperature) / norm
        assert abs(result.report["classes"][cls]["after"] - expected) < 1 + 1e-9


@PROPS
@given(labels=labels_strategy, seed=st.integers(0, 2**31), total=st.integers(1, 200))
def test_property_same_seed_same_output(labels, seed, total):
    df = records(labels)
    first = balance(df, "label", temperature=1.5, strategy="upsample", total=total, seed=seed)
    second = balance(df, "label", temperature=1.5, strategy="upsample", total=total, seed=seed)
    assert first.frame.equals(second.frame) and first.dropped.equals(second.dropped)
    assert first.report == second.report
    assert first.frame.height == total
    _accounting_holds(df, first)


def test_adding_a_class_does_not_change_what_another_class_keeps():
    base = records(["a"] * 50 + ["b"] * 50)
    more = pl.concat([base, records(["c"] * 20).with_columns(pl.format("c{}", pl.col("id")).alias("id"))])
    kept = balance(base, "label", cap=10, seed=5).frame.filter(pl.col("label") == "a")["id"]
    kept_more = balance(more, "label", cap=10, seed=5).frame.filter(pl.col("label") == "a")["id"]
    assert kept.to_list() == kept_more.to_list()
    other_seed = balance(base, "label", cap=10, seed=6).frame.filter(pl.col("label") == "a")["id"]
    assert other_seed.to_list() != kept.to_list()


# --------------------------------------------------------------------------- real data


def _converted(path) -> pl.DataFrame:
    """Real data through the real `sftdata convert` command."""
    from click.testing import CliRunner

    from sftdata.cli import cli
    from sftdata.schema import RECORD_SCHEMA

    result = CliRunner().invoke(cli, ["convert", str(path)])
    assert result.exit_code == 0, result.stderr
    return pl.read_ndjson(result.stdout.encode(), schema_overrides=RECORD_SCHEMA)


def test_realdata_ag_news_skewed_target(realdata):
    path = realdata / "datasets" / "classification" / "ag_news_samples.csv"
    raw_sizes = dict(pl.read_csv(path)["label"].value_counts().iter_rows())
    df = _converted(path)
    target = {"Sports": 0.7, "World": 0.1, "Business": 0.1, "Sci/Tech": 0.1}
    result = balance(df, "label", target=target, seed=2)
    classes = result.report["classes"]
    assert {c: e["before"] for c, e in classes.items()} == raw_sizes
    out = result.report["records_out"]
    # downsample: the largest output in which no class needs copies; Sports is the binding class
    assert out == math.floor(min(raw_sizes[c] / p for c, p in target.items()))
    assert classes["Sports"]["dropped"] <= 1
    for cls, share in target.items():
        assert abs(classes[cls]["after"] - out * share) < 1
    _accounting_holds(df, result)


def test_realdata_mix_a_slice_of_broad_data_into_a_narrow_set(realdata):
    folder = realdata / "datasets" / "alpaca_format"
    narrow = _converted(folder / "torchtune_alpaca_tiny.json")  # 100 records
    broad = _converted(folder / "alpacacleaned_gpteacher_toolformer_sim0.6.json")  # 2,396
    df = pl.concat([narrow, broad])
    mix = {"torchtune_alpaca_tiny.json": 0.9, "alpacacleaned_gpteacher_toolformer_sim0.6.json": 0.1}
    result = balance(df, "source", mix=mix, seed=0)
    after_counts = {c: e["after"] for c, e in result.report["classes"].items()}
    assert after_counts == {"torchtune_alpaca_tiny.json": 100,
                            "alpacacleaned_gpteacher_toolformer_sim0.6.json": 11}
    _accounting_holds(df, result)


def test_balance_is_a_public_function():
    import sftdata

    assert sftdata.balance is balance
