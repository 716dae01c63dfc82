"""quant=auto, and the quantization damage measured before training.

4-bit NF4 is a memory lever, not free: it rounds every linear weight to 16 levels per block. On a
model that was already quantized once (a GGUF at Q4_1, say, which sfttrain dequantizes) or on a
small model, the second rounding can double the loss (SmolLM2-135M-Instruct from its Q4_1 GGUF:
answer loss about 3.0 -> 6.4), and QLoRA then spends its steps repairing the quantization
instead of learning the task. So:

- quant=auto (the default) trains on the unquantized base whenever `plan` predicts that the
  unquantized LoRA run fits the device (GPU memory, or available RAM on a CPU; `mem_budget`
  overrides it), and takes NF4 only when it does not.
- Whenever NF4 is used, the base model's loss on a fixed sample is measured in the compute dtype
  and again after quantization, both are printed, and a warning with the fix follows when the
  rise passes `quant_damage_warn`. The unquantized measurement is skipped (and said so) when the
  unquantized weights would not fit beside nothing else.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from sftdata.shards import ShardReader

from .config import TrainConfig
from .data import Batch, collate
from .plan import parse_size, predict

DTYPE_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


def device_memory(device: torch.device) -> float:
    """Bytes a run may use: the GPU's total memory, or the RAM available now on a CPU."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    from sftdata.memory import available

    return float(available())


def memory_budget(config: TrainConfig, device: torch.device) -> tuple[float, str]:
    if config.mem_budget:
        return parse_size(config.mem_budget), f"mem_budget={config.mem_budget}"
    if device.type == "cuda":
        return 0.9 * device_memory(device), "90% of the GPU's memory"
    return 0.8 * device_memory(device), "80% of the RAM available now"


def resolve_quant(
    config: TrainConfig, shape: dict[str, int], longest: int, device: torch.device,
    dtype: torch.dtype,
) -> tuple[str, str]:
    """(quant, why) for this run: config.quant unless it is auto."""
    if config.quant != "auto":
        return config.quant, f"quant={config.quant} as configured"
    if config.full:
        return "none", "full fine-tuning trains the unquantized weights"
    budget, source = memory_budget(config, device)
    need = predict(shape, replace(config, quant="none"), longest,
                   DTYPE_BYTES.get(dtype, 4)).total
    if need <= budget:
        return "none", (f"quant=auto: the unquantized base fits ({_gib(need)} planned, "
                        f"{_gib(budget)} = {source}), so no 4-bit rounding")
    return "nf4", (f"quant=auto: the unquantized base does not fit ({_gib(need)} planned, "
                   f"{_gib(budget)} = {source}), so NF4 (QLoRA)")


@dataclass
class QuantCheck:
    sequences: int
    supervised: int
    loss_full: float | None  # None: the unquantized weights did not fit to measure
    loss_quant: float
    dtype: str
    split: str = "val"
    skipped: str = ""

    @property
    def rise(self) -> float | None:
        if self.loss_full is None or self.loss_full <= 0:
            return None
        return self.loss_quant / self.loss_full - 1

    def as_dict(self) -> dict:
        return {"sequences": self.sequences, "supervised_tokens": self.supervised,
                "loss_unquantized": _round(self.loss_full), "loss_nf4": _round(self.loss_quant),
                "rise": _round(self.rise), "dtype": self.dtype, "split": self.split,
                "skipped": self.skipped or None}

    def line(self) -> str:
        head = (f"sfttrain: quantization check on {self.sequences} {self.split} sequence(s) "
                f"({self.supervised:,} supervised tokens): loss ")
        if self.loss_full is None:
            return head + f"{self.loss_quant:.4f} after NF4 (unquantized not measured: {self.skipped})"
        return head + (f"{self.loss_full:.4f} in {self.dtype}, {self.loss_quant:.4f} after NF4 "
                       f"({self.rise:+.1%})")


def sample(shard_dir: str | Path, split: str, sequences: int, micro_batch: int,
           pad_id: int) -> list[Batch]:
    """The first `sequences` packed sequences of a split, in file order: the same every run."""
    reader = ShardReader(shard_dir, split)
    rows = [reader[i] for i in range(min(sequences, len(reader)))]
    return [collate(rows[i : i + micro_batch], pad_id) for i in range(0, len(rows), micro_batch)]


@torch.no_grad()
def mean_loss(loss_fn, batches: list[Batch], device: torch.device, autocast) -> tuple[float, int]:
    """Token-weighted loss of the model behind `loss_fn` (eval mode, no dropout)."""
    was_training = loss_fn.training
    loss_fn.eval()
    total, count = 0.0, 0
    for batch in batches:
        with autocast:
            part, n = loss_fn(batch.to(device))
        total += float(part)
        count += int(n)
    loss_fn.train(was_training)
    return total / max(count, 1), count


def unquantized_loss(model_dir, batches, dtype, device, attn, autocast, config) -> float | str:
    """The base model's loss in the compute dtype, or the reason it was not measured."""
    from .model import PackedLoss, load_base
    from .plan import model_shape

    shape = model_shape(model_dir)
    weights = shape["params"] * DTYPE_BYTES.get(dtype, 4)
    budget, source = memory_budget(config, device)
    if weights > budget:
        return f"{_gib(weights)} of unquantized weights exceed {_gib(budget)} ({source})"
    base = load_base(model_dir, "none", dtype, device, attn)
    loss, _ = mean_loss(PackedLoss(base, attn, config.loss_chunk), batches, device, autocast)
    del base
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return loss


class DamageProbe:
    """The check in two halves around loading the 4-bit model: the sample and its unquantized
    loss first (that model is freed before the 4-bit one loads), the NF4 loss after."""

    def __init__(self, shard_dir, split, pad_id: int, model_dir, config: TrainConfig, dtype,
                 device, attn, autocast):
        self.split, self.config = split, config
        self.dtype, self.device, self.autocast = dtype, device, autocast
        self.batches = sample(shard_dir, split, config.quant_check_sequences, config.micro_batch,
                              pad_id)
        self.unquantized = unquantized_loss(model_dir, self.batches, dtype, device, attn,
                                            autocast, config)

    def finish(self, loss_fn, shape: dict[str, int], longest: int
               ) -> tuple[QuantCheck, str | None]:
        """The quantized model's loss (the fresh adapter is a no-op: lora_B = 0), the check and
        its warning, if any."""
        quant_loss, supervised = mean_loss(loss_fn, self.batches, self.device, self.autocast)
        measured = isinstance(self.unquantized, float)
        check = QuantCheck(sum(len(b.record_ids) for b in self.batches), supervised,
                           self.unquantized if measured else None, quant_loss,
                           str(self.dtype)[6:], self.split,
                           "" if measured else str(self.unquantized))
        plan_none = predict(shape, replace(self.config, quant="none"), longest,
                            DTYPE_BYTES.get(self.dtype, 4)).total
        return check, damage_warning(check, self.config, plan_none)


def damage_warning(check: QuantCheck, config: TrainConfig, plan_none: float | None) -> str | None:
    rise = check.rise
    if rise is None or rise <= config.quant_damage_warn:
        return None
    fits = f" (plan: {_gib(plan_none)} unquantized)" if plan_none else ""
    return (f"NF4 quantization raises the base model's loss by {rise:.0%} "
            f"({check.loss_full:.3f} -> {check.loss_quant:.3f}): QLoRA starts from a damaged "
            f"model. Fix: quant=none to train LoRA on the unquantized base{fits}, or start from "
            "the original 16-bit weights rather than an already quantized GGUF; "
            f"quant_damage_warn={config.quant_damage_warn} sets this threshold")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
