"""leakcheck on real data: GSM8K inside an Alpaca extension set, and planted benchmark items.

Benchmarks without a `convert` adapter (MMLU choices, HumanEval, TruthfulQA) are turned into
canonical records by the small loaders below; GSM8K and the Alpaca set go through `convert`.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from sftdata.cli import cli
from sftdata.ops.leakcheck import leakcheck
from sftdata.schema import conform, from_dicts
from sftdata.text import normalize, words

pytestmark = pytest.mark.realdata


def qa(rid: str, question: str, answer: str) -> dict:
    return {"id": rid, "messages": [{"role": "user", "content": question},
                                    {"role": "assistant", "content": answer}]}


def load_gsm8k(path: Path) -> pl.DataFrame:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return from_dicts([qa(f"gsm8k-{i}", r["question"], r["answer"]) for i, r in enumerate(rows)])


def load_mmlu(folder: Path) -> pl.DataFrame:
    """Question and lettered choices as the prompt, the letter as the answer (Polars: 14k rows)."""
    frames = [
        pl.read_csv(path, infer_schema=False).select(
            pl.format("{}-{}", pl.lit(path.stem), pl.int_range(pl.len())).alias("id"),
            pl.format("{}\nA. {}\nB. {}\nC. {}\nD. {}", "question", "choice0", "choice1",
                      "choice2", "choice3").alias("prompt"),
            pl.col("answer").replace_strict({"0": "A", "1": "B", "2": "C", "3": "D"}),
        )
        for path in sorted(folder.glob("*.csv"))
    ]
    turn = lambda role, text: pl.struct(pl.lit(role).alias("role"), text.alias("content"))  # noqa: E731
    return conform(pl.concat(frames).select(
        "id", pl.concat_list(turn("user", pl.col("prompt")), turn("assistant", pl.col("answer")))
        .alias("messages"),
    ))


def load_truthfulqa(path: Path) -> pl.DataFrame:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    return from_dicts([qa(f"tqa-{i}", r["Question"], r["Best Answer"]) for i, r in enumerate(rows)])


def load_humaneval(path: Path) -> pl.DataFrame:
    with gzip.open(path, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    return from_dicts([qa(r["task_id"], r["prompt"], r["canonical_solution"]) for r in rows])


def load_alpaca(path: Path) -> pl.DataFrame:
    rows = json.loads(path.read_text())
    return from_dicts([
        qa(f"{path.stem}-{i}", r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""),
           r["output"])
        for i, r in enumerate(rows)
    ])


def convert(args: list[str], out: Path) -> str:
    result = CliRunner().invoke(cli, ["convert", *args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return str(out)


def test_gsm8k_in_alpaca_is_flagged_against_gsm8k_train_and_only_near_copies_of_test(
    realdata, tmp_path
):
    bench = realdata / "benchmarks" / "gsm8k"
    train = convert([str(realdata / "datasets/alpaca_format/alpacacleaned_gsm_8k_train.json")],
                    tmp_path / "train.parquet")
    gmap = ["--map", "instruction=question,output=answer"]
    gsm_train = convert([str(bench / "train.jsonl"), *gmap], tmp_path / "gsm8k_train.parquet")
    # the documented pipe: sftdata convert test.jsonl | sftdata leakcheck TRAIN --against -
    piped = CliRunner().invoke(cli, ["convert", str(bench / "test.jsonl"), *gmap])
    assert piped.exit_code == 0, piped.stderr
    report = tmp_path / "leaks.json"
    result = CliRunner().invoke(cli, [
        "leakcheck", train, "--against", gsm_train, "--against", "gsm8k_test=-", "--no-near",
        "--report", str(report),
    ], input=piped.stdout_bytes)
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())["summary"]
    assert summary["train_records"] == 7473
    assert summary["references"]["gsm8k_train"]["contaminated_records"] == 7473

    # Against the test split only three records, all real near-copies of a test problem: the same
    # text with other numbers (train/plane, two records) or other names and numbers (stamps).
    flagged = {}
    records = pl.read_parquet(train)
    prompt = dict(zip(records["id"], [m[0]["content"] for m in records["messages"]], strict=True))
    for entry in json.loads(report.read_text())["contaminated"]:
        for match in entry["matches"]:
            if match["ref_set"] == "gsm8k_test" and match["confidence"] == "high":
                flagged[prompt[entry["train_id"]][:40]] = match["overlap"]
    assert sorted(flagged) == [
        "A train travels 270 miles in 3 hours. At",
        "A train travels 360 miles in 3 hours. At",
        "Bella bought stamps at the post office. ",
    ]
    assert summary["references"]["gsm8k_test"]["low_confidence_records"] == 1  # one shared sentence


def light_edit(text: str, rng: random.Random) -> str:
    """Case, whitespace or punctuation changed, a wrapper around it, one word replaced if long."""
    tokens = text.split(" ")
    if len(text.split()) >= 30:
        tokens[rng.randrange(len(tokens))] = rng.choice(["banana", "quickly", "seven"])
    text = " ".join(tokens)
    text = rng.choice([
        str.lower, lambda t: t.replace(" ", "  "), lambda t: t.rstrip("?.!"),
        lambda t: t.replace(". ", " . "),
    ])(text)
    prefix = rng.choice(["Question: ", "Please answer the following.\n", "Solve this: ", "", "Q: "])
    return prefix + text + rng.choice(["", " Answer:", "\nThink step by step.", " Thanks!"])


def test_planted_benchmark_items_are_found_with_few_false_positives(realdata):
    alpaca = realdata / "datasets" / "alpaca_format"
    clean = pl.concat([load_alpaca(alpaca / name) for name in (
        "llamafactory_alpaca_en_demo.json", "alpacacleaned_gpteacher_roleplay_deduped.json",
        "alpacacleaned_gpteacher_toolformer_sim0.6.json", "llamafactory_identity.json",
    )])
    bench = realdata / "benchmarks"
    benchmarks = {
        "gsm8k": load_gsm8k(bench / "gsm8k" / "test.jsonl"),
        "mmlu": load_mmlu(bench / "mmlu" / "test"),
        "truthfulqa": load_truthfulqa(bench / "truthfulqa" / "TruthfulQA.csv"),
        "humaneval": load_humaneval(bench / "humaneval" / "HumanEval.jsonl.gz"),
    }
    rng = random.Random(0)
    planted, generic = [], []
    for name, frame in benchmarks.items():
        prompts = [(i, m[0]["content"]) for i, m in zip(frame["id"], frame["messages"], strict=True)]
        rng.shuffle(prompts)
        # items of at least --min-ngram (8) words can be told apart from chance collisions;
        # shorter ones are generic and must come out as low-confidence
        long_enough, short = [], []
        for i, q in prompts:
            bucket = long_enough if len(words(normalize(q))) >= 8 else short
            bucket.append((i, q))
            if len(long_enough) >= 100 and len(short) >= 5:
                break
        planted += [qa(f"planted-{name}-{i}", light_edit(q, rng), "an answer")
                    for i, q in long_enough[:100]]
        generic += [qa(f"generic-{name}-{i}", q, "an answer") for i, q in short[:5]]
    train = pl.concat([clean, from_dicts(planted + generic)])

    result = leakcheck(train, benchmarks)

    planted_ids = {p["id"] for p in planted}
    found = set(result.contaminated_ids)
    recall = len(found & planted_ids) / len(planted_ids)
    false_positives = found - planted_ids
    assert len(planted_ids) == 400 and recall >= 0.99
    assert len(false_positives) <= 0.001 * clean.height, sorted(false_positives)
    # generic short items (under 8 words) are reported apart, never silently ignored
    assert {g["id"] for g in generic} <= set(result.low_confidence_ids)
    # LLaMA-Factory's identity set opens with "Who are you?", a TruthfulQA item: low confidence
    who = result.matches.filter(pl.col("ref_id") == "tqa-105")
    assert who["confidence"].to_list() and set(who["confidence"]) == {"low"}
