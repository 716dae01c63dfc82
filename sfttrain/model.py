"""Model loading (HF directory or GGUF), QLoRA/LoRA/full set-up, tokenizer checks, the loss.

GGUF files are dequantized once by transformers and saved as an ordinary HF directory in a cache
(``$SFTTRAIN_CACHE``, default ``~/.cache/sfttrain``), so every later load, 4-bit included, is a
plain ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sftdata.errors import DataError
from sftdata.shards import LABEL_PAD, tokenizer_fingerprint

from .config import TrainConfig
from .data import Batch, attention_mask


def cache_root() -> Path:
    return Path(os.environ.get("SFTTRAIN_CACHE", Path.home() / ".cache" / "sfttrain"))


def resolve_model_dir(path: str | Path) -> Path:
    """A local HF model directory; a .gguf file is converted to one (cached) first."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DataError(
                "not a model directory (no config.json)", file=str(path),
                fix="pass a Hugging Face model directory or a .gguf file",
            )
        return path
    if path.is_file() and path.suffix == ".gguf":
        _check_gguf_magic(path)
        return gguf_to_dir(path)
    raise DataError(
        "model not found", file=str(path), fix="pass a local model directory or a .gguf file"
    )


def _check_gguf_magic(path: Path) -> None:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise DataError(
            f"not a GGUF file (it starts with {magic!r}, not b'GGUF')", file=str(path),
            fix="pass a real .gguf model file or a Hugging Face model directory",
        )


def gguf_to_dir(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    out = cache_root() / "gguf" / f"{path.stem}-{key[:12]}"
    if (out / "config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    # The dequantized model is still flagged as GGUF-quantized, which blocks save_pretrained.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tmp.replace(out) if not out.exists() else None
    return out


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def tokenizer_of(model_path: str | Path):
    """The tokenizer of a model directory or a .gguf file, without loading any weights; None
    for a directory that holds no tokenizer (a config.json alone)."""
    from transformers import AutoTokenizer

    path = Path(model_path)
    if path.is_file() and path.suffix == ".gguf":
        _check_gguf_magic(path)
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model_dir = resolve_model_dir(path)
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        return None
    return load_tokenizer(model_dir)


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def pick_device(config: TrainConfig, local_rank: int = 0) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def pick_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    if config.dtype == "bf16":
        return torch.bfloat16
    if config.dtype == "fp16":
        return torch.float16
    if config.dtype == "fp32" or device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def pick_attn(config: TrainConfig, device: torch.device) -> str:
    if config.attn != "auto":
        return config.attn
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def load_base(
    model_dir: Path, quant: str, dtype: torch.dtype, device: torch.device, attn: str
) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn}
    if quant == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
        quiet_bitsandbytes()
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if quant == "nf4":
        keep_dequantize_path(model)
    else:
        model.to(device)
    return model


def keep_dequantize_path(model: nn.Module) -> int:
    """Pin every NF4 layer to dequantize-then-matmul in the compute dtype; returns the count.

    bitsandbytes >= 0.49, on a CPU with AVX512-BF16, repacks a Linear4bit weight into a CPU-only
    layout on its first forward in eval mode under no_grad (a validation pass) and from then on
    multiplies through `gemv_4bit`: bf16 whatever the compute dtype, no autograd formula, and
    `model.train()` does not undo it. Training after an evaluation then gets wrong gradients, and
    results depend on the CPU. Training, validation, merge and generate all take the path that
    every machine has. Layers already repacked are unpacked again.
    """
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
    from bitsandbytes.nn import Linear4bit

    count = 0
    for module in model.modules():
        if not isinstance(module, Linear4bit):
            continue
        module.support_avx512bf16_for_cpu = False  # the per-layer switch of the repack
        state = getattr(module.weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            module.weight.data, module.weight.quant_state = (
                _convert_weight_packed_for_cpu_inverse(module.weight.data, state))
        count += 1
    return count


def repacked_layers(model: nn.Module) -> list[str]:
    """Names of NF4 layers in bitsandbytes' CPU inference layout (none, after the pin above)."""
    from bitsandbytes.nn import Linear4bit

    return [name for name, module in model.named_modules() if isinstance(module, Linear4bit)
            and getattr(module.weight.quant_state, "packing_format_for_cpu", False)]


def quiet_bitsandbytes() -> None:
    """bitsandbytes logs, at import on AVX512-BF16 CPUs, that an optional kernel for the repacked
    layout is missing; sfttrain never uses that layout, so the line is noise."""
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def lora_targets(config: TrainConfig) -> str | list[str]:
    if config.lora_targets == "all-linear":
        return "all-linear"
    return [t.strip() for t in config.lora_targets.split(",") if t.strip()]


def prepare_for_training(model: nn.Module, config: TrainConfig) -> nn.Module:
    """QLoRA/LoRA adapters through peft, or every weight trainable for full fine-tuning."""
    if config.grad_checkpointing:
        # Non-reentrant checkpointing works with DDP and needs no input gradients.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if config.full:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    check_lora_targets(model, config)
    if config.quant == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_targets(config),
        use_rslora=config.rslora,
        use_dora=config.dora,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    # peft keeps the targets as a set: sorted, adapter_config.json is the same on every run
    for adapter in model.peft_config.values():
        if isinstance(adapter.target_modules, set):
            adapter.target_modules = sorted(adapter.target_modules)
    return model


def check_lora_targets(model: nn.Module, config: TrainConfig) -> None:
    """A lora_targets name that matches no linear layer is a config error (exit 2), said before
    peft fails deep inside; the message lists the names the model has."""
    from .config import ConfigError

    targets = lora_targets(config)
    if targets == "all-linear":
        return
    head = model.get_output_embeddings()
    names = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                    if isinstance(module, nn.Linear) and module is not head})
    unknown = [t for t in targets if t not in names]
    if not targets or unknown:
        what = ", ".join(repr(t) for t in unknown) if unknown else "nothing"
        raise ConfigError([f"lora_targets: {what} matches no linear layer of the model; "
                           f"its linear layers: {', '.join(names)} (or all-linear)"])


