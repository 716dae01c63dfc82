"""What a person reads while training: progress lines in logs, validation switches, warmup on
short runs, and no third-party noise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from sfttrain_helpers import ROOT, task_records, train, write_shards

from sfttrain.config import build_config
from sfttrain.train import _make_scheduler, read_metrics

PROGRESS = re.compile(r"^sfttrain: step (\d+)/(\d+) loss \d+\.\d{4} lr \S+ [\d,]+ tokens/s "
                      r"ETA \d+:\d\d$")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    records = task_records(40, seed=5)
    return write_shards(tmp_path_factory.mktemp("shards"),
                        {"train": records[:32], "val": records[32:]}, seq_len=96)


def test_progress_lines_when_stderr_is_a_log(tiny, shards, tmp_path):
    said: list[str] = []
    train(shards, tiny, tmp_path / "every", "max_steps=3", "eval_every=10",
          "progress_seconds=0", say=said.append)
    steps = [int(m[1]) for s in said if (m := PROGRESS.match(s))]
    assert steps == [1, 2, 3]
    said.clear()
    train(shards, tiny, tmp_path / "slow", "max_steps=4", "eval_every=10",
          "progress_seconds=3600", say=said.append)
    # an hour apart: only the first step (something is happening) and the last
    assert [int(m[1]) for s in said if (m := PROGRESS.match(s))] == [1, 4]


def test_eval_every_zero_turns_validation_off(tiny, shards, tmp_path):
    result = train(shards, tiny, tmp_path / "off", "max_steps=3", "eval_every=0")
    assert result.val == []
    assert not any("val_loss" in r for r in read_metrics(tmp_path / "off"))
    assert (tmp_path / "off" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "off" / "adapter-last").exists()


def test_eval_baseline_false_skips_step_zero(tiny, shards, tmp_path):
    result = train(shards, tiny, tmp_path / "nobase", "max_steps=2", "eval_every=1",
                   "eval_baseline=false")
    assert [step for step, _ in result.val] == [1, 2]


@pytest.mark.parametrize(("total", "ratio", "warmup"),
                         [(10, 0.03, 1), (30, 0.03, 1), (100, 0.03, 3), (1000, 0.03, 30),
                          (10, 0.0, 0), (1, 0.5, 0)])
def test_warmup_ratio_rounds_up_not_to_zero(total, ratio, warmup):
    config = build_config(None, ["lr=1.0", "scheduler=constant", f"warmup_ratio={ratio}"])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    scheduler = _make_scheduler(optimizer, config, total)
    lrs = []
    for _ in range(total):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:warmup] == pytest.approx([(i + 1) / (warmup + 1) for i in range(warmup)])
    assert lrs[warmup:] == pytest.approx([1.0] * (total - warmup))


# Runs the real CLI with bitsandbytes believing what the test says about AVX512-BF16, decided
# when bitsandbytes.functional is first imported (its CPU back end asks at import time).
FAKE_CPU = """
import importlib.abc, importlib.machinery, sys
class FakeCpu(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.functional":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.has_avx512bf16 = lambda: {has}
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, FakeCpu())
from sfttrain.cli import cli
cli()
"""


@pytest.mark.parametrize("has", [True, False], ids=["avx512bf16", "no-avx512bf16"])
def test_cli_run_output_is_ours_only(tiny, shards, tmp_path, has):
    """A real `sfttrain run` in a subprocess (stderr a pipe, as under nohup or CI): every line
    is sfttrain's own, whatever bitsandbytes believes about the CPU."""
    proc = subprocess.run(
        [sys.executable, "-c", FAKE_CPU.format(has=has), "run", str(shards), "--model",
         str(tiny), "-o", str(tmp_path / "r"), "quant=nf4", "max_steps=2", "eval_every=1",
         "device=cpu"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith(("sfttrain:", "Warning:")) for line in lines), lines
    assert any(PROGRESS.match(line) for line in lines)
    assert proc.stdout == ""
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in task_records(2, seed=9)))
    for command in (["merge", str(tmp_path / "r"), "--out", str(tmp_path / "merged")],
                    ["generate", str(tmp_path / "r"), "--records", str(records),
                     "--max-new-tokens", "2", "-o", str(tmp_path / "preds.jsonl")]):
        proc = subprocess.run([sys.executable, "-c", FAKE_CPU.format(has=has), *command],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        # L30: no bitsandbytes kernel notice, nor anything else that is not ours
        assert all(line.startswith("sfttrain") for line in proc.stderr.splitlines()
                   if line.strip()), proc.stderr


def test_cli_sets_passive_openmp_waiting_before_torch_loads():
    """libgomp reads OMP_WAIT_POLICY once, when torch loads: the CLI must set it first."""
    code = ("import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); import sfttrain.cli; "
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=60).stdout.split()
    assert out == ["PASSIVE", "False"]
    mine = subprocess.run([sys.executable, "-c", code.replace(
        "os.environ.pop('OMP_WAIT_POLICY', None)", "os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60).stdout.split()
    assert mine == ["ACTIVE", "False"]  # a user's own setting wins
