"""Test helpers for sfttrain: a tiny random Llama built from a fixed seed, and shards written
directly with sftdata.shards (ChatML via fixtures/tokenizers/tiny-chatml), no Polars involved."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from sftdata.shards import LABEL_PAD, ShardWriter, text_hash, tokenizer_fingerprint, write_manifest

try:  # the test machine is shared: more threads than cores makes tiny matmuls 20x slower
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "fixtures" / "tokenizers" / "tiny-chatml"
TINY_CONFIG_DIR = ROOT / "fixtures" / "models" / "tiny-llama"


def make_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """fixtures/models/tiny-llama/config.json + random weights from `seed` + the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").is_file():
        return out_dir
    config = AutoConfig.from_pretrained(TINY_CONFIG_DIR)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = 3
    model.generation_config.pad_token_id = 1
    model.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER_DIR / name, out_dir / name)
    return out_dir


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def encode_chat(tokenizer, messages: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """ChatML ids and labels: assistant content and its <|im_end|> trained, the rest -100."""
    ids: list[int] = []
    labels: list[int] = []
    for m in messages:
        head = tokenizer.encode(f"<|im_start|>{m['role']}\n", add_special_tokens=False)
        body = tokenizer.encode(m["content"] + "<|im_end|>", add_special_tokens=False)
        tail = tokenizer.encode("\n", add_special_tokens=False)
        trained = m["role"] == "assistant"
        ids += head + body + tail
        labels += [LABEL_PAD] * len(head) + (body if trained else [LABEL_PAD] * len(body))
        labels += [LABEL_PAD] * len(tail)
    return np.array(ids, dtype=np.int32), np.array(labels, dtype=np.int32)


def task_records(n: int, seed: int = 0, prefix: str = "r") -> list[dict]:
    """A learnable toy task: repeat a short sequence of words (loss must fall on it)."""
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird"]
    records = []
    for i in range(n):
        picked = [words[j] for j in rng.integers(0, len(words), size=int(rng.integers(2, 5)))]
        text = " ".join(picked)
        records.append(
            {
                "id": f"{prefix}{i}",
                "messages": [
                    {"role": "user", "content": f"repeat: {text}"},
                    {"role": "assistant", "content": text},
                ],
            }
        )
    return records


def write_shards(
    out_dir: Path,
    splits: dict[str, list[dict]],
    seq_len: int = 128,
    tokenizer=None,
    vocab_hash: str | None = None,
) -> Path:
    """Greedy-pack records of each split into sequences of at most `seq_len` tokens."""
    tokenizer = tokenizer or load_tokenizer()
    out_dir = Path(out_dir)
    entries = {}
    for split, records in splits.items():
        writer = ShardWriter(out_dir, split, rows_per_file=7)  # several files per split
        pending: list[tuple[np.ndarray, np.ndarray, str]] = []
        used = 0
        for rec in records:
            ids, labels = encode_chat(tokenizer, rec["messages"])
            ids, labels = ids[:seq_len], labels[:seq_len]
            if used + ids.size > seq_len and pending:
                _flush(writer, pending)
                pending, used = [], 0
            pending.append((ids, labels, rec["id"]))
            used += ids.size
        if pending:
            _flush(writer, pending)
        entries[split] = writer.close(seq_len)
    template = tokenizer.chat_template
    write_manifest(
        out_dir,
        {
            "created_by": "tests/sfttrain_helpers.py",
            "seq_len": seq_len,
            "pad_id": tokenizer.pad_token_id,
            "eos_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "label_pad": LABEL_PAD,
            "tokenizer": {
                "backend": "hf",
                "name": "tiny-chatml",
                "vocab_size": len(tokenizer),
                "vocab_hash": vocab_hash or tokenizer_fingerprint(tokenizer.get_vocab()),
            },
            "template": {"name": "chatml", "hash": text_hash(template), "text": template},
            "packing": {"strategy": "greedy"},
            "splits": entries,
        },
    )
    return out_dir


def _flush(writer: ShardWriter, docs: list[tuple[np.ndarray, np.ndarray, str]]) -> None:
    writer.add(
        np.concatenate([d[0] for d in docs]),
        np.concatenate([d[1] for d in docs]),
        [d[0].size for d in docs],
        [d[2] for d in docs],
    )


def quiet(*_args, **_kwargs) -> None:
    """A say/warn that prints nothing."""


def train(shards: Path, model: Path, out: Path, *overrides: str, resume: bool = False, **kw):
    """Run sfttrain.train.run with key=value overrides on the tiny model (fp32, CPU)."""
    from sfttrain.config import build_config
    from sfttrain.train import run

    # QLoRA unless a test says otherwise: quant=auto would pick none for a model this small
    config = build_config(None, ["device=cpu", "quant=nf4", "lr=0.01", "lora_r=8",
                                 "lora_alpha=16", "warmup_steps=0", *overrides])
    return run(shards, model, config, out, resume=resume, say=kw.get("say", quiet),
               warn=kw.get("warn", quiet))
