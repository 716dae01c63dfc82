"""Two processes under torchrun with the gloo back end (CPU): disjoint data, same result as one
process that sees both ranks' micro-batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from sfttrain_helpers import ROOT, make_tiny_model, task_records, train, write_shards

from sfttrain.train import read_metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_rank_gloo_run_matches_one_process(tmp_path):
    tiny = make_tiny_model(tmp_path / "tiny")
    shards = write_shards(tmp_path / "shards", {"train": task_records(48, seed=2)}, seq_len=64)
    common = ["device=cpu", "quant=nf4", "lr=0.01", "lora_r=8", "lora_alpha=16", "warmup_steps=0",
              "max_steps=4", "lora_dropout=0", "data_log=true", "save_every=100"]
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "sfttrain", "run", str(shards), "--model", str(tiny),
           "-o", str(out), "micro_batch=1", *common]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "effective batch 2 sequences (micro_batch 1 x grad_accum 1 x 2 rank(s))" in proc.stderr

    seen = []
    for rank in (0, 1):
        rows = [json.loads(x) for x in (out / f"data-rank{rank}.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2, 3, 4]
        seen.append({rid for r in rows for rid in r["record_ids"]})
    assert seen[0] and seen[1] and not seen[0] & seen[1]

    single = train(shards, tiny, tmp_path / "one", "micro_batch=2", *common[1:])
    ddp_losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert ddp_losses == pytest.approx(single.losses, rel=1e-4)
    one_ids = [json.loads(x)["record_ids"] for x in
               (tmp_path / "one" / "data-rank0.jsonl").read_text().splitlines()]
    assert {rid for step in one_ids for rid in step} == seen[0] | seen[1]
