"""The training loop on a tiny random Llama (CPU): QLoRA learns, packing does not change the
loss, resume is exact, early stopping, metrics and plot, tokenizer refusal, EOS warning."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sfttrain_helpers import task_records, train, write_shards

from sftdata.errors import DataError
from sfttrain.data import collate
from sfttrain.train import read_metrics


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    records = task_records(96, seed=1)
    return write_shards(tmp_path_factory.mktemp("shards"),
                        {"train": records[:80], "val": records[80:]}, seq_len=96)


def test_qlora_loss_decreases_and_writes_outputs(tiny, shards, tmp_path):
    out = tmp_path / "run"
    result = train(shards, tiny, out, "max_steps=24", "micro_batch=4", "eval_every=8",
                   "save_every=100")
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first - 0.3, result.losses
    assert result.val[-1][1] < result.val[0][1]
    rows = read_metrics(out)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 25))
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 8, 16, 24]  # 0: the base model
    assert all(math.isclose(r["val_ppl"], math.exp(r["val_loss"]), rel_tol=1e-3)
               for r in rows if "val_loss" in r)
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "adapter" / "adapter_config.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens_per_s"] > 0 and summary["peak_memory_bytes"] > 0
    assert summary["mfu"] is None  # no known peak FLOP/s on a CPU
    # the base stayed 4-bit: bitsandbytes NF4 layers under the adapter
    from sfttrain.merge import read_run

    assert read_run(out)["config"]["quant"] == "nf4"


def _loss(model, rows, attn="sdpa"):
    from sfttrain.model import PackedLoss

    with torch.no_grad():
        total, count = PackedLoss(model, attn)(collate(rows, pad_id=1))
    return float(total), int(count)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_documents_one_by_one(tiny, shards, attn):
    from sftdata.shards import ShardReader
    from sfttrain.config import build_config
    from sfttrain.model import load_base, prepare_for_training

    config = build_config(None, ["quant=none", "lora_dropout=0", f"attn={attn}"])
    model = prepare_for_training(load_base(tiny, "none", torch.float32, torch.device("cpu"), attn),
                                 config).eval()
    reader = ShardReader(shards, "train")
    packed = [reader[i] for i in range(4)]
    assert all(len(r["doc_lens"]) > 1 for r in packed)  # really packed
    packed_sum, packed_count = _loss(model, packed, attn)
    one_by_one = []
    for r in packed:
        start = 0
        for n in r["doc_lens"]:
            one_by_one.append({"input_ids": r["input_ids"][start : start + n],
                               "labels": r["labels"][start : start + n],
                               "doc_lens": [n], "record_ids": ["x"]})
            start += n
    single = [_loss(model, [d], attn) for d in one_by_one]
    assert packed_count == sum(c for _, c in single)
    assert packed_sum / packed_count == pytest.approx(
        sum(s for s, _ in single) / packed_count, rel=1e-5)
    # the same documents without the block mask (attention crossing documents) differ
    leaky = collate(packed, pad_id=1)
    leaky.doc_ids = torch.where(leaky.doc_ids >= 0, 0, -1)
    with torch.no_grad():
        from sfttrain.model import PackedLoss

        crossed, _ = PackedLoss(model, attn)(leaky)
    # (a random tiny model leans little on context, hence the small but clear gap)
    assert abs(float(crossed) - packed_sum) / packed_sum > 2e-4


def test_killed_and_resumed_run_matches_uninterrupted(tiny, shards, tmp_path):
    common = ("max_steps=8", "micro_batch=2", "grad_accum=2", "lora_dropout=0.1",
              "eval_every=4", "optimizer=adamw_8bit", "scheduler=cosine", "warmup_steps=2")
    alone = train(shards, tiny, tmp_path / "alone", *common, "save_every=100")
    out = tmp_path / "killed"
    killed = train(shards, tiny, out, *common, "save_every=3", "stop_at_step=5")
    assert killed.stopped == "stop_at_step" and killed.steps == 5
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-0000003"]
    resumed = train(shards, tiny, out, *common, "save_every=3", resume=True)
    assert resumed.steps == 8
    assert resumed.losses == pytest.approx(alone.losses[3:], rel=1e-6)
    metrics = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert metrics == pytest.approx([round(x, 6) for x in alone.losses], abs=2e-6)


def test_early_stopping_on_validation_loss(tiny, shards, tmp_path):
    said = []
    result = train(shards, tiny, tmp_path / "es", "max_steps=40", "lr=0.5", "eval_every=1",
                   "early_stopping_patience=2", "early_stopping_min_delta=10", say=said.append)
    assert result.stopped == "early_stopping" and result.steps == 2  # evals at 0, 1, 2
    assert any("early stopping at step 2" in line for line in said)


def test_keep_best_saves_the_best_validation_step_and_the_last_apart(tiny, shards, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "kb"
    said, warned = [], []
    # min_delta 10: no evaluation counts as an improvement, so the best is the base model (step 0)
    train(shards, tiny, out, "max_steps=4", "lr=0.1", "eval_every=1", "save_every=100",
          "early_stopping_min_delta=10", say=said.append, warn=warned.append)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_step"] == 0
    kept = load_file(out / "adapter" / "adapter_model.safetensors")
    last = load_file(out / "adapter-last" / "adapter_model.safetensors")
    assert kept.keys() == last.keys()
    lora_b = [k for k in kept if "lora_B" in k]
    assert lora_b and all(not kept[k].any() for k in lora_b)  # the untrained (no-op) adapter
    assert any(last[k].any() for k in lora_b)  # the trained one, kept apart
    assert any("adapter/ holds step 0" in line for line in said)
    assert any("never improved on the base model" in line for line in warned)


def test_keep_best_follows_the_lowest_validation_loss(tiny, shards, tmp_path):
    out = tmp_path / "kb2"
    result = train(shards, tiny, out, "max_steps=6", "lr=0.5", "eval_every=1", "save_every=100")
    vals = dict(result.val)
    best = min(vals, key=lambda s: (vals[s], s))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_step"] == best and summary["best_val_loss"] == pytest.approx(vals[best])
    assert (out / "adapter-last").exists() == (best != 6)


def test_keep_best_off_keeps_the_last_weights(tiny, shards, tmp_path):
    out = tmp_path / "last"
    train(shards, tiny, out, "max_steps=3", "lr=0.5", "eval_every=1", "keep_best=false")
    assert (out / "adapter").is_dir() and not (out / "adapter-last").exists()


def test_refuses_shards_of_another_tokenizer(tiny, tmp_path):
    other = write_shards(tmp_path / "other", {"train": task_records(8)}, vocab_hash="ab" * 32)
    with pytest.raises(DataError) as err:
        train(other, tiny, tmp_path / "x", "max_steps=1")
    text = str(err.value)
    assert "shards vocab_hash " + "ab" * 32 in text
    assert "manifest.json" in text and "Fix: re-run `sftdata tokenize --tokenizer" in text


def test_warns_when_generation_eos_differs(tiny, shards, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    gen = json.loads((model / "generation_config.json").read_text())
    gen["eos_token_id"] = 0
    (model / "generation_config.json").write_text(json.dumps(gen))
    warned = []
    train(shards, model, tmp_path / "w", "max_steps=1", "eval_every=10", warn=warned.append)
    assert any("generation EOS [0] differs from the trained end-of-turn token 3" in w
               for w in warned)


def test_full_fine_tuning_and_plain_lora(tiny, shards, tmp_path):
    full = train(shards, tiny, tmp_path / "full", "max_steps=3", "quant=none", "full=true",
                 "lr=1e-3", "grad_checkpointing=false")
    assert (tmp_path / "full" / "model" / "config.json").is_file()
    lora = train(shards, tiny, tmp_path / "lora", "max_steps=3", "quant=none", "dora=true",
                 "rslora=true")
    assert len(full.losses) == len(lora.losses) == 3
