"""sfttrain CLI: help texts, exact exit codes and messages, no heavy imports for --help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sfttrain_helpers import make_tiny_model, task_records, write_shards

from sfttrain.cli import cli

COMMANDS = ["run", "plan", "merge", "generate"]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_summary_and_pipe_example(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    summary = next(line.strip() for line in lines[1:] if line.strip())
    assert summary.endswith(".") and len(summary) < 100
    example = result.output.split("Example:")[1].strip().splitlines()[0]
    assert example.startswith(("sftdata ", "sfttrain ")) and ("|" in example or "&&" in example)


def test_help_is_light():
    code = ("import sys; from click.testing import CliRunner; from sfttrain.cli import cli; "
            "CliRunner().invoke(cli, ['--help']); "
            "print(sorted(m for m in ('torch', 'transformers', 'polars', 'great_expectations', "
            "'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tiny = make_tiny_model(root / "tiny")
    shards = write_shards(root / "shards", {"train": task_records(12)})
    return root, tiny, shards


def test_run_config_problems_exit_2_all_listed(setup):
    root, tiny, shards = setup
    result = CliRunner().invoke(cli, ["run", str(shards), "--model", str(tiny), "lr=-1",
                                      "learning_rate=1", "micro_batch=0"])
    assert result.exit_code == 2
    assert result.output == (
        "Error: 3 config problem(s):\n"
        "  - unknown key 'learning_rate'; did you mean 'lr'?\n"
        "  - lr: -1.0 is out of range (must be > 0.0 and <= 1.0)\n"
        "  - micro_batch: 0 is out of range (must be >= 1)\n"
    )


def test_full_with_nf4_is_a_usage_error(setup):
    root, tiny, shards = setup
    result = CliRunner().invoke(cli, ["run", str(shards), "--model", str(tiny), "--full",
                                      "--quant", "nf4"])
    assert result.exit_code == 2
    assert "--full trains every weight; it cannot be combined with --quant nf4." in result.output


def test_run_refuses_other_tokenizer_exit_1(setup, tmp_path):
    root, tiny, _ = setup
    other = write_shards(tmp_path / "o", {"train": task_records(4)}, vocab_hash="0" * 64)
    result = CliRunner().invoke(cli, ["run", str(other), "--model", str(tiny), "-o",
                                      str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {other}/manifest.json: field 'tokenizer.vocab_hash'")
    assert "shards vocab_hash " + "0" * 64 in result.output


def test_run_through_the_cli_then_plan(setup, tmp_path):
    root, tiny, shards = setup
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["run", str(shards), "--model", str(tiny), "-o", str(out),
                                      "max_steps=2", "device=cpu"])
    assert result.exit_code == 0, result.output
    assert "tokens/s" in result.output
    assert "MFU" not in result.output  # no peak FLOP/s known for a CPU: nothing to say
    assert "quant=auto: the unquantized base fits" in result.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 2

    result = CliRunner().invoke(cli, ["plan", str(shards), "--model", str(tiny), "--gpu-mem",
                                      "1MiB", "micro_batch=2", "grad_checkpointing=false"])
    assert result.exit_code == 1
    assert "does NOT fit in 0.00 GiB" in result.output
    assert "to fit: " in result.output
    result = CliRunner().invoke(cli, ["plan", str(shards), "--model", str(tiny), "--gpu-mem",
                                      "24GiB", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["fits"] is True
    result = CliRunner().invoke(cli, ["plan", str(shards), "--model", str(tiny), "--gpu-mem", "x"])
    assert result.exit_code == 2
    assert "--gpu-mem 'x': write a size such as 24GiB, 80GB or 16G" in result.output


def test_generate_flag_checks_and_missing_ids(setup, tmp_path):
    root, tiny, _ = setup
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    result = CliRunner().invoke(cli, ["generate", str(tiny), "--records", str(records),
                                      "--temperature", "-1"])
    assert result.exit_code == 2
    assert "--temperature must be >= 0 (0 = greedy)." in result.output
    result = CliRunner().invoke(cli, ["generate", str(tiny), "--records", str(records)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {records}, line 1: field 'id': record has no id. "
                             "Fix: run it through `sftdata convert` (ids are added there)\n")


def test_merge_of_a_non_run_exit_1(tmp_path):
    result = CliRunner().invoke(cli, ["merge", str(tmp_path), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert result.output == (f"Error: {tmp_path}: no run.json. "
                             "Fix: pass a directory `sfttrain run` wrote\n")
