"""Gold freeze / verify / score as library functions, on hand-made and real data."""

from __future__ import annotations

import csv
import json

import polars as pl
import pytest
from conftest import AG_TEMPLATE, chat, made_up_stories

from sftdata.errors import DataError, UsageProblem
from sftdata.ops.gold import (
    check_lock,
    content_sha256,
    exact_overlap,
    freeze,
    record_hashes,
    score,
    verify,
)
from sftdata.schema import from_dicts


def labelled(n: int, labels=("pos", "neg", "neu")) -> pl.DataFrame:
    return from_dicts(
        [
            chat(f"Review number {i}: the product was item {i}", labels[i % len(labels)],
                 id=f"r{i}", label=labels[i % len(labels)], task="classification")
            for i in range(n)
        ]
    )


def preds(pairs: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame({"id": list(pairs), "prediction": list(pairs.values())})


# --------------------------------------------------------------------------- freeze


def test_freeze_is_deterministic_stratified_and_complete():
    df = labelled(90)
    a = freeze(df, 30, seed=4, created_at="t1")
    b = freeze(df, 30, seed=4, created_at="t2")
    assert a.gold.equals(b.gold) and a.remainder.equals(b.remainder)
    assert a.lock["sha256"] == b.lock["sha256"]  # the time is not part of the content
    assert a.gold.height == 30 and a.remainder.height == 60
    assert set(a.gold["split"]) == {"gold"}
    assert a.per_label == {"neg": 10, "neu": 10, "pos": 10}
    assert sorted(a.gold["id"].to_list() + a.remainder["id"].to_list()) == sorted(df["id"].to_list())
    assert freeze(df, 30, seed=5).lock["ids"] != a.lock["ids"]


def test_lock_names_content_count_ids_time_and_input():
    result = freeze(labelled(12), 4, seed=0, source="test.parquet", source_sha256="abc", created_at="T")
    lock = result.lock
    assert lock["count"] == 4 and lock["ids"] == sorted(result.gold["id"].to_list())
    assert lock["records"] == record_hashes(result.gold)
    assert lock["sha256"] == content_sha256(lock["records"])
    assert lock["created_at"] == "T"
    assert lock["input"] == {"file": "test.parquet", "sha256": "abc", "records": 12}


def test_freeze_refuses_bad_requests():
    with pytest.raises(UsageProblem, match=r"-n 20 asks for more records than x.jsonl has \(12\)"):
        freeze(labelled(12), 20, source="x.jsonl")
    twice = pl.concat([labelled(3), labelled(3)])
    with pytest.raises(DataError, match="3 id\\(s\\) occur more than once"):
        freeze(twice, 2)


def test_freeze_warns_about_training_records():
    df = labelled(10).with_columns(pl.lit("train").alias("split"))
    assert "10 input record(s) have split=train" in freeze(df, 2).warnings[0]


# --------------------------------------------------------------------------- verify


def test_lock_catches_edit_addition_and_removal():
    result = freeze(labelled(30), 10, seed=1)
    gold, lock = result.gold, result.lock
    assert check_lock(gold, lock).ok
    victim, removed = gold["id"][0], gold["id"][1]
    edited = gold.with_columns(
        pl.when(pl.col("id") == victim).then(pl.lit("other")).otherwise(pl.col("label")).alias("label")
    ).filter(pl.col("id") != removed)
    extra = from_dicts([chat("new", "x", id="intruder")]).with_columns(pl.lit("gold").alias("split"))
    check = check_lock(pl.concat([edited, extra]), lock)
    assert not check.ok
    assert (check.changed, check.added, check.removed) == ([victim], ["intruder"], [removed])
    with pytest.raises(DataError, match="not a gold lock file"):
        check_lock(gold, {"format": "something else"}, "x.json")


def test_exact_overlap_ignores_case_and_spacing():
    gold = from_dicts([chat("What is  the capital of France?", "Paris", id="g1")])
    train = from_dicts(
        [chat("unrelated", "x", id="t0"), chat("what is the CAPITAL of france?", "Lyon", id="t1")]
    )
    found = exact_overlap(gold, train, "train.jsonl")
    assert found.select("gold_id", "train_id", "train_row", "kind").rows() == [
        ("g1", "t1", 1, "same-prompt")
    ]


def test_verify_finds_near_duplicates_through_leakcheck():
    question = (
        "A farmer has seventeen sheep and buys nine more at the spring market, then sells four "
        "of them to a neighbour who keeps goats; how many sheep does the farmer have now"
    )
    gold = from_dicts([chat(question, "22", id="g1")])
    lock = freeze(gold, 1).lock
    gold = gold.with_columns(pl.lit("gold").alias("split"))
    train = from_dicts([chat("Please answer: " + question.replace("seventeen", "17"), "22", id="t9")])
    result = verify(gold, lock, {"train.parquet": train})
    assert result.near_duplicate_check
    assert not result.ok
    row = result.blocking.row(0, named=True)
    assert row["gold_id"] == "g1" and row["train_id"] == "t9"
    assert row["kind"].startswith("leakcheck:")
    exact_only = verify(gold, lock, {"train.parquet": train}, near=False)
    assert exact_only.ok and exact_only.overlap.height == 0


# --------------------------------------------------------------------------- score


def test_score_classification_with_baselines_and_worst():
    gold = labelled(6)  # labels pos neg neu pos neg neu
    result = score(gold, preds({"r0": "pos", "r1": "neg", "r2": "pos", "r3": "pos", "r4": "neu",
                                "r5": "neu"}))
    entry = result.report["tasks"]["classification"]
    assert entry["metrics"]["accuracy"] == pytest.approx(4 / 6)
    assert set(entry["baselines"]) == {"majority", "copy_input"}
    assert entry["baselines"]["majority"]["accuracy"] == pytest.approx(2 / 6)
    assert result.metric("accuracy") == result.metric("classification.accuracy")
    assert result.worst(2)["id"].to_list() == ["r2", "r4"]


def test_score_qa_and_summarization_mixed_tasks():
    gold = from_dicts([
        chat("Capital of France?", "Paris", id="q1", task="qa"),
        chat("Largest planet?", "Jupiter", id="q2", task="qa"),
        chat("Summarize: the cat sat on the mat all day", "cat sat on mat", id="s1",
             task="summarization"),
    ])
    result = score(gold, preds({"q1": "paris.", "q2": "Saturn", "s1": "the cat sat"}))
    assert result.metric("qa.exact_match") == 0.5
    assert result.metric("qa.f1") == 0.5
    assert result.report["tasks"]["qa"]["baselines"]["empty"]["exact_match"] == 0.0
    assert result.metric("summarization.rougeL") == pytest.approx(2 * (2 / 3 * 2 / 4) / (2 / 3 + 2 / 4))
    assert result.metric("f1") == 0.5  # unqualified: only qa has f1 here


def test_missing_and_unknown_predictions():
    gold = labelled(3)
    with pytest.raises(DataError, match=r"1 gold id\(s\) have no prediction \(first: r2\); "
                                        r"1 prediction id\(s\) are not in the gold set"):
        score(gold, preds({"r0": "pos", "r1": "neg", "zz": "pos"}), predictions_name="p.jsonl")
    result = score(gold, preds({"r0": "pos", "r1": "neg", "zz": "pos"}), allow_missing=True)
    assert result.report["missing"] == ["r2"] and result.report["unknown"] == ["zz"]
    assert result.metric("accuracy") == pytest.approx(2 / 3)  # missing counts as wrong


def test_score_needs_a_task_and_columns():
    gold = from_dicts([chat("hi", "hello", id="a")])
    with pytest.raises(DataError, match=r"field 'task': 1 gold record\(s\) have no task"):
        score(gold, preds({"a": "hello"}))
    with pytest.raises(DataError, match="missing column\\(s\\) prediction"):
        score(gold, pl.DataFrame({"id": ["a"]}), task="chat")


def test_chat_scorer_is_pluggable():
    gold = from_dicts([chat("hi", "hello there", id="a", task="chat"),
                       chat("bye", "goodbye", id="b", task="chat")])

    def has_reference_word(prediction, reference, record):
        return float(reference.split()[0] in prediction)

    result = score(gold, preds({"a": "hello!", "b": "see you"}), scorer=has_reference_word)
    metrics = result.report["tasks"]["chat"]["metrics"]
    assert metrics["scorer"] == 0.5 and metrics["mean_chars"] == 6.5
    assert result.worst(1)["id"].to_list() == ["b"]


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_ag_news_gold_freeze_and_score(realdata):
    path = realdata / "datasets/classification/ag_news_samples.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    df = from_dicts([
        chat(f"{r['title']}\n{r['description']}", r["label"], id=f"ag{i}", label=r["label"],
             task="classification")
        for i, r in enumerate(rows)
    ])
    frozen = freeze(df, 200, seed=0)
    counts = frozen.gold.group_by("label").len()
    shares = {r["label"]: r["len"] / 200 for r in counts.iter_rows(named=True)}
    overall = {r["label"]: r["len"] / df.height for r in df.group_by("label").len().iter_rows(named=True)}
    assert all(abs(shares[k] - overall[k]) <= 0.01 for k in overall)  # stratified by label
    # a keyword "model" so the metrics see a real, imperfect classifier
    keyword = {"World": "World", "Sports": "Sports", "Business": "Business", "Sci/Tech": "Sci/Tech"}

    def guess(text: str) -> str:
        t = text.lower()
        if any(w in t for w in ("game", "season", "cup", "coach", "win")):
            return keyword["Sports"]
        if any(w in t for w in ("software", "internet", "computer", "space", "microsoft")):
            return keyword["Sci/Tech"]
        if any(w in t for w in ("stocks", "oil", "profit", "shares", "company")):
            return keyword["Business"]
        return keyword["World"]

    predictions = {
        r["id"]: guess(r["messages"][0]["content"]) for r in frozen.gold.iter_rows(named=True)
    }
    result = score(frozen.gold, preds(predictions))
    entry = result.report["tasks"]["classification"]
    assert 0.3 < entry["metrics"]["accuracy"] < 1.0
    assert entry["metrics"]["accuracy"] > entry["baselines"]["majority"]["accuracy"]
    assert sum(map(sum, entry["confusion_matrix"]["matrix"])) == 200


