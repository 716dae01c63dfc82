"""sfttrain refuses what it must not train on, with clean errors (issue 11: M7, M8, M18, M1 for
run directories, L27, L31)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from sfttrain_helpers import task_records, train, write_shards

from sftdata.errors import DataError, UsageProblem
from sfttrain.cli import cli
from sfttrain.config import ConfigError


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), {"train": task_records(24, seed=6)},
                        seq_len=96)


def _run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


def test_m7_a_flipped_bit_in_a_shard_file_is_refused_before_training(tiny, shards, tmp_path):
    flipped = tmp_path / "flipped"
    shutil.copytree(shards, flipped)
    path = flipped / "train" / "00000.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    result = _run(flipped, "--model", tiny, "-o", tmp_path / "r", "max_steps=1")
    assert result.exit_code == 1, result.output
    assert f"{path}" in result.output and "checksum differs from the manifest" in result.output
    assert not (tmp_path / "r" / "run.json").exists()  # refused before anything was written


def test_m8_resume_into_a_run_of_other_shards_or_config_is_refused(tiny, shards, tmp_path):
    out = tmp_path / "run"
    train(shards, tiny, out, "max_steps=2", "save_every=1", "stop_at_step=1")
    other = write_shards(tmp_path / "other", {"train": task_records(24, seed=7)}, seq_len=96)
    with pytest.raises(UsageProblem) as err:
        train(other, tiny, out, "max_steps=2", "save_every=1", "lr=0.5", resume=True)
    message = str(err.value)
    assert f"{out} holds checkpoints of another run (2 difference(s))" in message
    assert "shards: " in message and "lr: 0.01 then, 0.5 now" in message
    assert "--no-resume" in message
    # steering keys may change; the run resumes
    result = train(shards, tiny, out, "max_steps=2", "save_every=1", "eval_every=7",
                   resume=True)
    assert result.steps == 2


def test_m8_the_cli_exits_2_naming_the_difference(tiny, shards, tmp_path):
    out = tmp_path / "run"
    assert _run(shards, "--model", tiny, "-o", out, "quant=nf4", "max_steps=2", "save_every=1",
                "stop_at_step=1").exit_code == 0
    result = _run(shards, "--model", tiny, "-o", out, "quant=nf4", "max_steps=2",
                  "save_every=1", "lora_r=4")
    assert result.exit_code == 2
    assert "lora_r: 16 then, 4 now" in result.output


def test_m18_lora_targets_that_match_nothing_are_config_errors(tiny, shards, tmp_path):
    with pytest.raises(ConfigError) as err:
        train(shards, tiny, tmp_path / "a", "max_steps=1", "lora_targets=q_proj,nonexistent_proj")
    assert err.value.problems == [
        "lora_targets: 'nonexistent_proj' matches no linear layer of the model; its linear "
        "layers: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj (or all-linear)"]
    result = _run(shards, "--model", tiny, "-o", tmp_path / "b", "lora_targets=,")
    assert result.exit_code == 2 and "lora_targets: empty" in result.output


def test_run_dir_that_is_a_file_is_a_usage_error_before_loading(tiny, shards, tmp_path):
    (tmp_path / "taken").write_text("x")
    result = _run(shards, "--model", tiny, "-o", tmp_path / "taken", "max_steps=1")
    assert result.exit_code == 2
    assert "exists and is not a directory" in result.output
    assert "Traceback" not in result.output


def test_l27_a_gguf_that_is_not_gguf_is_a_data_error(shards, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    result = _run(shards, "--model", fake, "-o", tmp_path / "r", "max_steps=1")
    assert result.exit_code == 1
    assert "not a GGUF file (it starts with b'\\x89PNG', not b'GGUF')" in result.output
    from sfttrain.model import resolve_model_dir

    with pytest.raises(DataError):
        resolve_model_dir(fake)


def test_l31_adapter_config_lists_targets_in_one_order(tiny, shards, tmp_path):
    train(shards, tiny, tmp_path / "a", "max_steps=1", "eval_every=0")
    config = json.loads((tmp_path / "a" / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])
    assert len(config["target_modules"]) == 14  # 7 linear layers x 2 blocks of the tiny model


def test_l28_plan_refuses_shards_of_another_tokenizer_like_run(tiny, tmp_path):
    other = write_shards(tmp_path / "o", {"train": task_records(4)}, vocab_hash="0" * 64)
    result = CliRunner().invoke(cli, ["plan", str(other), "--model", str(tiny), "--gpu-mem",
                                      "1GiB"])
    assert result.exit_code == 1
    assert "tokenized with another tokenizer than the model's" in result.output
    assert "shards vocab_hash " + "0" * 64 in result.output


def test_partial_saves_of_a_killed_run_are_swept(tiny, shards, tmp_path):
    out = tmp_path / "r"
    train(shards, tiny, out, "max_steps=2", "save_every=1", "stop_at_step=1")
    partial = out / "checkpoints" / "step-0000002.tmp"
    partial.mkdir()
    (partial / "trainable.pt").write_bytes(b"half")
    (out / "checkpoints" / "best").mkdir(exist_ok=True)
    (out / "checkpoints" / "best" / "trainable.tmp").write_bytes(b"half")
    result = train(shards, tiny, out, "max_steps=2", "save_every=1", resume=True)
    assert result.steps == 2
    assert not list(out.rglob("*.tmp"))
