"""Benchmark test sets in their own shapes, so they can go through `convert` into `leakcheck`
and `gold`: GSM8K, MMLU, TruthfulQA, HumanEval, MT-Bench / Vicuna-bench questions.

| shape | keys | record |
| --- | --- | --- |
| GSM8K | question, answer | user question, assistant answer; task qa |
| MMLU | question, choice0..3 (or A..D), answer | question with lettered choices, answer letter + text; label = letter |
| TruthfulQA | Question, Best Answer | user question, assistant best answer; task qa |
| TruthfulQA MC1 (`--task classification`) | + Incorrect Answers | question with 2-4 lettered options (the best answer and the first three incorrect ones, in an order fixed by a hash of the question), answer letter + text; label = letter |

Every record's meta names its benchmark (`"benchmark": "mmlu"`), so that `gold score` picks the
scorer that fits the shape: the option letter parsed from free text for MMLU and TruthfulQA MC1,
the final number for GSM8K (sftdata/scorers.py).
| HumanEval | task_id, prompt, canonical_solution | user prompt, assistant solution; id = task_id; task completion |
| MT-Bench | question_id, turns | one user message per turn, no answer (prompts for generation) |
"""

from __future__ import annotations

import hashlib
from typing import Any

from ._base import Options, RowProblem, make_message, others, record, require, require_str

NAME = "benchmark"
LETTERS = "ABCD"


def kind(row: dict[str, Any]) -> str | None:
    keys = set(row)
    if {"task_id", "prompt", "canonical_solution"} <= keys:
        return "humaneval"
    if {"Question", "Best Answer"} <= keys:
        return "truthfulqa"
    if {"question_id", "turns"} <= keys:
        return "mtbench"
    if "question" in keys and "answer" in keys:
        if {"choice0", "choice1"} <= keys or {"A", "B"} <= keys:
            return "mmlu"
        return "gsm8k"
    return None


def matches(row: dict[str, Any]) -> bool:
    return kind(row) is not None


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    shape = kind(row)
    if shape is None:
        raise RowProblem(None, "not a known benchmark shape (GSM8K, MMLU, TruthfulQA, "
                         "HumanEval, MT-Bench)", "force another format with --from")
    return [_BUILDERS[shape](row, opts)]


def _gsm8k(row: dict[str, Any], opts: Options) -> dict[str, Any]:
    messages = [
        make_message("user", require_str(row, "question", NAME), "question"),
        make_message("assistant", require_str(row, "answer", NAME), "answer"),
    ]
    return record(messages, opts, id=row.get("id"), task="qa",
                  extras={**others(row, ("id", "question", "answer")), "benchmark": "gsm8k"})


def _mmlu(row: dict[str, Any], opts: Options) -> dict[str, Any]:
    keys = [f"choice{i}" for i in range(4)] if "choice0" in row else list(LETTERS)
    choices = [require_str(row, k, NAME) for k in keys if k in row]
    answer = str(require(row, "answer", NAME)).strip()
    letter = LETTERS[int(answer)] if answer.isdigit() and int(answer) < len(choices) else answer
    if letter not in LETTERS[: len(choices)]:
        raise RowProblem("answer", f"{answer!r} is neither a choice index nor a letter",
                         f"use 0-{len(choices) - 1} or A-{LETTERS[len(choices) - 1]}")
    question = require_str(row, "question", NAME)
    listing = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    answer_text = f"{letter}. {choices[LETTERS.index(letter)]}"
    messages = [
        make_message("user", f"{question}\n{listing}", "question"),
        make_message("assistant", answer_text, "answer"),
    ]
    return record(messages, opts, id=row.get("id"), task="classification", label=letter,
                  extras={**others(row, ("id", "question", "answer", *keys)), "benchmark": "mmlu"})


def _truthfulqa(row: dict[str, Any], opts: Options) -> dict[str, Any]:
    if opts.task == "classification":
        return _truthfulqa_mc1(row, opts)
    messages = [
        make_message("user", require_str(row, "Question", NAME), "Question"),
        make_message("assistant", require_str(row, "Best Answer", NAME), "Best Answer"),
    ]
    return record(messages, opts, task="qa", label=row.get("Category"),
                  extras={**others(row, ("Question", "Best Answer")), "benchmark": "truthfulqa"})


def _truthfulqa_mc1(row: dict[str, Any], opts: Options) -> dict[str, Any]:
    """MC1 as lettered options, for generation: a model that writes its answer is scored by the
    letter it picks. The best answer and the first three distinct incorrect answers, ordered by
    a hash of the question and option (the source lists the correct answer first; a model must
    not learn "always A")."""
    question = require_str(row, "Question", NAME)
    best = require_str(row, "Best Answer", NAME).strip()
    raw = require_str(row, "Incorrect Answers", NAME)
    wrong: list[str] = []
    for text in (t.strip() for t in raw.split(";")):
        if text and text != best and text not in wrong:
            wrong.append(text)
    if not wrong:
        raise RowProblem("Incorrect Answers", "no incorrect answer to offer as an option",
                         "give incorrect answers separated by ';', or convert without "
                         "--task classification (question and best answer)")
    options = sorted([best, *wrong[: len(LETTERS) - 1]], key=lambda o: _order(question, o))
    letter = LETTERS[options.index(best)]
    listing = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    messages = [
        make_message("user", f"{question}\n{listing}", "Question"),
        make_message("assistant", f"{letter}. {best}", "Best Answer"),
    ]
    return record(messages, opts, task="classification", label=letter,
                  extras={**others(row, ("Question", "Best Answer")), "benchmark": "truthfulqa"})


def _order(question: str, option: str) -> str:
    return hashlib.sha256(f"{question}\x1f{option}".encode()).hexdigest()


def _humaneval(row: dict[str, Any], opts: Options) -> dict[str, Any]:
    messages = [
        make_message("user", require_str(row, "prompt", NAME), "prompt"),
        make_message("assistant", require_str(row, "canonical_solution", NAME),
                     "canonical_solution"),
    ]
    return record(messages, opts, id=row["task_id"], task="completion",
                  extras=others(row, ("task_id", "prompt", "canonical_solution")))


def _mtbench(row: dict[str, Any], opts: Options) -> dict[str, Any]:
    turns = require(row, "turns", NAME)
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise RowProblem("turns", "must be a non-empty list of strings",
                         'give the questions as strings, e.g. "turns": ["first question"]')
    messages = [make_message("user", t, f"turns[{i}]") for i, t in enumerate(turns)]
    return record(messages, opts, id=f"q{row['question_id']}", task="chat",
                  label=row.get("category"), extras=others(row, ("question_id", "turns")))


_BUILDERS = {
    "gsm8k": _gsm8k,
    "mmlu": _mmlu,
    "truthfulqa": _truthfulqa,
    "humaneval": _humaneval,
    "mtbench": _mtbench,
}
