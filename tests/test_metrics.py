"""Metrics against hand-computed cases and reference implementations (scikit-learn, rouge-score)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from sklearn import metrics as skm

from sftdata.metrics import (
    accuracy,
    baseline_predictions,
    confusion_matrix,
    exact_match,
    extraction_counts,
    length_stats,
    macro_f1,
    normalize_answer,
    parse_json,
    prf,
    rouge_l,
    task_scores,
    token_f1,
)

LABELS = st.sampled_from(["World", "Sports", "Business", "Sci/Tech"])


def test_classification_hand_computed():
    refs = ["a", "a", "b", "c"]
    preds = ["a", "b", "b", "b"]
    assert accuracy(refs, preds) == 0.5
    # F1: a = 2*1/(1+2) = 2/3, b = 2*1/(3+1) = 1/2, c = 0 -> macro 7/18
    assert macro_f1(refs, preds) == pytest.approx(7 / 18)
    assert confusion_matrix(refs, preds) == (["a", "b", "c"], [[1, 1, 0], [0, 1, 0], [0, 1, 0]])


@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=30, deadline=None)
@given(pairs=st.lists(st.tuples(LABELS, LABELS), min_size=1, max_size=40))
def test_classification_matches_scikit_learn(pairs):
    refs, preds = [p[0] for p in pairs], [p[1] for p in pairs]
    assert accuracy(refs, preds) == pytest.approx(skm.accuracy_score(refs, preds))
    assert macro_f1(refs, preds) == pytest.approx(
        skm.f1_score(refs, preds, average="macro", zero_division=0)
    )
    gold_labels = sorted(set(refs))
    assert macro_f1(refs, preds, gold_labels) == pytest.approx(
        skm.f1_score(refs, preds, labels=gold_labels, average="macro", zero_division=0)
    )
    labels, matrix = confusion_matrix(refs, preds)
    assert matrix == skm.confusion_matrix(refs, preds, labels=labels).tolist()


def test_squad_normalization_and_scores():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("The Eiffel Tower", "eiffel tower.") == 1.0
    assert exact_match("Paris", "Paris, France") == 0.0
    # pred "paris france" vs ref "paris": P = 1/2, R = 1 -> F1 = 2/3
    assert token_f1("Paris", "Paris, France") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0  # SQuAD v2 empty answers
    assert token_f1("a", "") == 1.0  # an article alone normalizes to the empty answer
    assert token_f1("red blue", "green") == 0.0


ASCII_WORDS = st.lists(
    st.sampled_from(["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "Mat", "7", "x-y", "it's"]),
    max_size=25,
)


@settings(max_examples=80, deadline=None)
@given(ref=ASCII_WORDS, pred=ASCII_WORDS)
def test_rouge_l_matches_rouge_score(ref, pred):
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    a, b = " ".join(ref), " ".join(pred)
    expected = scorer.score(a, b)["rougeL"].fmeasure
    assert rouge_l(a, b) == pytest.approx(expected)


def test_rouge_l_hand_computed_and_non_ascii():
    # LCS of "the cat sat on the mat" / "the cat is on a mat" = the cat on mat (4); P = R = 4/6
    assert rouge_l("the cat sat on the mat", "the cat is on a mat") == pytest.approx(2 / 3)
    assert rouge_l("猫が座った", "猫が座った") == 1.0  # rouge-score would drop these letters
    assert rouge_l("", "anything") == 0.0


def test_json_parsing_accepts_code_fences():
    assert parse_json('```json\n{"a": 1}\n```') == (True, {"a": 1})
    assert parse_json("{a: 1}") == (False, None)


def test_extraction_entities_hand_computed():
    ref = json.dumps([{"type": "PER", "text": "John Smith"}, {"type": "LOC", "text": "Paris"}])
    pred = json.dumps([{"type": "PER", "text": "john  smith"}, {"type": "ORG", "text": "Paris"}])
    counts = extraction_counts(ref, pred)
    assert (counts["tp"], counts["n_pred"], counts["n_ref"], counts["valid"]) == (1, 2, 2, True)
    assert prf(1, 2, 2) == (0.5, 0.5, 0.5)


def test_extraction_fields_and_invalid_json():
    ref = '{"name": "Ada", "langs": ["en", "fr"], "age": 36}'
    pred = '{"name": "ada", "langs": ["en"], "age": "36"}'
    counts = extraction_counts(ref, pred)
    # fields: name=ada ok, langs[]=en ok, langs[]=fr missed, age 36 = "36" (values compare as text)
    assert (counts["tp"], counts["n_pred"], counts["n_ref"]) == (3, 3, 4)
    broken = extraction_counts(ref, "name: Ada")
    assert broken["valid"] is False and broken["tp"] == 0 and broken["n_pred"] == 0


def test_extraction_task_metrics_and_validity_rate():
    refs = ['["a", "b"]', '["c"]']
    preds = ['["a"]', "not json"]
    metrics, per_example, _ = task_scores("extraction", refs, preds)
    assert metrics["precision"] == 1.0
    assert metrics["recall"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(0.5)
    assert metrics["json_valid_rate"] == 0.5
    assert per_example == [pytest.approx(2 / 3), 0.0]


def test_classification_task_maps_unknown_predictions_to_other():
    metrics, per_example, extras = task_scores("classification", ["a", "b", "a"], ["a ", "zzz", "b"])
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["invalid_label_rate"] == pytest.approx(1 / 3)
    assert extras["confusion_matrix"]["predicted"] == ["a", "b", "(other)"]
    assert extras["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 0, 1]]
    assert per_example == [1.0, 0.0, 0.0]


def test_length_stats_hand_computed():
    stats = length_stats(["ab", "abcd", "", "abcdef"], ["xx", "xx", "xx", "xx"])
    assert stats["mean_chars"] == 3.0
    assert stats["median_chars"] == 3.0
    assert stats["max_chars"] == 6.0
    assert stats["empty_rate"] == 0.25
    assert stats["length_ratio"] == 1.5


def test_baselines():
    refs = ["b", "a", "b", "a"]
    assert baseline_predictions("majority", refs, []) == ["a"] * 4  # ties: the smallest
    assert baseline_predictions("copy_input", refs, ["1", "2", "3", "4"]) == ["1", "2", "3", "4"]
    assert baseline_predictions("empty", refs, []) == [""] * 4


def test_metrics_module_does_not_import_reference_implementations():
    import subprocess
    import sys

    code = (
        "import sys, sftdata.metrics, sftdata.ops.gold;"
        "print([m for m in ('sklearn', 'rouge_score', 'nltk') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
