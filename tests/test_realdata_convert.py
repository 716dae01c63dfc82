"""Every dataset under ../shared/realdata/datasets converts with auto-detection.

Record counts are checked against counts computed here, independently, from the source files.
Files that are not conversation data are refused, each with the reason it is excluded.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sftdata.cli import cli

pytestmark = pytest.mark.realdata


def _json_items(path: Path) -> list:
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else [data]


def _jsonl_items(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _assistant_ends(node: dict) -> int:
    """Conversations in an OASST tree: live assistant messages with no live assistant below."""
    def walk(n: dict) -> tuple[int, bool]:  # (records, has an assistant in this subtree)
        if n.get("deleted"):
            return 0, False
        records, below = 0, False
        for child in n.get("replies") or []:
            r, has = walk(child)
            records, below = records + r, below or has
        if n["role"] == "assistant" and not below:
            return records + 1, True
        return records, below or n["role"] == "assistant"
    return walk(node)[0]


def _flat_oasst(items: list) -> int:
    children: dict = {}
    for m in items:
        children.setdefault(m["parent_message_id"], []).append(m)
    def tree(m: dict) -> dict:
        return {**m, "replies": [tree(c) for c in children.get(m["user_message_id"], [])]}
    return sum(_assistant_ends(tree(root)) for root in children[None])


# file -> (format detected, rows in, records out computed from the source)
@functools.cache
def expected(root: Path) -> dict[str, tuple[str, int, int]]:
    d = root / "datasets"
    a, m, s, o = (d / "alpaca_format", d / "messages_format", d / "sharegpt_format",
                  d / "oasst_trees")
    seeds = _jsonl_items(a / "stanford_alpaca_seed_tasks.jsonl")
    trees = _jsonl_items(o / "oasst_en_100_tree.jsonl")
    roots = _jsonl_items(o / "oasst_en_100_message.jsonl")
    flat = _json_items(o / "oasst_realistic_seed_data.json")
    with open(d / "classification" / "ag_news_samples.csv", newline="") as fh:
        news = sum(1 for _ in csv.DictReader(fh))
    out: dict[str, tuple[str, int, int]] = {}
    for name in ("alpacacleaned_gpteacher_roleplay_deduped.json",
                 "alpacacleaned_gpteacher_toolformer_sim0.6.json", "alpacacleaned_gsm_8k_train.json",
                 "llamafactory_alpaca_en_demo.json", "llamafactory_alpaca_zh_demo.json",
                 "llamafactory_identity.json", "torchtune_alpaca_tiny.json"):
        n = len(_json_items(a / name))
        out[f"alpaca_format/{name}"] = ("alpaca", n, n)
    out["alpaca_format/stanford_alpaca_seed_tasks.jsonl"] = (
        "alpaca", len(seeds), sum(len(t["instances"]) for t in seeds))
    for name in ("llamafactory_kto_en_demo.json",):
        n = len(_json_items(m / name))
        out[f"messages_format/{name}"] = ("openai", n, n)
    for name in ("llamafactory_reason_tool_use_demo_50.jsonl", "llamafactory_v1_sft_demo.jsonl",
                 "openai_evals_samples.jsonl", "openai_toy_chat_fine_tuning.jsonl",
                 "openai_weather_chat_fine_tuning.jsonl"):
        n = len(_jsonl_items(m / name))
        out[f"messages_format/{name}"] = ("openai", n, n)
    for name in ("axolotl_fixture_conversation.json", "fastchat_dummy_conversation.json",
                 "llamafactory_glaive_toolcall_en_demo.json"):
        n = len(_json_items(s / name))
        out[f"sharegpt_format/{name}"] = ("sharegpt", n, n)
    n = len(_json_items(d / "preference" / "llamafactory_dpo_en_demo.json"))
    out["preference/llamafactory_dpo_en_demo.json"] = ("sharegpt", n, n)
    out["oasst_trees/oasst_en_100_tree.jsonl"] = (
        "oasst", len(trees), sum(_assistant_ends(t["prompt"]) for t in trees))
    out["oasst_trees/oasst_en_100_message.jsonl"] = (
        "oasst", len(roots), sum(_assistant_ends(r) for r in roots))
    out["oasst_trees/oasst_realistic_seed_data.json"] = ("oasst", len(flat), _flat_oasst(flat))
    n = len(_jsonl_items(o / "oasst_prompt_lottery_en_250_text.jsonl"))
    out["oasst_trees/oasst_prompt_lottery_en_250_text.jsonl"] = ("prompts", n, n)
    n = len(_jsonl_items(d / "pretrain_text" / "llamafactory_c4_demo.jsonl"))
    out["pretrain_text/llamafactory_c4_demo.jsonl"] = ("text", n, n)
    out["classification/ag_news_samples.csv"] = ("classification", news, news)
    # sentence counts from the realdata MANIFEST (CoNLL-2003 as published)
    for split, n in (("train", 14041), ("valid", 3250), ("test", 3453)):
        out[f"ner/conll2003_{split}.txt"] = ("conll", n, n)
    return out


# Files that are not conversation data, and why convert must refuse them.
REFUSED = {
    "sharegpt_format/axolotl_fixture_conversation.tokenized.json":
        "already tokenized data (keys: input_ids, attention_mask, labels), not conversations",
    "sharegpt_format/axolotl_fixture_conversation.tokenized_llama2chat.json":
        "already tokenized data (keys: input_ids, labels, attention_mask), not conversations",
    "llamafactory_dataset_info.json":  # LLaMA-Factory's registry of datasets, not a dataset
        "no known format has these keys: identity, alpaca_en_demo, alpaca_zh_demo",
}
# A deliberately malformed fixture: its one conversation has an empty assistant turn.
MALFORMED = "sharegpt_format/axolotl_fixture_conversation.missingturns.json"


def run(*args, input=None):
    return CliRunner().invoke(cli, [*map(str, args)], input=input)


def test_every_data_file_is_covered(realdata):
    files = {
        str(p.relative_to(realdata / "datasets"))
        for p in (realdata / "datasets").rglob("*")
        if p.suffix in (".json", ".jsonl", ".csv", ".txt")
    }
    assert files == set(expected(realdata)) | set(REFUSED) | {MALFORMED}


# The biggest file (14,041 sentences) is only converted with -m slow; its smaller splits always are.
SLOW = {"ner/conll2003_train.txt"}


def _check_dataset(root: Path, rel: str) -> None:
    fmt, rows_in, records = expected(root)[rel]
    path = root / "datasets" / rel
    result = run("convert", path)
    assert result.exit_code == 0, result.stderr
    # split on newlines only: str.splitlines would also split on U+2028 inside the JSON text
    assert len([line for line in result.stdout.split("\n") if line]) == records
    if records == rows_in:
        tail = f"{rows_in} rows in = {records} records out + 0 rejected ({fmt})"
    else:
        tail = (f"{rows_in} rows in = {rows_in} converted + 0 rejected; the converted rows "
                f"gave {records} records ({fmt})")
    assert result.stderr == f"convert: {path}: {tail}\n"


def test_each_dataset_converts_with_detection_and_counts(realdata):
    for rel in sorted(set(expected(realdata)) - SLOW):
        _check_dataset(realdata, rel)


@pytest.mark.slow
@pytest.mark.parametrize("rel", sorted(SLOW))
def test_big_datasets_convert_with_detection_and_counts(realdata, rel):
    _check_dataset(realdata, rel)


@pytest.mark.parametrize("rel", sorted(REFUSED))
def test_non_conversation_files_are_refused(realdata, rel):
    result = run("convert", realdata / "datasets" / rel)
    assert result.exit_code == 1
    assert "cannot tell the source format: " + REFUSED[rel] in result.stderr


def test_malformed_fixture_stops_or_goes_to_rejects(realdata, tmp_path):
    path = realdata / "datasets" / MALFORMED
    result = run("convert", path)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}, row 1: field 'conversations[1].value': empty "
                             "assistant turn. Fix: fill in the answer or drop the row "
                             "(--rejects FILE skips it)\n")
    result = run("convert", path, "--rejects", tmp_path / "rejects.jsonl")
    assert result.exit_code == 0 and result.stdout == ""
    assert "1 rows in = 0 records out + 1 rejected" in result.stderr


def test_mappings_worth_pinning(realdata):
    d = realdata / "datasets"
    weather = json.loads(run("convert", d / "messages_format/openai_weather_chat_fine_tuning.jsonl")
                         .stdout.splitlines()[0])
    assert json.loads(weather["messages"][1]["tool_calls"])[0]["function"]["name"] == (
        "get_current_weather")
    assert json.loads(weather["meta"])["tools"][0]["type"] == "function"
    kto = json.loads(run("convert", d / "messages_format/llamafactory_kto_en_demo.json")
                     .stdout.splitlines()[0])
    assert kto["label"] in ("true", "false")
    news = json.loads(run("convert", d / "classification/ag_news_samples.csv").stdout.splitlines()[0])
    assert (news["task"], news["label"]) == ("classification", "World")
    dpo = json.loads(run("convert", d / "preference/llamafactory_dpo_en_demo.json")
                     .stdout.splitlines()[0])
    assert dpo["messages"][-1]["role"] == "assistant" and "rejected" in json.loads(dpo["meta"])


# `cat FILE | sftdata convert | sftdata validate -` (the acceptance path). The records
# suite flags what is really in the data; these failures are expected, with the reason.
DUPLICATES = ["expect_column_values_to_be_unique(column='id')",
              "expect_column_values_to_be_unique(column='content_hash')"]
VALIDATE_FAILS = {
    # the sources repeat conversations (exact duplicates: ids are content hashes)
    "alpaca_format/llamafactory_alpaca_en_demo.json": DUPLICATES,
    "alpaca_format/llamafactory_alpaca_zh_demo.json": DUPLICATES,
    "messages_format/llamafactory_v1_sft_demo.jsonl": DUPLICATES,
    "messages_format/openai_evals_samples.jsonl": DUPLICATES,
    "messages_format/openai_weather_chat_fine_tuning.jsonl": DUPLICATES,
    "sharegpt_format/llamafactory_glaive_toolcall_en_demo.json": DUPLICATES,
    "preference/llamafactory_dpo_en_demo.json": DUPLICATES,
    # CoNLL repeats short sentences (datelines such as "LONDON 1996-08-30")
    "ner/conll2003_train.txt": DUPLICATES,
    "ner/conll2003_valid.txt": DUPLICATES,
    "ner/conll2003_test.txt": DUPLICATES,
    # duplicates, and three conversations go system -> assistant with no user turn
    "messages_format/openai_toy_chat_fine_tuning.jsonl": [
        *DUPLICATES,
        "expect_column_values_to_be_in_set(column='first_role', value_set=['user'], "
        "row_condition='task != \"text\"', condition_parser='pandas')"],
    # prompts without answers: input for generation, not training data
    "oasst_trees/oasst_prompt_lottery_en_250_text.jsonl": [
        "expect_column_values_to_be_in_set(column='last_role', value_set=['assistant'])"],
}


@pytest.mark.slow  # Great Expectations takes seconds per dataset
def test_converted_datasets_pipe_into_validate(realdata):
    problems = []
    for rel in expected(realdata):
        data = (realdata / "datasets" / rel).read_bytes()
        converted = run("convert", "-", input=data)  # detection from content alone
        checked = run("validate", "-", input=converted.stdout_bytes)
        failed = [line[len("FAILED "):] for line in checked.stderr.splitlines()
                  if line.startswith("FAILED ")]
        want = VALIDATE_FAILS.get(rel, [])
        if converted.exit_code != 0 or checked.exit_code != (1 if want else 0) or failed != want:
            problems.append((rel, converted.exit_code, checked.exit_code, failed))
    assert not problems