def causal_lm(model: nn.Module) -> nn.Module:
    """The *ForCausalLM module under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class PackedLoss(nn.Module):
    """Summed next-token cross-entropy over supervised positions of a packed batch.

    Logits are computed only at supervised positions, in chunks of `chunk` tokens, each chunk
    recomputed in backward: memory for logits stays at chunk x vocab, whatever the sequence
    length. Returns (loss_sum, supervised_count); the caller divides by the global count so the
    loss is token-weighted across micro-batches, accumulation steps and ranks.
    """

    def __init__(self, model: nn.Module, attn: str, chunk: int = 1024):
        super().__init__()
        self.model = model
        self.attn = attn
        self.chunk = chunk

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        lm = causal_lm(self.model)
        head = lm.get_output_embeddings()
        dtype = head.weight.dtype if head.weight.is_floating_point() else torch.float32
        mask = attention_mask(batch.doc_ids, self.attn, dtype)
        hidden = lm.get_decoder()(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            attention_mask=mask,
            use_cache=False,
        ).last_hidden_state
        keep = batch.targets != LABEL_PAD
        hidden = hidden[keep]
        targets = batch.targets[keep]
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, targets.numel(), self.chunk):
            h = hidden[start : start + self.chunk]
            t = targets[start : start + self.chunk]
            if torch.is_grad_enabled():
                total = total + checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
            else:
                total = total + _chunk_loss(head, h, t)
        return total, keep.sum()


def _chunk_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return nn.functional.cross_entropy(logits, targets, reduction="sum")


# --------------------------------------------------------------------------- checks


def check_tokenizer(manifest: dict, tokenizer, shard_dir: str, model_path: str) -> None:
    """Refuse shards tokenized with another vocabulary than the model's tokenizer."""
    want = (manifest.get("tokenizer") or {}).get("vocab_hash")
    have = tokenizer_fingerprint(tokenizer.get_vocab())
    if want != have:
        raise DataError(
            f"the shards were tokenized with another tokenizer than the model's "
            f"(shards vocab_hash {want}, model {model_path} vocab_hash {have})",
            file=f"{shard_dir}/manifest.json",
            field="tokenizer.vocab_hash",
            fix=f"re-run `sftdata tokenize --tokenizer {model_path}` and `sftdata pack`, "
            "or train the model the shards were made for",
        )


def eos_mismatch(manifest: dict, model: nn.Module, tokenizer) -> str | None:
    """A warning when generation would not stop at the end-of-turn token the shards train."""
    trained = manifest.get("eos_id")
    gen = getattr(causal_lm(model), "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    eos_ids = eos if isinstance(eos, list) else ([] if eos is None else [eos])
    if trained is None or trained in eos_ids:
        return None
    name = tokenizer.convert_ids_to_tokens(int(trained))
    return (
        f"the model's generation EOS {eos_ids} differs from the trained end-of-turn token "
        f"{trained} ({name!r}): generation may not stop. `sfttrain merge` adds {trained} to "
        "generation_config.eos_token_id"
    )


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights counted as their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n = int(getattr(p, "quant_state", None).shape.numel()) if p.quant_state else n * 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def quiet_warnings() -> None:
    """Silence library deprecation chatter that says nothing about the user's run."""
    for pattern in (".*checkpointing.*is deprecated.*", ".*Paged optimizers.*", ".*use_cache.*"):
        warnings.filterwarnings("ignore", message=pattern)
    quiet_bitsandbytes()
