"""Several models on one gold set: intervals, paired differences, paired tests, --max-drop
(sftdata/stats.py, sftdata/ops/gold_stats.py, sftdata/ops/gold_score.py; the CLI in
tests/test_gold_multi_cli.py)."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
from conftest import chat
from scipy.stats import binomtest

from sftdata.errors import DataError, UsageProblem
from sftdata.ops.gold import score
from sftdata.ops.gold_score import compare, model_names
from sftdata.schema import from_dicts
from sftdata.stats import bootstrap, interval, mcnemar_exact, mean_of, permutation_test

LABELS = ["animal", "fruit", "tool", "vehicle"]


def gold_set(n=80, task="classification"):
    rows = [chat(f"Category of: item {i}", LABELS[i % 4], id=f"g{i}", label=LABELS[i % 4], task=task)
            for i in range(n)]
    return from_dicts(rows)


def preds(gold, right: set[int], wrong="tool"):
    labels = gold["label"].to_list()
    return pl.DataFrame({
        "id": gold["id"],
        "prediction": [lab if i in right else ("animal" if lab == wrong else wrong)
                       for i, lab in enumerate(labels)],
    })


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(("b", "c"), [(0, 0), (10, 2), (2, 10), (7, 7), (30, 12), (1, 0), (300, 260)])
def test_mcnemar_exact_equals_scipy_binomial_test(b, c):
    base = np.array([1] * b + [0] * c + [1] * 5 + [0] * 4)
    model = np.array([0] * b + [1] * c + [1] * 5 + [0] * 4)
    p, only_base, only_model = mcnemar_exact(base, model)
    assert (only_base, only_model) == (b, c)
    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert p == pytest.approx(expected, rel=1e-9)


def test_bootstrap_is_seeded_paired_and_covers_the_value():
    rng = random.Random(0)
    a = [float(rng.random() < 0.7) for _ in range(200)]
    b = [x if rng.random() < 0.9 else 1 - x for x in a]
    stats = [mean_of(a), mean_of(b)]
    one = bootstrap(stats, 500, seed=3)
    two = bootstrap(stats, 500, seed=3)
    other = bootstrap(stats, 500, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(one, two, strict=True))
    assert not np.array_equal(one[0], other[0])
    low, high = interval(one[0], 0.95)
    assert low < np.mean(a) < high
    # the normal approximation of a proportion's interval, roughly
    half = 1.96 * (np.mean(a) * (1 - np.mean(a)) / len(a)) ** 0.5
    assert high - low == pytest.approx(2 * half, rel=0.25)
    # paired: the difference's interval is much narrower than either model's interval
    d_low, d_high = interval(one[1] - one[0], 0.95)
    assert d_high - d_low < 0.8 * (high - low)


def test_permutation_test_identical_models_and_a_clear_difference():
    same = mean_of([0.2, 0.5, 0.9, 0.1] * 10)
    assert permutation_test(same, same, 200, seed=0) == 1.0
    low = mean_of([0.1] * 40)
    high = mean_of([0.9] * 40)
    assert permutation_test(low, high, 200, seed=0) == pytest.approx(1 / 201)


# --------------------------------------------------------------------------- every metric's statistic


def _check_statistics(result):
    for key, entry in result.report["tasks"].items():
        for metric, value in entry["metrics"].items():
            stat = result.statistics[key].get(metric)
            if stat is None:
                assert metric in {"median_chars", "p90_chars", "max_chars"}, metric
                continue
            assert stat.value() == pytest.approx(value, abs=1e-12), (key, metric)


def test_each_task_statistic_gives_back_the_reported_metric():
    rng = random.Random(1)
    rows, predictions = [], []
    for i in range(60):
        kind = ["classification", "qa", "extraction", "summarization", "chat"][i % 5]
        if kind == "classification":
            ref = rng.choice(LABELS)
            rows.append(chat(f"q{i}", ref, id=f"r{i}", label=ref, task=kind))
            predictions.append(rng.choice([*LABELS, "junk"]))
        elif kind == "qa":
            rows.append(chat(f"q{i}", "the red apple", id=f"r{i}", task=kind))
            predictions.append(rng.choice(["red apple", "an apple", "", "The red apple."]))
        elif kind == "extraction":
            rows.append(chat(f"q{i}", '["Paris", "Rome"]', id=f"r{i}", task=kind))
            predictions.append(rng.choice(['["Paris"]', "not json", '["Rome", "Paris"]', "[]"]))
        elif kind == "summarization":
            rows.append(chat(f"q{i}", "a cat sat on the mat", id=f"r{i}", task=kind))
            predictions.append(rng.choice(["the cat sat", "mat", "", "a cat sat on a mat"]))
        else:
            rows.append(chat(f"q{i}", "hello there friend", id=f"r{i}", task=kind))
            predictions.append(rng.choice(["hi", "", "hello there my friend, how are you"]))
    gold = from_dicts(rows)
    result = score(gold, pl.DataFrame({"id": gold["id"], "prediction": predictions}))
    assert set(result.report["tasks"]) == {"classification", "qa", "extraction", "summarization", "chat"}
    _check_statistics(result)


def test_builtin_scorer_statistics_and_custom_scorer():
    gold = from_dicts([chat(f"Q{i}?\nA. x{i}\nB. y{i}\nC. z{i}", "B. y", id=f"m{i}", label="B",
                            task="classification") for i in range(20)])
    answers = ["The answer is B", "(C)", "no idea", f"y{3}"] * 5
    result = score(gold, pl.DataFrame({"id": gold["id"], "prediction": answers}),
                   scorer=lambda p, r, rec: float(len(p) > 3))
    entry = result.report["tasks"]["choice"]
    assert entry["scorer"] == "choice" and entry["task"] == "classification"
    # "y3" is option B's text only for record m3; elsewhere it picks nothing
    assert entry["metrics"]["accuracy"] == pytest.approx(6 / 20)
    assert entry["metrics"]["unparsed_rate"] == pytest.approx(9 / 20)
    _check_statistics(result)


# --------------------------------------------------------------------------- compare


def test_compare_reports_intervals_differences_and_the_right_test():
    gold = gold_set(80)
    base = preds(gold, set(range(60)))
    tuned = preds(gold, set(range(20, 80)))
    out = compare(gold, [("base", "b.jsonl", base), ("tuned", "t.jsonl", tuned)], resamples=300)
    metrics = out.report["groups"]["classification"]["metrics"]
    acc = metrics["accuracy"]
    assert acc["test"] == "mcnemar-exact"
    assert metrics["macro_f1"]["test"] == "permutation"
    b, t = acc["models"]
    assert b["value"] == t["value"] == 0.75 and t["diff"] == 0
    assert (t["only_base_right"], t["only_model_right"]) == (20, 20) and t["p_value"] == 1.0
    assert b["ci"][0] < 0.75 < b["ci"][1] and t["diff_ci"][0] < 0 < t["diff_ci"][1]
    assert "p_value" in metrics["macro_f1"]["models"][1]
    assert out.report["models"][1]["predictions"] == "t.jsonl"


def test_max_drop_fails_only_beyond_noise():
    gold = gold_set(200)
    base = preds(gold, set(range(180)))  # 0.90
    far = preds(gold, set(range(100)))  # 0.50: far beyond any allowance
    near = preds(gold, set(range(172)))  # 0.86: drop 0.04, above 0.02 but within noise
    out = compare(gold, [("base", "b", base), ("far", "f", far), ("near", "n", near)],
                  resamples=500, max_drop={"accuracy": 0.02})
    gates = {g["model"]: g for g in out.gates}
    assert not gates["far"]["passed"] and gates["far"]["drop"] == pytest.approx(0.40)
    assert gates["far"]["drop_ci"][0] > 0.02
    assert gates["near"]["passed"] and gates["near"]["inconclusive"]
    assert gates["near"]["drop"] == pytest.approx(0.04) and gates["near"]["drop_ci"][0] <= 0.02
    assert [g["model"] for g in out.failed] == ["far"]


def test_max_drop_on_a_lower_is_better_metric_counts_an_increase_as_a_drop():
    gold = gold_set(100)
    base = preds(gold, set(range(100)))
    junk = base.with_columns(pl.Series("prediction", ["???"] * 100))
    out = compare(gold, [("base", "b", base), ("junk", "j", junk)], resamples=200,
                  max_drop={"invalid_label_rate": 0.1})
    (gate,) = out.gates
    assert gate["drop"] == pytest.approx(1.0) and not gate["passed"]


def test_min_gate_applies_to_every_model_but_the_base():
    gold = gold_set(40)
    out = compare(gold, [("base", "b", preds(gold, set())), ("tuned", "t", preds(gold, set(range(40))))],
                  resamples=50, minimum={"accuracy": 0.5})
    assert [(g["model"], g["passed"]) for g in out.gates] == [("tuned", True)]


def test_compare_usage_and_data_errors():
    gold = gold_set(10)
    good = preds(gold, set(range(5)))
    with pytest.raises(UsageProblem, match="no metric 'nope'; available: classification.accuracy"):
        compare(gold, [("a", "a", good), ("b", "b", good)], resamples=10, max_drop={"nope": 0.1})
    chat_gold = gold_set(10, task="chat")
    with pytest.raises(UsageProblem, match="chat.mean_chars has no better or worse direction"):
        compare(chat_gold, [("a", "a", good), ("b", "b", good)], resamples=10,
                max_drop={"mean_chars": 1})
    with pytest.raises(DataError, match=r"^b.jsonl: 1 gold id\(s\) have no prediction"):
        compare(gold, [("a", "a.jsonl", good), ("b", "b.jsonl", good.head(9))], resamples=10)
    extra = pl.concat([good, pl.DataFrame({"id": ["zz"], "prediction": ["x"]})])
    with pytest.raises(DataError, match=r"^c.jsonl: 1 prediction id\(s\) are not in the gold set"):
        compare(gold, [("a", "a.jsonl", good), ("c", "c.jsonl", extra)], resamples=10)


def test_model_names():
    assert model_names(["runs/base.jsonl", "x/tuned.jsonl"], None) == ["base", "tuned"]
    assert model_names(["a/p.jsonl", "b/p.jsonl"], None) == ["a/p.jsonl", "b/p.jsonl"]
    assert model_names(["a", "b"], ["x", "y"]) == ["x", "y"]
    with pytest.raises(UsageProblem, match="--names gives 1 name"):
        model_names(["a", "b"], ["x"])
