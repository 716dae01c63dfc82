"""`sftdata gold freeze|verify|score` through CliRunner: files, exit codes, exact messages."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import chat

from sftdata.cli import cli
from sftdata.schema import from_dicts


def invoke(*args, data: bytes = b""):
    return CliRunner().invoke(cli, ["gold", *map(str, args)], input=data)


@pytest.fixture
def held_out(tmp_path):
    rows = [
        chat(f"Is review {i} good or bad? It says the item number {i} was fine", "pos" if i % 2 else "neg",
             id=f"r{i}", label="pos" if i % 2 else "neg", task="classification", split="test")
        for i in range(40)
    ]
    path = tmp_path / "test.parquet"
    from_dicts(rows).write_parquet(path)
    return path


@pytest.fixture
def frozen(tmp_path, held_out):
    gold = tmp_path / "gold.parquet"
    result = invoke("freeze", held_out, "-n", 10, "--gold-out", gold, "-o", tmp_path / "rest.parquet")
    assert result.exit_code == 0, result.output
    return gold


@pytest.mark.parametrize("sub", ["freeze", "verify", "score"])
def test_help_has_summary_and_example(sub):
    result = invoke(sub, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output and f"sftdata gold {sub}" in result.output


def test_freeze_writes_gold_lock_and_remainder(tmp_path, held_out, frozen):
    lock = json.loads((tmp_path / "gold.lock.json").read_text())
    gold = pl.read_parquet(frozen)
    rest = pl.read_parquet(tmp_path / "rest.parquet")
    assert gold.height == 10 and rest.height == 30
    assert not set(gold["id"]) & set(rest["id"])
    assert lock["ids"] == sorted(gold["id"]) and lock["count"] == 10
    assert lock["input"]["file"] == str(held_out) and len(lock["input"]["sha256"]) == 64
    assert lock["created_at"].endswith("+00:00")
    assert "created_at" not in gold.columns


def test_freeze_remainder_to_stdout_is_deterministic(tmp_path, held_out):
    a = invoke("freeze", held_out, "-n", 5, "--gold-out", tmp_path / "a.parquet", "--seed", 2)
    b = invoke("freeze", held_out, "-n", 5, "--gold-out", tmp_path / "b.parquet", "--seed", 2)
    assert a.exit_code == b.exit_code == 0
    assert a.stdout == b.stdout and len(a.stdout.splitlines()) == 35
    assert pl.read_parquet(tmp_path / "a.parquet").equals(pl.read_parquet(tmp_path / "b.parquet"))
    assert a.stderr.startswith("gold: 5 of 40 records -> ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["-n", "100", "--gold-out", "g.parquet"], "Error: -n 100 asks for more records than"),
        (["-n", "5", "--gold-out", "-"], "--gold-out must be a file (stdout carries the remainder)"),
        (["-n", "5", "--gold-out", "g.parquet", "-o", "g.parquet"],
         "--gold-out g.parquet and -o g.parquet name the same file; give them different paths"),
    ],
)
def test_freeze_usage_errors(tmp_path, held_out, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke("freeze", held_out, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_verify_ok_then_tampered(tmp_path, frozen):
    ok = invoke("verify", frozen, "--against", tmp_path / "rest.parquet")
    assert ok.exit_code == 0, ok.output
    assert "gold verify: ok (10 records match the lock; none found in 1 training file(s))" in ok.stderr
    gold = pl.read_parquet(frozen)
    first = gold["id"][0]
    tampered = gold.with_columns(
        pl.when(pl.col("id") == first).then(pl.lit("pos!")).otherwise(pl.col("label")).alias("label")
    )
    tampered.write_parquet(frozen)
    bad = invoke("verify", frozen, "--report", tmp_path / "v.json")
    assert bad.exit_code == 1
    assert f"  changed: {first}" in bad.stderr
    assert "Error: gold verify failed" in bad.stderr
    assert json.loads((tmp_path / "v.json").read_text())["changed"] == [first]


def test_verify_finds_gold_in_training(tmp_path, held_out, frozen):
    result = invoke("verify", frozen, "--against", held_out, "--exact-only")
    assert result.exit_code == 1
    assert "training overlap: 10 gold record(s) found in training data (10 match(es)):" in result.stderr
    assert "same-conversation,same-id,same-prompt" in result.stderr


def test_verify_without_lock_is_usage_error(tmp_path, held_out):
    result = invoke("verify", held_out)
    assert result.exit_code == 2
    assert f"no lock file {tmp_path / 'test.lock.json'}; pass --lock FILE" in result.output


def write_preds(path, pairs):
    path.write_text("".join(json.dumps({"id": k, "prediction": v}) + "\n" for k, v in pairs.items()))
    return path


def test_score_reports_metrics_and_gates(tmp_path, frozen):
    gold = pl.read_parquet(frozen)
    labels = dict(zip(gold["id"], gold["label"], strict=True))
    answers = {k: (v if i < 8 else ("neg" if v == "pos" else "pos")) for i, (k, v) in enumerate(labels.items())}
    predictions = write_preds(tmp_path / "p.jsonl", answers)
    passed = invoke("score", frozen, predictions, "--min", "accuracy=0.8", "--report", tmp_path / "s.json")
    assert passed.exit_code == 0, passed.output
    assert "gate accuracy >= 0.8: 0.8000 ok" in passed.stderr
    assert "confusion matrix (rows: reference, columns: prediction):" in passed.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["tasks"]["classification"]["metrics"]["accuracy"] == 0.8
    assert [w["score"] for w in report["worst"]][:2] == [0.0, 0.0]
    failed = invoke("score", frozen, predictions, "--min", "classification.macro_f1=0.9")
    assert failed.exit_code == 1
    assert "Error: gold score gate(s) failed: classification.macro_f1" in failed.stderr
    assert passed.stdout == ""


def test_score_missing_predictions(tmp_path, frozen):
    gold = pl.read_parquet(frozen)
    predictions = write_preds(tmp_path / "p.jsonl", {gold["id"][0]: "pos"})
    result = invoke("score", frozen, predictions)
    assert result.exit_code == 1
    assert "9 gold id(s) have no prediction" in result.output and "--allow-missing" in result.output
    allowed = invoke("score", frozen, predictions, "--allow-missing")
    assert allowed.exit_code == 0
    assert "Warning: 9 gold record(s) had no prediction (scored as empty answers)" in allowed.stderr


def test_score_unknown_metric_and_bad_scorer(tmp_path, frozen):
    gold = pl.read_parquet(frozen)
    predictions = write_preds(tmp_path / "p.jsonl", dict.fromkeys(gold["id"], "pos"))
    result = invoke("score", frozen, predictions, "--min", "bleu=0.3")
    assert result.exit_code == 2
    assert "--min: no metric 'bleu'; available: classification.accuracy" in result.output
    result = invoke("score", frozen, predictions, "--scorer", "no_such_module_xyz:f")
    assert result.exit_code == 2
    assert "--scorer: cannot import 'no_such_module_xyz'" in result.output


def test_score_with_scorer_file(tmp_path, frozen, monkeypatch):
    (tmp_path / "my_judge.py").write_text(
        "def judge(prediction, reference, record):\n    return float(len(prediction) > 2)\n"
    )
    monkeypatch.chdir(tmp_path)
    gold = pl.read_parquet(frozen)
    predictions = write_preds(tmp_path / "p.jsonl", dict.fromkeys(gold["id"], "long answer"))
    result = invoke("score", frozen, predictions, "--task", "chat", "--scorer", "my_judge:judge",
                    "--min", "scorer=1")
    assert result.exit_code == 0, result.output
    assert "gate scorer >= 1: 1.0000 ok" in result.stderr


def test_jsonl_gold_round_trips_through_the_lock(tmp_path, held_out):
    gold = tmp_path / "gold.jsonl"
    result = invoke("freeze", held_out, "-n", 4, "--gold-out", gold, "--lock", tmp_path / "l.json")
    assert result.exit_code == 0, result.output
    verified = invoke("verify", gold, "--lock", tmp_path / "l.json")
    assert verified.exit_code == 0, verified.output
    assert "Warning: no --against files: only the lock is checked" in verified.stderr


def test_low_confidence_hits_warn_but_pass(tmp_path):
    gold_rows = [chat("Who are you?", "An assistant.", id="g1")]
    source = tmp_path / "held.parquet"
    from_dicts(gold_rows).write_parquet(source)
    gold = tmp_path / "gold.parquet"
    assert invoke("freeze", source, "-n", 1, "--gold-out", gold).exit_code == 0
    train = tmp_path / "train.parquet"
    from_dicts([chat("Tell me honestly, who are you? I want to know.", "A bot.", id="t1")]).write_parquet(train)
    result = invoke("verify", gold, "--against", train)
    assert result.exit_code == 0, result.output
    assert "Warning: 1 low-confidence near-duplicate hit(s) (short or generic prompts)" in result.stderr
    assert "gold g1 ~ " in result.stderr and "(id t1): leakcheck:short" in result.stderr


def test_freeze_from_stdin_keeps_a_content_hash(tmp_path, held_out):
    data = pl.read_parquet(held_out)
    buf = tmp_path / "in.jsonl"
    data.write_ndjson(buf)
    result = invoke("freeze", "-n", 3, "--gold-out", tmp_path / "g.parquet", data=buf.read_bytes())
    assert result.exit_code == 0, result.output
    lock = json.loads((tmp_path / "g.lock.json").read_text())
    assert lock["input"]["file"] == "<stdin>" and lock["input"]["sha256"] is None
    assert len(lock["input"]["content_sha256"]) == 64 and lock["input"]["records"] == 40
    assert len(result.stdout.splitlines()) == 37


def test_lock_that_is_not_an_object_is_a_data_error(tmp_path, frozen):
    """L20: a lock holding `[1,2]` gave AttributeError: 'list' object has no attribute 'get'."""
    lock = tmp_path / "list.lock.json"
    lock.write_text("[1, 2]\n")
    result = invoke("verify", frozen, "--lock", lock)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {lock}: not a lock file: a JSON list, expected an object. "
                             "Fix: restore the lock file from version control (gold freeze writes it)\n")


def test_score_scorer_that_raises_and_two_stdins(tmp_path, frozen, monkeypatch):
    """L21: a --scorer that raises gave a traceback; `gold score - -` said 'missing column(s) messages'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad_scorer.py").write_text("def score(prediction, reference, record):\n    raise ValueError('no')\n")
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": f"r{i}", "prediction": "pos"}) + "\n" for i in range(40)))
    result = invoke("score", frozen, preds, "--scorer", "bad_scorer:score", "--allow-missing")
    assert result.exit_code == 1
    assert "Error: --scorer bad_scorer:score failed on gold record " in result.stderr
    assert "(ValueError: no). Fix: the scorer is called as f(prediction, reference, record)" in result.stderr
    both = invoke("score", "-", "-", data=preds.read_bytes())
    assert both.exit_code == 2
    assert "Error: GOLD and PREDICTIONS cannot both read stdin; give one as a file" in both.stderr
