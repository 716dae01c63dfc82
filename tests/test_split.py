"""The split op: hash assignment, groups, counts, strata, report (library layer)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import chat

from sftdata.errors import DataError, UsageProblem
from sftdata.ops.split import allocate, parse_plan, split, unit_hash
from sftdata.schema import from_dicts


def records(n: int, **columns) -> pl.DataFrame:
    rows = []
    for i in range(n):
        extra = {k: (v(i) if callable(v) else v) for k, v in columns.items()}
        rows.append(chat(f"question {i}", f"answer {i}", id=f"r{i}", **extra))
    return from_dicts(rows)


RATIOS = {"train": "0.8", "val": "0.1", "test": "0.1"}


def test_parse_plan_ratios_counts_and_rest():
    assert parse_plan(RATIOS).mode == "ratios"
    counts = parse_plan({"train": "1000", "val": "100", "test": "100"})
    assert counts.mode == "counts" and counts.values == (1000, 100, 100)
    rest = parse_plan({"train": "rest", "val": "10"})
    assert rest.mode == "counts" and rest.rest == "train"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"train": "0.5", "val": "0.4"}, "--ratios must add up to 1 (got 0.9)"),
        ({"train": "0.5", "val": "20"}, "--ratios mixes ratios and counts"),
        ({"train": "rest", "val": "rest"}, "only one split may be 'rest'"),
        ({"train": "x"}, "'x' for 'train' is not a number"),
        ({"tr/ain": "1"}, "split name 'tr/ain' must use only letters"),
        ({"train": "-0.5", "val": "1.5"}, "must be a number >= 0"),
    ],
)
def test_parse_plan_rejects(spec, message):
    with pytest.raises(UsageProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_plan(spec)


def test_unit_hash_is_fixed_across_versions():
    # pinned values: a change here moves every record of every existing split
    assert unit_hash(0, "r1") == 0.19019524722853456
    assert unit_hash(42, "g:tree") == 0.04801373453665925
    assert unit_hash(0, "r1") != unit_hash(1, "r1")
    assert 0.0 <= unit_hash(7, "anything") < 1.0


def test_ratios_assign_every_record_and_keep_order():
    df = records(500)
    result = split(df, RATIOS, seed=3)
    assert result.frame["id"].to_list() == df["id"].to_list()
    assert set(result.frame["split"].unique()) == {"train", "val", "test"}
    assert result.unselected.height == 0
    shares = {k: v["records"] for k, v in result.report["splits"].items()}
    assert sum(shares.values()) == 500
    assert 350 <= shares["train"] <= 450


def test_assignment_depends_only_on_seed_and_key():
    df = records(300)
    a = split(df, RATIOS, seed=1).frame
    b = split(df.reverse(), RATIOS, seed=1).frame.reverse()
    assert a["split"].to_list() == b["split"].to_list()
    c = split(df, RATIOS, seed=2).frame
    assert a["split"].to_list() != c["split"].to_list()


def test_groups_stay_together_and_null_group_is_own_unit():
    df = records(200, group=lambda i: f"tree{i % 17}" if i % 5 else None)
    result = split(df, RATIOS, seed=0, group_by="group")
    grouped = result.frame.filter(pl.col("group").is_not_null())
    per_group = grouped.group_by("group").agg(pl.col("split").n_unique().alias("n"))
    assert per_group["n"].max() == 1
    # 17 trees + 40 ungrouped records are the units
    assert sum(v["groups"] for v in result.report["splits"].values()) == 17 + 40


def test_ungrouped_records_do_not_move_when_grouping_starts():
    plain = records(300)
    later = records(300, group=lambda i: "tree" if i % 10 == 0 else None)
    before = split(plain, RATIOS, seed=4).frame
    after = split(later, RATIOS, seed=4, group_by="group").frame
    ungrouped = later["group"].is_null()
    assert after.filter(ungrouped)["split"].to_list() == before.filter(ungrouped)["split"].to_list()


def test_counts_mode_is_exact_and_reports_unselected():
    df = records(100)
    result = split(df, {"train": "60", "val": "10", "test": "10"}, seed=0)
    counts = {k: v["records"] for k, v in result.report["splits"].items()}
    assert counts == {"train": 60, "val": 10, "test": 10}
    assert result.unselected.height == 20
    assert result.unselected["reason"][0].startswith("unselected: the requested counts (80)")
    assert result.unselected["split"].null_count() == 20
    assert result.report["append_stable"] is False


def test_counts_with_rest_and_too_many():
    df = records(50)
    result = split(df, {"train": "rest", "test": "5"}, seed=0)
    assert {k: v["records"] for k, v in result.report["splits"].items()} == {"train": 45, "test": 5}
    with pytest.raises(UsageProblem, match="asks for 60 records but the input has 50"):
        split(df, {"train": "50", "test": "10"})


def test_counts_stratified_are_proportional_per_label():
    df = records(300, label=lambda i: "a" if i % 3 else "b")  # 200 a, 100 b
    result = split(df, {"train": "rest", "val": "30", "test": "30"}, stratify="label")
    val = result.report["splits"]["val"]["labels"]
    assert val == {"a": 20, "b": 10}


def test_allocate_keeps_row_and_column_sums():
    quotas = allocate([7, 5, 3], {"a": 8, "b": 4, "c": 3})
    assert [sum(q) for q in quotas.values()] == [8, 4, 3]
    assert [sum(q[k] for q in quotas.values()) for k in range(3)] == [7, 5, 3]


def test_small_stratum_warning_and_existing_split_warning():
    rows = [chat(f"q{i}", "a", id=f"r{i}", label="big", split="train") for i in range(30)]
    rows.append(chat("rare", "a", id="rare", label="tiny"))
    result = split(from_dicts(rows), RATIOS, stratify="label")
    assert result.warnings[0] == "30 record(s) already had a split; it was replaced"
    assert result.warnings[1] == (
        "stratum label='tiny' has 1 unit(s), fewer than the 3 splits: it cannot appear in every split"
    )


def test_missing_columns_are_usage_problems():
    with pytest.raises(UsageProblem, match="--stratify: no column 'topic' in the input"):
        split(records(5), RATIOS, stratify="topic")
    with pytest.raises(UsageProblem, match="--group-by: no column 'doc'"):
        split(records(5), RATIOS, group_by="doc")


def test_report_is_json_serializable_and_counts_labels():
    df = records(40, label=lambda i: None if i == 0 else "x")
    report = split(df, RATIOS).report
    json.dumps(report)
    labels = {}
    for entry in report["splits"].values():
        for k, v in entry["labels"].items():
            labels[k] = labels.get(k, 0) + v
    assert labels == {"(null)": 1, "x": 39}


def test_null_id_is_a_data_error():
    df = records(3).with_columns(pl.when(pl.col("id") == "r1").then(None).otherwise(pl.col("id")).alias("id"))
    with pytest.raises(DataError, match="row 2: field 'id': id is null. Fix: every record needs an id"):
        split(df, RATIOS)


def test_empty_input():
    result = split(records(0), RATIOS)
    assert result.frame.height == 0 and result.report["records_in"] == 0


@pytest.mark.realdata
def test_oasst_trees_stay_in_one_split(realdata):
    """Real OASST export trees: every conversation path of a tree shares the tree's group."""
    path = realdata / "datasets/oasst_trees/oasst_en_100_tree.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tree = json.loads(line)
        for k, path_msgs in enumerate(_paths(tree["prompt"], [])):
            rows.append({"id": f"{tree['message_tree_id']}-{k}", "messages": path_msgs,
                         "group": tree["message_tree_id"]})
    df = from_dicts(rows)
    result = split(df, RATIOS, seed=0, group_by="group")
    per_tree = result.frame.group_by("group").agg(pl.col("split").n_unique().alias("n"))
    assert per_tree.height == df["group"].n_unique() > 90 and per_tree["n"].max() == 1
    assert result.frame.height == df.height > 100


def _paths(node, prefix):
    role = "user" if node["role"] == "prompter" else "assistant"
    here = [*prefix, {"role": role, "content": node["text"]}]
    if not node.get("replies"):
        return [here] if role == "assistant" else []
    out = []
    for reply in node["replies"]:
        out += _paths(reply, here)
    return out