@pytest.mark.realdata
def test_gsm8k_templated_near_duplicate_is_caught(realdata):
    """GSM8K test's "Max bought stamps" is a templated twin of train's "Bella bought stamps"."""

    def load(name, keep):
        out = []
        lines = (realdata / "benchmarks/gsm8k" / name).read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            item = json.loads(line)
            if i < keep or "bought stamps at the post office" in item["question"]:
                out.append(chat(item["question"], item["answer"], id=f"{name}-{i}", task="qa"))
        return from_dicts(out)

    gold = load("test.jsonl", 40).with_columns(pl.lit("gold").alias("split"))
    lock = {"format": "sftdata-gold-lock", "records": record_hashes(gold),
            "sha256": content_sha256(record_hashes(gold))}
    train = load("train.jsonl", 300)
    result = verify(gold, lock, {"gsm8k-train": train})
    assert result.lock.ok
    assert not result.ok
    flagged = result.blocking.filter(pl.col("kind").str.contains("leakcheck"))
    pairs = {(r["gold_id"], r["train_id"]) for r in flagged.iter_rows(named=True)}
    assert ("test.jsonl-632", "train.jsonl-20") in pairs  # Max's stamps ~ Bella's stamps
    assert "bought stamps at the post office" in flagged.row(0, named=True)["evidence"]


