"""Benchmark test sets convert in their own shapes (GSM8K, MMLU, TruthfulQA, HumanEval, MT-Bench)."""

from __future__ import annotations

import csv
import gzip
import json

import pytest
from click.testing import CliRunner

from sftdata.cli import cli
from sftdata.formats import detect
from sftdata.formats._base import Options, RowProblem
from sftdata.formats.benchmarks import to_records


def _convert(path):
    result = CliRunner().invoke(cli, ["convert", str(path)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_mmlu_row_lists_choices_and_answers_with_the_letter():
    row = {"question": "2+2?", "choice0": "3", "choice1": "4", "choice2": "5", "choice3": "6", "answer": "1"}
    assert detect(row) == "benchmark"
    (rec,) = to_records(row, Options())
    assert rec["messages"][0]["content"] == "2+2?\nA. 3\nB. 4\nC. 5\nD. 6"
    assert rec["messages"][1]["content"] == "B. 4"
    assert (rec["label"], rec["task"]) == ("B", "classification")


def test_gsm8k_truthfulqa_humaneval_mtbench_shapes():
    opts = Options()
    gsm = to_records({"question": "q?", "answer": "a #### 4"}, opts)[0]
    assert [m["role"] for m in gsm["messages"]] == ["user", "assistant"] and gsm["task"] == "qa"
    tqa = to_records({"Question": "Who?", "Best Answer": "Me", "Category": "Misc"}, opts)[0]
    assert tqa["messages"][1]["content"] == "Me" and tqa["label"] == "Misc"
    he = to_records({"task_id": "HumanEval/1", "prompt": "def f():", "canonical_solution": " pass",
                     "test": "", "entry_point": "f"}, opts)[0]
    assert he["id"] == "HumanEval/1" and json.loads(he["meta"])["entry_point"] == "f"
    mt = to_records({"question_id": 81, "category": "writing", "turns": ["a", "b"]}, opts)[0]
    assert mt["id"] == "q81" and [m["role"] for m in mt["messages"]] == ["user", "user"]


def test_bad_mmlu_answer_exact_error_and_exit_code(tmp_path):
    path = tmp_path / "mmlu.csv"
    path.write_text("question,choice0,choice1,answer\nq,a,b,7\n")
    result = CliRunner().invoke(cli, ["convert", str(path)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {path}, row 1: field 'answer': '7' is neither a choice index nor a letter. "
        "Fix: use 0-1 or A-B\n"
    )


def test_empty_mtbench_turns_exact_error_then_rejected_with_reason(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 1, "turns": []}\n{"question_id": 2, "turns": ["hi"]}\n')
    result = CliRunner().invoke(cli, ["convert", str(path)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {path}, line 1: field 'turns': must be a non-empty list of strings. "
        'Fix: give the questions as strings, e.g. "turns": ["first question"]\n'
    )
    rejects = tmp_path / "rejects.jsonl"
    result = CliRunner().invoke(cli, ["convert", str(path), "--rejects", str(rejects)])
    assert result.exit_code == 0
    assert [json.loads(x)["id"] for x in result.stdout.splitlines()] == ["q2"]
    (reject,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert reject["line"] == 1 and "turns" in reject["reason"]
    assert "2 rows in = 1 records out + 1 rejected" in result.stderr


def test_gzipped_jsonl_is_read(tmp_path):
    path = tmp_path / "HumanEval.jsonl.gz"
    rows = [{"task_id": f"H/{i}", "prompt": "p", "canonical_solution": f"s{i}"} for i in range(3)]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert [r["id"] for r in _convert(path)] == ["H/0", "H/1", "H/2"]


@pytest.mark.parametrize(
    "rel, count",
    [
        ("gsm8k/test.jsonl", 1319),
        ("truthfulqa/TruthfulQA.csv", 817 - 4),
        ("humaneval/HumanEval.jsonl.gz", 164),
        ("mt_bench/question.jsonl", 80),
        ("vicuna_bench/question.jsonl", 80),
    ],
)
def test_real_benchmarks_convert_with_detection(realdata, rel, count):
    assert len(_convert(realdata / "benchmarks" / rel)) == count


def test_real_mmlu_counts_match_the_csv(realdata):
    path = realdata / "benchmarks/mmlu/test/anatomy_test.csv"
    with open(path, newline="") as fh:
        expected = sum(1 for _ in csv.DictReader(fh))
    records = _convert(path)
    assert len(records) == expected
    assert {r["label"] for r in records} <= set("ABCD")


def test_benchmark_records_name_their_benchmark_in_meta():
    opts = Options()
    gsm = to_records({"question": "q?", "answer": "a #### 4"}, opts)[0]
    mmlu = to_records({"question": "q", "A": "x", "B": "y", "answer": "B"}, opts)[0]
    tqa = to_records({"Question": "Who?", "Best Answer": "Me"}, opts)[0]
    assert [json.loads(r["meta"])["benchmark"] for r in (gsm, mmlu, tqa)] == [
        "gsm8k", "mmlu", "truthfulqa"]


def test_truthfulqa_as_classification_is_mc1_with_lettered_options():
    row = {"Question": "Why do veins appear blue?", "Best Answer": "Light penetration",
           "Incorrect Answers": "Deoxygenated blood; Blue blood ; Light penetration; Veins are blue;"
                                " Extra wrong", "Category": "Misconceptions"}
    (rec,) = to_records(row, Options(task="classification"))
    prompt, answer = rec["messages"][0]["content"], rec["messages"][1]["content"]
    lines = prompt.splitlines()
    assert lines[0] == "Why do veins appear blue?" and len(lines) == 5
    options = {line[0]: line[3:] for line in lines[1:]}
    # the best answer and the first three distinct incorrect ones (the best answer not repeated)
    assert sorted(options.values()) == sorted(["Light penetration", "Deoxygenated blood",
                                               "Blue blood", "Veins are blue"])
    assert options[rec["label"]] == "Light penetration"
    assert answer == f"{rec['label']}. Light penetration" and rec["task"] == "classification"
    meta = json.loads(rec["meta"])
    assert meta["benchmark"] == "truthfulqa" and meta["Category"] == "Misconceptions"
    # the order is fixed by the question: converting again gives the same record
    assert to_records(row, Options(task="classification")) == [rec]


def test_truthfulqa_mc1_without_incorrect_answers_is_a_row_problem():
    with pytest.raises(RowProblem, match="no incorrect answer to offer as an option"):
        to_records({"Question": "q", "Best Answer": "a", "Incorrect Answers": " ; a"},
                   Options(task="classification"))


def test_real_truthfulqa_mc1_spreads_the_answer_letter(realdata):
    records = _convert(realdata / "benchmarks/truthfulqa/TruthfulQA.csv")
    assert {r["task"] for r in records} == {"qa"}
    result = CliRunner().invoke(cli, ["convert", str(realdata / "benchmarks/truthfulqa/TruthfulQA.csv"),
                                      "--task", "classification"])
    mc = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(mc) == len(records)
    labels = [r["label"] for r in mc]
    assert all(labels.count(letter) > len(mc) / 8 for letter in "ABCD")
