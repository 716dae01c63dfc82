"""Predict peak training memory before any weights are loaded (config.json or GGUF metadata).

The breakdown, in bytes:

- weights: NF4 linear layers at 4 bits + double-quantised block scales (0.5 + 1/64 + 4/16384
  bytes per weight); embeddings, norms and an untied lm_head in fp32 under QLoRA
  (prepare_model_for_kbit_training upcasts them), in the compute dtype otherwise.
- adapter: LoRA A and B (r * (in + out) per targeted linear, fp32), DoRA magnitudes.
- gradients: one per trainable parameter (fp32 for adapters, the weight dtype for full).
- optimizer: AdamW keeps two states per trainable parameter (8 bytes fp32; 2 bytes 8-bit).
- activations: per token and layer, the tensors autograd keeps for a Llama block (attention
  inputs and outputs, rotary q/k, SwiGLU gate/up/product, norms, LoRA dropout copies); with
  gradient checkpointing only each layer's input plus one layer recomputed (and its
  gradients). Tokens per
  micro-batch come from the real packed lengths: micro_batch x the longest sequence (padding).
- mask: the block-diagonal mask for sdpa/eager, micro_batch x T x T bytes.
- logits: computed only at supervised positions, `loss_chunk` at a time (fp32 logits,
  their gradient and the head output).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftdata.errors import DataError, UsageProblem

from .config import TrainConfig

NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
# Elements kept per token per layer for backward, as multiples of hidden (d), the kv width and
# the MLP width (ff); checked against the tensors autograd really saves (docs/sfttrain.md).
ACT_D, ACT_KV, ACT_FF = 8, 3, 4
LORA_DROPOUT_D, LORA_DROPOUT_FF = 9, 1


def model_shape(path: str | Path) -> dict[str, int]:
    """Architecture numbers from a model directory's config.json or a GGUF file's metadata."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return _gguf_shape(path)
    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.is_file():
        raise DataError("no config.json", file=str(path), fix="pass a model directory or .gguf")
    cfg = json.loads(config_path.read_text())
    cfg = cfg.get("text_config", cfg)
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    return _complete(
        {
            "hidden": hidden,
            "intermediate": int(cfg["intermediate_size"]),
            "layers": int(cfg["num_hidden_layers"]),
            "heads": heads,
            "kv_heads": int(cfg.get("num_key_value_heads") or heads),
            "head_dim": int(cfg.get("head_dim") or hidden // heads),
            "vocab": int(cfg["vocab_size"]),
            "tied": int(bool(cfg.get("tie_word_embeddings", False))),
        }
    )


def _gguf_shape(path: Path) -> dict[str, int]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    arch = _gguf_value(reader, "general.architecture")

    def get(key: str, default=None):
        value = _gguf_value(reader, f"{arch}.{key}")
        return default if value is None else int(value)

    hidden, heads = get("embedding_length"), get("attention.head_count")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    has_head = any(t.name == "output.weight" for t in reader.tensors)
    return _complete(
        {
            "hidden": hidden,
            "intermediate": get("feed_forward_length"),
            "layers": get("block_count"),
            "heads": heads,
            "kv_heads": get("attention.head_count_kv", heads),
            "head_dim": get("attention.key_length", hidden // heads),
            "vocab": get("vocab_size", len(tokens.data) if tokens else 0),
            "tied": int(not has_head),
        }
    )


def _gguf_value(reader, key: str):
    field_ = reader.fields.get(key)
    if field_ is None:
        return None
    value = field_.parts[field_.data[0]]
    if field_.types and field_.types[0].name == "STRING":
        return bytes(value).decode()
    return value[0]


def _complete(s: dict[str, int]) -> dict[str, int]:
    d, ff, kv = s["hidden"], s["intermediate"], s["kv_heads"] * s["head_dim"]
    q = s["heads"] * s["head_dim"]
    s["linear_per_layer"] = d * q + 2 * d * kv + q * d + 3 * d * ff
    s["linear"] = s["layers"] * s["linear_per_layer"]
    s["embedding"] = s["vocab"] * d
    s["norms"] = (2 * s["layers"] + 1) * d
    s["params"] = s["linear"] + s["embedding"] * (1 if s["tied"] else 2) + s["norms"]
    return s


def lora_params(shape: dict[str, int], config: TrainConfig) -> int:
    d, ff = shape["hidden"], shape["intermediate"]
    q, kv = shape["heads"] * shape["head_dim"], shape["kv_heads"] * shape["head_dim"]
    linears = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
               "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d)}
    if config.lora_targets != "all-linear":
        wanted = {t.strip() for t in config.lora_targets.split(",")}
        linears = {k: v for k, v in linears.items() if k in wanted}
    per_layer = sum(config.lora_r * (i + o) + (o if config.dora else 0) for i, o in linears.values())
    return per_layer * shape["layers"]


@dataclass
class Plan:
    parts: dict[str, float]  # component -> bytes
    total: float
    budget: float | None
    tokens_per_micro_batch: int
    longest: int
    notes: list[str] = field(default_factory=list)
    suggestion: str | None = None
    quant: str = "nf4"
    levers: list[Lever] = field(default_factory=list)  # what `run` changes on out-of-memory

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.total <= self.budget

    def as_dict(self) -> dict[str, Any]:
        return {"quant": self.quant, "parts": self.parts, "total": self.total,
                "budget": self.budget,
                "fits": self.fits, "tokens_per_micro_batch": self.tokens_per_micro_batch,
                "longest_sequence": self.longest, "suggestion": self.suggestion,
                "notes": self.notes, "levers": [lever.as_dict() for lever in self.levers]}


def predict(
    shape: dict[str, int],
    config: TrainConfig,
    longest: int,
    act_bytes: int = 2,
    attn: str = "sdpa",
    supervised_per_micro_batch: int | None = None,
) -> Plan:
    """Peak memory of one training step for micro-batches padded to `longest` tokens."""
    d, ff, layers = shape["hidden"], shape["intermediate"], shape["layers"]
    kv = shape["kv_heads"] * shape["head_dim"]
    embeds = shape["embedding"] * (1 if shape["tied"] else 2) + shape["norms"]
    if config.quant == "nf4":
        weights = shape["linear"] * NF4_BYTES + embeds * 4
    else:
        weights = (shape["linear"] + embeds) * act_bytes
    if config.full:
        trainable = shape["params"]
        adapter, grad_bytes = 0.0, act_bytes
    else:
        trainable = lora_params(shape, config)
        adapter, grad_bytes = trainable * 4.0, 4
    optim_bytes = 2 if config.optimizer.endswith("8bit") else 2 * (grad_bytes if config.full else 4)
    tokens = config.micro_batch * longest
    per_layer = ACT_D * d + ACT_KV * kv + ACT_FF * ff
    if not config.full and config.lora_dropout > 0:
        per_layer += LORA_DROPOUT_D * d + LORA_DROPOUT_FF * ff
    if attn == "eager":
        per_layer += 2 * shape["heads"] * longest  # scores and probabilities per query token
    full_acts = tokens * layers * per_layer * act_bytes
    # checkpointing keeps each layer's input; backward recomputes one layer and holds its grads
    ckpt_acts = tokens * (layers * d + 2 * per_layer) * act_bytes
    chunk = min(config.loss_chunk, supervised_per_micro_batch or tokens)
    parts = {
        "weights": weights,
        "adapter": adapter,
        "gradients": trainable * grad_bytes,
        "optimizer": trainable * optim_bytes,
        "activations": ckpt_acts if config.grad_checkpointing else full_acts,
        "mask": 0.0 if attn == "flash_attention_2" else config.micro_batch * longest * longest,
        "logits": chunk * shape["vocab"] * (4 + 4 + act_bytes) + tokens * d * act_bytes,
    }
    notes = [
        f"activations without checkpointing {_gib(full_acts)}, with {_gib(ckpt_acts)}",
        f"{trainable:,} trainable parameters of {shape['params']:,}",
    ]
    return Plan(parts, sum(parts.values()), None, tokens, longest, notes, quant=config.quant)


def plan_for(
    shape: dict[str, int],
    config: TrainConfig,
    lengths: list[int],
    budget: float | None,
    act_bytes: int = 2,
    attn: str = "sdpa",
) -> Plan:
    """The plan for the real packed lengths, and the first change that makes it fit.

    quant=auto is decided here as `sfttrain run` decides it: the unquantized base when its run
    fits the budget (or no budget is given), NF4 otherwise.
    """
    from dataclasses import replace

    longest = max(lengths) if lengths else 0
    auto = config.quant == "auto"
    if auto:
        unquantized = predict(shape, replace(config, quant="none"), longest, act_bytes, attn)
        nf4 = budget is not None and unquantized.total > budget and not config.full
        config = replace(config, quant="nf4" if nf4 else "none")
    plan = predict(shape, config, longest, act_bytes, attn)
    plan.budget = budget
    plan.levers = levers(shape, config, longest, act_bytes, attn)
    if auto:
        plan.notes.insert(0, (
            f"quant=auto: NF4, the unquantized run ({_gib(unquantized.total)}) does not fit"
            if nf4 else "quant=auto: the unquantized base (no 4-bit rounding)"
            + (" fits" if budget is not None else
               "; with --gpu-mem, NF4 is chosen where it would not fit")))
    if budget is None or plan.fits:
        return plan
    for label, changed, length in _alternatives(config, longest):
        candidate = predict(shape, changed, length, act_bytes, attn)
        if candidate.total <= budget:
            plan.suggestion = f"{label}: predicted {_gib(candidate.total)}"
            return plan
    plan.suggestion = "no single change fits: use a smaller model or a larger GPU"
    return plan


def _alternatives(config: TrainConfig, longest: int):
    from dataclasses import replace

    if not config.grad_checkpointing:
        yield "turn on gradient checkpointing (grad_checkpointing=true)", replace(
            config, grad_checkpointing=True), longest
    mb = config.micro_batch
    while mb > 1:
        mb //= 2
        accum = config.grad_accum * (config.micro_batch // mb)
        yield (f"micro_batch={mb} grad_accum={accum} (same effective batch)",
               replace(config, micro_batch=mb, grad_accum=accum), longest)
    ckpt = replace(config, grad_checkpointing=True, micro_batch=1)
    length = longest
    while length > 256:
        length //= 2
        yield (f"re-pack with `sftdata pack --seq-len {length}`, micro_batch=1, checkpointing on",
               ckpt, length)
    if config.optimizer == "adamw":
        yield "optimizer=paged_adamw_8bit", replace(ckpt, optimizer="paged_adamw_8bit"), length


# ---------------------------------------------------------------------------- out-of-memory levers

MIN_LOSS_CHUNK = 64  # below this the head's matmuls get small and the logits are tiny anyway
# Speed costs: rules of thumb with their reason, and a number that only breaks ties in the order.
SPEED = {
    "micro_batch": ("~0-15% slower on a GPU (the same tokens in smaller matmuls)", 0.10),
    "grad_checkpointing": ("~20-35% slower (each layer's forward runs again in backward)", 0.30),
    "optimizer": ("~0-5% slower (8-bit state updates, pages moved to the CPU under pressure)",
                  0.03),
    "loss_chunk": ("~1% slower (more, smaller head matmuls)", 0.01),
}


@dataclass
class Lever:
    """One change `sfttrain run` may make on out-of-memory; the effective batch never changes."""

    name: str
    changes: dict[str, Any]
    saves: float  # predicted bytes of peak memory saved
    speed: str
    cost: float  # rough fraction slower (orders levers that save the same)
    only_cuda: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "changes": self.changes, "saves": self.saves,
                "speed": self.speed, "only_cuda": self.only_cuda}

    def line(self) -> str:
        where = " (CUDA only)" if self.only_cuda else ""
        return f"{self.name}{where}: saves {_gib(self.saves)}, {self.speed}"


def levers(shape: dict[str, int], config: TrainConfig, longest: int, act_bytes: int = 2,
           attn: str = "sdpa") -> list[Lever]:
    """The changes that lower this run's peak, ordered by memory saved (then speed cost)."""
    from dataclasses import replace

    before = predict(shape, config, longest, act_bytes, attn).total
    found = []
    for name, changes, only_cuda in _lever_changes(config, longest):
        after = predict(shape, replace(config, **changes), longest, act_bytes, attn).total
        if after < before:
            speed, cost = SPEED[next(iter(changes))]
            found.append(Lever(name, changes, before - after, speed, cost, only_cuda))
    return sorted(found, key=lambda lever: (-lever.saves, lever.cost))


def _lever_changes(config: TrainConfig, longest: int):
    mb = config.micro_batch
    if mb > 1:  # the largest divisor of mb up to half: the effective batch stays exact
        smaller = max(d for d in range(1, mb // 2 + 1) if mb % d == 0)
        accum = config.grad_accum * (mb // smaller)
        yield (f"micro_batch {mb} -> {smaller}, grad_accum {config.grad_accum} -> {accum}",
               {"micro_batch": smaller, "grad_accum": accum}, False)
    if not config.grad_checkpointing:
        yield "gradient checkpointing on", {"grad_checkpointing": True}, False
    if config.optimizer != "paged_adamw_8bit":
        yield (f"optimizer {config.optimizer} -> paged_adamw_8bit",
               {"optimizer": "paged_adamw_8bit"}, True)
    chunk = min(config.loss_chunk, mb * longest)  # no chunk is longer than a micro-batch
    if chunk > MIN_LOSS_CHUNK:
        shorter = max(MIN_LOSS_CHUNK, chunk // 2)
        yield f"loss_chunk {config.loss_chunk} -> {shorter}", {"loss_chunk": shorter}, False


def advice(config: TrainConfig, longest: int) -> str:
    """What is left once every lever is used: changes to the data, the model or the machine."""
    steps = []
    if config.quant == "none" and not config.full:
        steps.append("quant=nf4 (a 4-bit base)")
    if longest > 256:
        steps.append(f"re-pack shorter sequences (`sftdata pack --seq-len {longest // 2}`)")
    if not config.full and config.lora_r > 8:
        steps.append(f"a smaller adapter (lora_r={config.lora_r // 2})")
    steps.append("a smaller model or a GPU with more memory")
    return ("; ".join(steps) + "; `sfttrain plan SHARDS --model M --gpu-mem SIZE` predicts "
            "each before loading anything")


def parse_size(text: str) -> float:
    """'24GiB', '24GB', '80G', '512MiB' -> bytes (the size grammar of sftdata.memory)."""
    from sftdata.memory import size_bytes

    size = size_bytes(text)
    if size is None:
        raise UsageProblem(f"--gpu-mem {text!r}: write a size such as 24GiB, 80GB or 16G")
    return float(size)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def render(plan: Plan) -> str:
    lines = [f"quantization: {plan.quant}", f"{'component':<12} {'GiB':>9}"]
    for name, value in plan.parts.items():
        lines.append(f"{name:<12} {value / 2**30:>9.3f}")
    lines.append(f"{'total':<12} {plan.total / 2**30:>9.3f}")
    lines.append(f"micro-batch tokens {plan.tokens_per_micro_batch} (longest packed sequence "
                 f"{plan.longest})")
    lines.extend(plan.notes)
    if plan.budget is not None:
        verdict = "fits" if plan.fits else "does NOT fit"
        lines.append(f"{verdict} in {_gib(plan.budget)}")
    if plan.suggestion:
        lines.append(f"to fit: {plan.suggestion}")
    if plan.levers:
        lines.append("on out of memory, `sfttrain run` applies in this order (effective batch "
                     "unchanged):")
        lines.extend(f"  {i}. {lever.line()}" for i, lever in enumerate(plan.levers, 1))
    return "\n".join(lines)
