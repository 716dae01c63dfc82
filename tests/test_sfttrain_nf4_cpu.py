"""NF4 layers on a CPU keep dequantize-then-matmul, whatever the CPU has.

bitsandbytes >= 0.49 repacks a Linear4bit weight into a CPU inference layout on its first
forward in eval mode under no_grad when the CPU has AVX512-BF16, and then multiplies through a
bf16 kernel with no autograd formula. A validation pass before training then changed every later
gradient (issue 10). These tests make bitsandbytes believe the CPU has the feature, and believe it
has not, so they mean the same on every x86 machine.
"""

from __future__ import annotations

import pytest
import torch
from sfttrain_helpers import task_records, write_shards

from sftdata.shards import ShardReader
from sfttrain import model as M
from sfttrain.config import build_config
from sfttrain.data import collate


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    shards = write_shards(tmp_path_factory.mktemp("shards"), {"train": task_records(24, seed=3)},
                          seq_len=96)
    reader = ShardReader(shards, "train")
    return collate([reader[i] for i in range(3)], pad_id=1)


@pytest.fixture(params=[True, False], ids=["avx512bf16", "no-avx512bf16"])
def cpu_has_avx512bf16(request, monkeypatch):
    """What bitsandbytes' Linear4bit believes when it is built (it asks once, in __init__)."""
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: request.param)
    return request.param


def _qlora(model_dir):
    config = build_config(None, ["quant=nf4", "lora_r=8", "lora_alpha=16", "lora_dropout=0",
                                 "grad_checkpointing=false"])
    torch.manual_seed(0)  # same adapter initialisation for every model built here
    base = M.load_base(model_dir, "nf4", torch.float32, torch.device("cpu"), "sdpa")
    return M.prepare_for_training(base, config)


def _grads(model, batch) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    total, count = M.PackedLoss(model, "sdpa")(batch)
    (total / count).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_eval_pass_leaves_nf4_layers_unpacked_and_gradients_unchanged(
    tiny, batch, cpu_has_avx512bf16
):
    evaluated = _qlora(tiny)
    evaluated.eval()
    with torch.no_grad():
        M.PackedLoss(evaluated, "sdpa")(batch)
    assert M.repacked_layers(evaluated) == []

    never_evaluated = _qlora(tiny)
    after_eval, fresh = _grads(evaluated, batch), _grads(never_evaluated, batch)
    assert after_eval.keys() == fresh.keys() and len(fresh) > 0
    for name, grad in fresh.items():
        assert torch.equal(after_eval[name], grad), name
    assert any(g.abs().sum() > 0 for g in fresh.values())


def test_layers_repacked_before_the_pin_are_unpacked(tiny, batch, cpu_has_avx512bf16):
    """A model evaluated before the pin gets its layout back. The repack stores the block scales
    in bf16, so gradients agree to bf16 precision, not bit for bit."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu
    from bitsandbytes.nn import Linear4bit

    model = _qlora(tiny)
    before = _grads(model, batch)
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    for layer in layers:
        layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(
            layer.weight.data, layer.weight.quant_state)
    assert len(M.repacked_layers(model)) == len(layers) > 0

    assert M.keep_dequantize_path(model) == len(layers)
    assert M.repacked_layers(model) == []
    after = _grads(model, batch)
    for name, grad in before.items():
        # lora_A's gradient is exactly zero on the first step (lora_B starts at zero)
        error = float((after[name] - grad).norm() / grad.norm().clamp_min(1e-30))
        assert error < 1e-2, (name, error)