# --------------------------------------------------------------------------- verify: templates

def ag_headlines(count: int, seed: int) -> list[str]:
    return made_up_stories(count, seed, words=(4, 12))


def ag_set(titles: list[str], prefix: str) -> pl.DataFrame:
    return from_dicts([chat(AG_TEMPLATE + t, "World", id=f"{prefix}{i}", label="World")
                       for i, t in enumerate(titles)])


def test_verify_ignores_a_shared_13_word_template():
    titles = ag_headlines(300, seed=3)
    gold = ag_set(titles[:100], "g")
    lock = freeze(gold, 100).lock
    gold = gold.with_columns(pl.lit("gold").alias("split"))
    train = ag_set(titles[100:], "t")
    result = verify(gold, lock, {"train.parquet": train})
    assert result.ok and result.overlap.height == 0


def test_verify_still_fails_on_a_copied_headline_under_the_template():
    titles = ag_headlines(300, seed=3)
    gold = ag_set(titles[:100], "g")
    lock = freeze(gold, 100).lock
    gold = gold.with_columns(pl.lit("gold").alias("split"))
    # one gold headline in the training data, under the same template and with an edit
    copied = AG_TEMPLATE + titles[5] + " reports"
    train = pl.concat([ag_set(titles[100:], "t"),
                       from_dicts([chat(copied, "World", id="copy", label="World")])])
    result = verify(gold, lock, {"train.parquet": train})
    assert not result.ok
    assert result.blocking.select("gold_id", "train_id").rows() == [("g5", "copy")]
    assert result.blocking["kind"].to_list() == ["leakcheck:ngram"]
