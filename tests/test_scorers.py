"""Answer parsers and scorer choice for benchmark gold sets (sftdata/scorers.py)."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from sftdata.scorers import (
    auto_scorer,
    format_number,
    group_name,
    options_in,
    parse_choice,
    parse_number,
    score_one,
)

OPTIONS = ["paralysis of the facial muscles.", "a recessive maxilla",
           "an enlarged frontal bone due to hydrocephaly.", "Paris"]


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        (" C.", "C"),
        ("(D)", "D"),
        ("[A]", "A"),
        ("**C**", "C"),
        ("`B`", "B"),
        ("The answer is (B)", "B"),
        ("The answer is B.", "B"),
        ("the answer is c", "C"),
        ("Answer: D", "D"),
        ("answer: (a)", "A"),
        ("The correct answer is: **C) an enlarged frontal bone**", "C"),
        ("The correct option is B because the maxilla fails to elongate.", "B"),
        ("I would choose D.", "D"),
        ("B) a recessive maxilla", "B"),
        ("(B) a recessive maxilla", "B"),
        ("C. an enlarged frontal bone due to hydrocephaly.", "C"),
        ("D: Paris", "D"),
        ("Paris", "D"),
        ("paris.", "D"),
        ("It is a recessive maxilla.", "B"),
        ("An enlarged frontal bone due to hydrocephaly", "C"),
        ("I'd go with C", "C"),
        ("A lesion here causes paralysis of the facial muscles.", "A"),
        ("Looking at the options, A is wrong and so is C; the answer is D.", "D"),
        ("\\boxed{B}", "B"),
    ],
)
def test_parse_choice_reads_free_text_answers(answer, letter):
    assert parse_choice(answer, OPTIONS) == letter


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "I don't know.",
        "E",  # not an option
        "The answer is a bird that flies.",  # 'a' is the article here
        "A or C, hard to say",  # two letters
        "A cat sat on the mat.",  # article only
        "Both B and C are plausible.",
    ],
)
def test_parse_choice_refuses_what_picks_no_single_option(answer):
    assert parse_choice(answer, OPTIONS) is None


def test_parse_choice_prefers_the_longest_contained_option():
    options = ["paralysis of the facial muscles", "paralysis of the facial muscles and loss of taste"]
    assert parse_choice("Paralysis of the facial muscles and loss of taste.", options) == "B"


def test_options_in_reads_mmlu_and_truthfulqa_prompts():
    prompt = "2+2?\nA. 3\nB. 4\nC. 5\nD. 6"
    assert options_in(prompt) == {"A": "3", "B": "4", "C": "5", "D": "6"}
    assert options_in("Pick one:\n(A) yes\n(B) no") == {"A": "yes", "B": "no"}
    assert options_in("A. only one option") == {}
    assert options_in("no options here") == {}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("#### 42", 42),
        ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18"
         " every day at the farmer's market.\n#### 18", 18),
        ("#### 1,234", 1234),
        ("The answer is 42.", 42),
        ("The answer is 42.0", 42),
        ("So the total is $1,250.50.", Fraction(250100, 200)),
        ("She pays $18.00 in all.", 18),
        ("He has -3 degrees left", -3),
        ("The temperature is \u22125 now", -5),
        ("3/4 of the cake", Fraction(3, 4)),
        ("First 12 then 15, so 27 apples", 27),
        ("Answer: 7 apples, 3 pears", 7),
        ("That is 50% of 80 = 40", 40),
        ("1,000,000 people", 1000000),
        ("0.5", Fraction(1, 2)),
        (".5 hours", Fraction(1, 2)),
        ("**Answer:** 18", 18),
        ("The final answer is $\\boxed{18}$.", 18),
    ],
)
def test_parse_number_reads_final_answers(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", None, "no numbers here", "#### "])
def test_parse_number_none_without_a_number(text):
    assert parse_number(text) is None


def test_numbers_compare_as_values():
    assert parse_number("42.0") == parse_number("#### 42") == parse_number("$42")
    assert parse_number("1,234") == parse_number("1234.00")
    assert format_number(Fraction(42)) == "42" and format_number(Fraction(1, 2)) == "0.5"


def _mmlu_record(label="B", meta=None):
    return {
        "id": "m1", "task": "classification", "label": label, "meta": meta,
        "messages": [{"role": "user", "content": "2+2?\nA. 3\nB. 4\nC. 5\nD. 6"},
                     {"role": "assistant", "content": "B. 4"}],
    }


def test_auto_scorer_from_metadata_and_shape():
    assert auto_scorer(_mmlu_record(), "classification", "B") == "choice"
    assert auto_scorer(_mmlu_record(meta=json.dumps({"benchmark": "gsm8k"})), "qa", "x") == "number"
    assert auto_scorer(_mmlu_record(meta=json.dumps({"scorer": "number"})), "qa", "x") == "number"
    gsm = {"task": "qa", "label": None, "meta": None, "messages": []}
    assert auto_scorer(gsm, "qa", "Some steps.\n#### 1,234") == "number"
    assert auto_scorer(gsm, "qa", "Paris is the capital") is None
    label_task = {"task": "classification", "label": "fruit", "meta": None,
                  "messages": [{"role": "user", "content": "Category of: apple"}]}
    assert auto_scorer(label_task, "classification", "fruit") is None
    # a one-letter label that is not a listed option stays a plain label
    assert auto_scorer(_mmlu_record(label="E"), "classification", "E") is None
    assert group_name(_mmlu_record(meta=json.dumps({"benchmark": "mmlu"})), "classification",
                      "choice") == "mmlu"
    assert group_name(_mmlu_record(), "classification", "choice") == "choice"
    assert group_name(_mmlu_record(), "classification", None) == "classification"


def test_score_one():
    rec = _mmlu_record()
    assert score_one("choice", "The answer is (B)", "B. 4", rec) == {
        "score": 1.0, "parsed": "B", "expected": "B"}
    assert score_one("choice", "4", "B. 4", rec)["score"] == 1.0
    assert score_one("choice", "I am not sure", "B. 4", rec) == {
        "score": 0.0, "parsed": None, "expected": "B"}
    assert score_one("number", "so $18.00", "steps #### 18", {})["score"] == 1.0
    assert score_one("number", "so 19", "steps #### 18", {}) == {
        "score": 0.0, "parsed": "19", "expected": "18"}
    assert score_one("number", "none", "no number", {})["expected"] is None
