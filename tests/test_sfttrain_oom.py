"""Out-of-memory survival on the CPU: torch's real OutOfMemoryError raised inside the real forward
(SFTTRAIN_TEST_OOM_AT_STEP), the next lever in plan's order, the same step redone from the same
records; the run then matches an uninterrupted run started with the new settings (data order and
losses), keeps its levers on resume, and stops with exit 1 and advice when none is left."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from sfttrain_helpers import TINY_CONFIG_DIR, TOKENIZER_DIR, task_records, train, write_shards

from sfttrain import plan as P
from sfttrain.cli import cli
from sfttrain.config import build_config
from sfttrain.train import read_metrics

# dropout off: the RNG draws of a micro-batch of 2 and of two of 1 differ, the math does not
COMMON = ["quant=none", "max_steps=6", "eval_every=0", "save_every=100", "lora_dropout=0",
          "data_log=true"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    records = task_records(200, seed=5)
    return write_shards(tmp_path_factory.mktemp("shards"),
                        {"train": records[:180], "val": records[180:]}, seq_len=96)


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """The tiny Llama with 6 layers: with 2, checkpointing keeps more than it saves (plan says
    so, and offers no such lever)."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("deep")
    config = AutoConfig.from_pretrained(TINY_CONFIG_DIR)
    config.num_hidden_layers = 6
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER_DIR / name, out / name)
    return out


def _data(out):
    return [json.loads(line)["record_ids"]
            for line in (out / "data-rank0.jsonl").read_text().splitlines()]


def _oom(monkeypatch, step: int, times: int = 1) -> None:
    monkeypatch.setenv("SFTTRAIN_TEST_OOM_AT_STEP", str(step))
    monkeypatch.setenv("SFTTRAIN_TEST_OOM_TIMES", str(times))


def test_oom_halves_micro_batch_and_continues_like_a_run_with_the_new_settings(
        tiny, shards, tmp_path, monkeypatch):
    _oom(monkeypatch, 3)
    lines: list[str] = []
    hit = train(shards, tiny, tmp_path / "hit", *COMMON, "micro_batch=2", "grad_accum=2",
                "loss_chunk=64", say=lines.append)
    monkeypatch.delenv("SFTTRAIN_TEST_OOM_AT_STEP")
    assert [o["lever"] for o in hit.oom] == ["micro_batch 2 -> 1, grad_accum 2 -> 4"]
    said = next(line for line in lines if "out of memory at step 3" in line)
    assert "effective batch still 4" in said and "redoing step 3" in said
    info = json.loads((tmp_path / "hit" / "run.json").read_text())
    assert (info["config"]["micro_batch"], info["config"]["grad_accum"]) == (1, 4)
    assert info["oom_levers"][0]["before"] == {"micro_batch": 2, "grad_accum": 2}
    assert info["oom_levers"][0]["step"] == 3
    assert [r["step"] for r in read_metrics(tmp_path / "hit") if "oom_lever" in r] == [3]
    summary = json.loads((tmp_path / "hit" / "summary.json").read_text())
    assert summary["steps"] == 6 and len(summary["oom_levers"]) == 1

    plain = train(shards, tiny, tmp_path / "plain", *COMMON, "micro_batch=1", "grad_accum=4",
                  "loss_chunk=64")
    # every step trained the same records in the same order: none lost, none repeated
    assert _data(tmp_path / "hit") == _data(tmp_path / "plain")
    ids = [rid for step in _data(tmp_path / "hit") for rid in step]
    assert len(ids) == len(set(ids))
    # and the same losses, before the lever (micro-batches of 2 vs 1) and after it
    assert hit.losses == pytest.approx(plain.losses, rel=1e-5)
    assert len(hit.losses) == 6


def test_levers_apply_in_plans_order_and_match_a_run_with_all_of_them(deep, shards, tmp_path,
                                                                      monkeypatch):
    settings = ["micro_batch=1", "grad_accum=2", "grad_checkpointing=false", "loss_chunk=1024"]
    expected = P.levers(P.model_shape(deep), build_config(None, [*COMMON, *settings]), 96, 4)
    expected = [lever for lever in expected if not lever.only_cuda]
    assert [lever.changes for lever in expected] == [{"grad_checkpointing": True},
                                                     {"loss_chunk": 64}]
    _oom(monkeypatch, 2, times=2)  # step 2 runs out twice: two levers, then it fits
    lines: list[str] = []
    hit = train(shards, deep, tmp_path / "hit", *COMMON, *settings, say=lines.append)
    monkeypatch.delenv("SFTTRAIN_TEST_OOM_AT_STEP")
    assert [o["lever"] for o in hit.oom] == [lever.name for lever in expected]
    assert [o["step"] for o in hit.oom] == [2, 2]
    # the CPU has no paged optimizer: said once, skipped
    assert sum("paged_adamw_8bit' skipped" in line for line in lines) == 1
    plain = train(shards, deep, tmp_path / "plain", *COMMON, "micro_batch=1", "grad_accum=2",
                  "grad_checkpointing=true", "loss_chunk=64")
    assert _data(tmp_path / "hit") == _data(tmp_path / "plain")
    assert hit.losses == pytest.approx(plain.losses, rel=1e-5)


