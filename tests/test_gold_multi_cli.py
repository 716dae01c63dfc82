"""`sftdata gold score GOLD BASE A B ...` through CliRunner: tables, JSON, gates and exit codes;
benchmark gold sets from real data scored with the answer scorer that fits them."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import chat

from sftdata.cli import cli
from sftdata.schema import from_dicts

LABELS = ["animal", "fruit", "tool", "vehicle"]


def invoke(*args, data: bytes = b""):
    return CliRunner().invoke(cli, ["gold", "score", *map(str, args)], input=data)


@pytest.fixture
def files(tmp_path):
    n = 120
    rows = [chat(f"Category of: item {i}", LABELS[i % 4], id=f"g{i}", label=LABELS[i % 4],
                 task="classification") for i in range(n)]
    gold = tmp_path / "gold.parquet"
    from_dicts(rows).write_parquet(gold)

    def write(name, right):
        path = tmp_path / f"{name}.jsonl"
        with open(path, "w") as fh:
            for i, row in enumerate(rows):
                answer = row["label"] if i in right else "tool" if row["label"] != "tool" else "fruit"
                fh.write(json.dumps({"id": row["id"], "prediction": answer}) + "\n")
        return path

    return {
        "gold": gold,
        "base": write("base", set(range(100))),  # 0.83
        "same": write("same", set(range(10, 110))),  # 0.83, different items
        "worse": write("worse", set(range(50))),  # 0.42
    }


def test_three_models_table_on_stderr_and_nothing_on_stdout(files):
    result = invoke(files["gold"], files["base"], files["same"], files["worse"], "--bootstrap", 200)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    err = result.stderr
    assert "scored 3 model(s) on 120 gold records" in err and "(base: base; 95% intervals" in err
    assert "classification (120 records):" in err
    lines = [line for line in err.splitlines() if "mcnemar-exact" in line]
    assert any(line.split()[0] == "same" and "+0.0000" in line for line in lines)
    assert any(line.split()[0] == "worse" and "-0.4167" in line for line in lines)
    assert "permutation" in err  # macro-F1 is not a 0/1 mean


def test_json_on_stdout_is_deterministic_with_a_seed(files):
    args = [files["gold"], files["base"], files["worse"], "--bootstrap", 200, "--json"]
    one, two = invoke(*args, "--seed", 5), invoke(*args, "--seed", 5)
    other = invoke(*args, "--seed", 6)
    assert one.exit_code == 0 and one.stdout == two.stdout
    report = json.loads(one.stdout)
    assert report["seed"] == 5 and report["bootstrap"] == 200 and report["base"] == "base"
    assert json.loads(other.stdout)["groups"] != report["groups"]  # intervals move with the seed
    acc = report["groups"]["classification"]["metrics"]["accuracy"]
    worse = acc["models"][1]
    assert worse["name"] == "worse" and worse["diff"] == pytest.approx(50 / 120 - 100 / 120)
    assert worse["diff_ci"][1] < 0 and worse["p_value"] < 1e-6
    assert (worse["only_base_right"], worse["only_model_right"]) == (50, 0)


def test_max_drop_gate_exit_codes(files):
    fail = invoke(files["gold"], files["base"], files["same"], files["worse"],
                  "--max-drop", "accuracy=0.02", "--bootstrap", 300, "--report", files["gold"].parent / "r.json")
    assert fail.exit_code == 1
    assert "gate worse classification.accuracy drop <= 0.02 beyond noise: drop +0.4167" in fail.stderr
    assert "FAILED" in fail.stderr
    assert "Error: gold score gate(s) failed: worse classification.accuracy" in fail.stderr
    report = json.loads((files["gold"].parent / "r.json").read_text())
    assert [(g["model"], g["passed"]) for g in report["gates"]] == [("same", True), ("worse", False)]
    ok = invoke(files["gold"], files["base"], files["same"], "--max-drop", "accuracy=0.02",
                "--bootstrap", 300)
    assert ok.exit_code == 0, ok.output
    assert "gate same classification.accuracy drop <= 0.02 beyond noise: drop +0.0000" in ok.stderr


def test_min_gate_with_several_models_skips_the_base(files):
    result = invoke(files["gold"], files["worse"], files["base"], "--min", "accuracy=0.8",
                    "--bootstrap", 50)
    assert result.exit_code == 0, result.output
    assert "gate base classification.accuracy >= 0.8: 0.8333 ok" in result.stderr
    assert "gate worse" not in result.stderr


def test_names_and_one_model_with_bootstrap(files):
    result = invoke(files["gold"], files["base"], files["worse"], "--names", "b0,w1",
                    "--bootstrap", 50, "--json")
    assert [m["name"] for m in json.loads(result.stdout)["models"]] == ["b0", "w1"]
    one = invoke(files["gold"], files["base"], "--bootstrap", 50, "--json")
    assert one.exit_code == 0
    row = json.loads(one.stdout)["groups"]["classification"]["metrics"]["accuracy"]["models"][0]
    assert row["ci"][0] < row["value"] < row["ci"][1] and "diff" not in row


def test_single_file_json_is_the_report(files):
    result = invoke(files["gold"], files["base"], "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["tasks"]["classification"]["metrics"]["accuracy"] == pytest.approx(100 / 120)
    assert "gates" in report and "worst" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-drop", "accuracy=0.02"], "--max-drop compares models with the base"),
        (["--max-drop", "accuracy=-1", "X"], "--max-drop values are allowed drops"),
        (["--bootstrap", "0"], "--bootstrap must be at least 1, got 0"),
        (["--confidence", "1.5"], "--confidence must be between 0 and 1, got 1.5"),
        (["X", "--names", "a"], "--names gives 1 name(s) for 2 predictions file(s)"),
        (["X", "--max-drop", "nope=0.1"], "no metric 'nope'; available: classification.accuracy"),
        (["X", "--scorer", "nomodule"], "--scorer expects MODULE:FUNCTION"),
    ],
)
def test_usage_errors_exit_2(files, args, message):
    args = [files["worse"] if a == "X" else a for a in args]
    result = invoke(files["gold"], files["base"], *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_bad_predictions_file_is_a_data_error_naming_it(files, tmp_path):
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(files["base"].read_text().splitlines()[:-1]) + "\n")
    result = invoke(files["gold"], files["base"], short)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {short}: 1 gold id(s) have no prediction (first: g119)")


def test_forced_scorer_on_records_it_cannot_read_is_a_data_error(files):
    result = invoke(files["gold"], files["base"], "--scorer", "number")
    assert result.exit_code == 1
    assert "row 1: field 'messages': the number scorer finds no answer in this gold record" in result.stderr
    assert "pass --scorer task" in result.stderr


# --------------------------------------------------------------------------- real benchmark shapes


def _convert(path, *extra):
    result = CliRunner().invoke(cli, ["convert", str(path), *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def _gold(tmp_path, records, n):
    path = tmp_path / "gold.jsonl"
    with open(path, "w") as fh:
        for r in records[:n]:
            fh.write(json.dumps(r) + "\n")
    return path


def test_real_mmlu_scored_by_the_choice_scorer(realdata, tmp_path):
    records = _convert(realdata / "benchmarks/mmlu/test/anatomy_test.csv")
    assert json.loads(records[0]["meta"])["benchmark"] == "mmlu"
    gold = _gold(tmp_path, records, 40)
    styles = ["The answer is ({})", "{}", "**{}**", "{}) because", "answer: {}"]
    right = tmp_path / "right.jsonl"
    texts = tmp_path / "texts.jsonl"
    with open(right, "w") as a, open(texts, "w") as b:
        for i, r in enumerate(records[:40]):
            a.write(json.dumps({"id": r["id"], "prediction": styles[i % 5].format(r["label"])}) + "\n")
            option_text = r["messages"][1]["content"].split(". ", 1)[1]  # "B. text" -> text
            b.write(json.dumps({"id": r["id"], "prediction": option_text}) + "\n")
    result = invoke(gold, right, texts, "--bootstrap", 100, "--json")
    assert result.exit_code == 0, result.output
    acc = json.loads(result.stdout)["groups"]["mmlu"]["metrics"]["accuracy"]["models"]
    assert acc[0]["value"] == 1.0 and acc[1]["value"] >= 0.9  # option text: near-duplicate options may tie


def test_real_gsm8k_scored_by_the_number_scorer(realdata, tmp_path):
    records = _convert(realdata / "benchmarks/gsm8k/test.jsonl")
    gold = _gold(tmp_path, records, 30)
    preds = tmp_path / "p.jsonl"
    with open(preds, "w") as fh:
        for r in records[:30]:
            final = r["messages"][1]["content"].rsplit("####", 1)[1].strip()
            fh.write(json.dumps({"id": r["id"], "prediction": f"So the answer is {final}.0 dollars"}) + "\n")
    result = invoke(gold, preds, "--json")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["tasks"]["gsm8k"]
    assert entry["scorer"] == "number" and entry["metrics"]["accuracy"] == 1.0


def test_real_truthfulqa_mc1_scored_by_the_choice_scorer(realdata, tmp_path):
    records = _convert(realdata / "benchmarks/truthfulqa/TruthfulQA.csv", "--task", "classification")
    gold = _gold(tmp_path, records, 30)
    preds = tmp_path / "p.jsonl"
    with open(preds, "w") as fh:
        for r in records[:30]:
            fh.write(json.dumps({"id": r["id"], "prediction": f"({r['label']})"}) + "\n")
    result = invoke(gold, preds, "--json")
    entry = json.loads(result.stdout)["tasks"]["truthfulqa"]
    assert entry["scorer"] == "choice" and entry["metrics"]["accuracy"] == 1.0
    assert entry["baselines"]["majority"]["accuracy"] < 0.6


def test_scorer_task_keeps_the_old_metrics(realdata, tmp_path):
    records = _convert(realdata / "benchmarks/mmlu/test/anatomy_test.csv")
    gold = _gold(tmp_path, records, 10)
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": r["id"], "prediction": r["label"]}) + "\n"
                             for r in records[:10]))
    result = invoke(gold, preds, "--scorer", "task", "--json")
    assert "classification" in json.loads(result.stdout)["tasks"]
    assert pl.read_ndjson(gold).height == 10