def test_a_resumed_run_keeps_its_levers(tiny, shards, tmp_path, monkeypatch):
    first = ["micro_batch=2", "grad_accum=2", "loss_chunk=64", "save_every=2"]
    _oom(monkeypatch, 2)
    whole = train(shards, tiny, tmp_path / "whole", *COMMON, *first)
    train(shards, tiny, tmp_path / "cut", *COMMON, *first, "stop_at_step=4")
    monkeypatch.delenv("SFTTRAIN_TEST_OOM_AT_STEP")
    lines: list[str] = []
    # the first command line again (micro_batch=2): the run goes on with micro_batch=1
    rest = train(shards, tiny, tmp_path / "cut", *COMMON, *first, resume=True, say=lines.append)
    assert any("keeping 'micro_batch 2 -> 1" in line for line in lines)
    assert any("resumed from" in line and "step 4" in line for line in lines)
    assert rest.losses == pytest.approx(whole.losses[4:], rel=1e-5)
    assert _data(tmp_path / "cut") == _data(tmp_path / "whole")


def test_no_lever_left_exits_1_with_the_plans_advice(tiny, shards, tmp_path):
    env = {"SFTTRAIN_TEST_OOM_AT_STEP": "2", "SFTTRAIN_TEST_OOM_TIMES": "99"}
    result = CliRunner().invoke(cli, ["run", str(shards), "--model", str(tiny), "-o",
                                      str(tmp_path / "run"), "device=cpu", *COMMON,
                                      "micro_batch=2", "loss_chunk=64"], env=env)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    error = next(line for line in result.output.splitlines() if line.startswith("Error: "))
    assert "out of memory at step 2" in error and "no lever is left" in error
    assert "micro_batch 2 -> 1" in error  # the levers it used
    assert "Fix: " in error and "sfttrain plan" in error
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["micro_batch"] == 1


def test_plan_lists_levers_by_memory_saved_with_their_speed_cost(tmp_path):
    llama = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256}
    (tmp_path / "config.json").write_text(json.dumps(llama))
    shape = P.model_shape(tmp_path)
    config = build_config(None, ["quant=nf4", "micro_batch=8", "grad_accum=2",
                                 "grad_checkpointing=false"])
    plan = P.plan_for(shape, config, [4096], P.parse_size("24GiB"))
    saves = [lever.saves for lever in plan.levers]
    assert saves == sorted(saves, reverse=True) and all(s > 0 for s in saves)
    assert {next(iter(lever.changes)) for lever in plan.levers} == {
        "micro_batch", "grad_checkpointing", "optimizer", "loss_chunk"}
    halve = next(lever for lever in plan.levers if "micro_batch" in lever.changes)
    assert halve.changes == {"micro_batch": 4, "grad_accum": 4}  # the effective batch kept
    text = P.render(plan)
    assert "on out of memory" in text and "(CUDA only)" in text and "slower" in text
    assert plan.as_dict()["levers"][0]["name"] == plan.levers[0].name
    # nothing left to change: no levers
    done = build_config(None, ["quant=nf4", "micro_batch=1", "optimizer=paged_adamw_8bit",
                               "loss_chunk=64"])
    assert P.plan_for(shape, done, [4096], None).levers == []


def test_adam_moments_carry_into_the_8bit_optimizer():
    """The paged-optimizer lever keeps the momentum (tested with bitsandbytes' non-paged 8-bit
    AdamW, the same state layout, which runs on the CPU)."""
    import bitsandbytes as bnb

    from sfttrain.oom import carry_adam_state

    torch.manual_seed(0)
    big, small = torch.nn.Parameter(torch.randn(8192)), torch.nn.Parameter(torch.randn(64))
    adam = torch.optim.AdamW([big, small], lr=1e-2)
    for _ in range(5):
        big.grad, small.grad = torch.randn(8192) + 1.0, torch.randn(64) + 1.0
        adam.step()
    grads = torch.randn(8192) - 1.0, torch.randn(64) - 1.0
    start = big.detach().clone(), small.detach().clone()

    def update(optimizer):
        with torch.no_grad():
            big.copy_(start[0])
            small.copy_(start[1])
        big.grad, small.grad = grads[0].clone(), grads[1].clone()
        optimizer.step()
        return torch.cat([big.detach() - start[0], small.detach() - start[1]])

    carried = bnb.optim.AdamW8bit([big, small], lr=1e-2)
    assert carry_adam_state(adam, carried) == 2
    assert carried.state[big]["state1"].dtype == torch.uint8  # 8-bit blocks
    assert carried.state[small]["state1"].dtype == torch.float32  # small: bitsandbytes keeps fp32
    fresh = bnb.optim.AdamW8bit([big, small], lr=1e-2)
    want = update(adam)
    got, restarted = update(carried), update(fresh)
    error = (got - want).norm() / want.norm()
    assert error < 0.05, error
    assert (restarted - want).norm() / want.norm() > 5 * error  # a restart would be far off
