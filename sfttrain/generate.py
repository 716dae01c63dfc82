"""Batched generation with the training chat template -> predictions JSONL (`id`, `prediction`).

The prompt is each record's conversation without its last assistant turn, rendered with the
template the shards were made with (run.json / manifest.json), so inference sees exactly the
format training saw. Records are read with json / pyarrow, never Polars.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sftdata.errors import DataError

from . import model as M


@dataclass
class Decoding:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stops: list[str] = field(default_factory=list)
    seed: int = 0


def read_records(path: str | Path) -> list[dict]:
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    records = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"broken JSON ({exc.msg})", file=str(path), line=line_no,
                                fix="each line must be one JSON record") from None
    return records


def prompt_of(record: dict, index: int, path: str) -> list[dict]:
    """The conversation without its last assistant turn."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError("no messages", file=path, row=index, field="messages",
                        fix="pass canonical records (`sftdata convert` makes them)")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages:
        raise DataError("nothing before the assistant turn", file=path, row=index,
                        field="messages", fix="give each record a user turn")
    return messages


def template_of(source: str | Path | None) -> str | None:
    """The chat template text from a shard dir (manifest.json) or a run dir (run.json)."""
    if source is None:
        return None
    source = Path(source)
    for name in ("run.json", "manifest.json"):
        if (source / name).is_file():
            template = json.loads((source / name).read_text()).get("template") or {}
            return template.get("text")
    raise DataError("neither run.json nor manifest.json here", file=str(source),
                    fix="pass a run directory or a shard directory to --template")


def load_model(model_path: str | Path, device: torch.device):
    """(model, tokenizer, template, extra eos ids) for a run dir, model dir or GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_path)
    if (path / "run.json").is_file():
        from .merge import load_adapted

        model, info = load_adapted(path, for_merge=False, device=str(device))
        tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
        template = (info.get("template") or {}).get("text")
        extra = [info["eos_id"]] if info.get("eos_id") is not None else []
        return model, tokenizer, template, extra
    model_dir = M.resolve_model_dir(path)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer, None, []


def generate_records(
    model, tokenizer, template: str | None, records: list[dict], decoding: Decoding,
    batch_size: int, extra_eos: list[int], path: str = "records",
) -> Iterator[dict]:
    template = template if template and "{%" in template else tokenizer.chat_template
    if not template:
        raise DataError("no chat template: the tokenizer has none and no manifest gave one",
                        file=path, fix="pass --template SHARDS_OR_RUN_DIR")
    tokenizer.padding_side = "left"
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    gen = getattr(model, "generation_config", None)
    eos = gen.eos_token_id if gen is not None else tokenizer.eos_token_id
    eos_ids = list(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    eos_ids += [e for e in extra_eos if e not in eos_ids]
    device = next(model.parameters()).device
    torch.manual_seed(decoding.seed)
    model.eval()
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        prompts = [
            tokenizer.apply_chat_template(prompt_of(r, start + i, path), chat_template=template,
                                          tokenize=False, add_generation_prompt=True)
            for i, r in enumerate(chunk)
        ]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        sample = decoding.temperature > 0
        kwargs = dict(
            max_new_tokens=decoding.max_new_tokens,
            do_sample=sample,
            repetition_penalty=decoding.repetition_penalty,
            eos_token_id=eos_ids or None,
            pad_token_id=pad_id,
        )
        if sample:
            kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p,
                          top_k=decoding.top_k or None)
        if decoding.stops:
            kwargs.update(stop_strings=decoding.stops, tokenizer=tokenizer)
        with torch.no_grad():
            out = model.generate(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
                **kwargs,
            )
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        for i, record in enumerate(chunk):
            text = tokenizer.decode(new_tokens[i], skip_special_tokens=True)
            yield {"id": record.get("id", str(start + i)), "prediction": cut(text, decoding.stops)}


def cut(text: str, stops: list[str]) -> str:
    """Text up to the first stop string (stop strings are not part of the answer)."""
    ends = [text.find(s) for s in stops if s and s in text]
    return (text[: min(ends)] if ends else text).strip()


def generate_file(model_path, records_path, output, decoding: Decoding, batch_size: int,
                  template_from=None, device: str = "auto") -> int:
    records = read_records(records_path)
    for i, record in enumerate(records):
        if "id" not in record:
            raise DataError("record has no id", file=str(records_path), row=i, field="id",
                            fix="run it through `sftdata convert` (ids are added there)")
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and
                                                      torch.cuda.is_available()) else "cpu")
    model, tokenizer, template, extra = load_model(model_path, dev)
    template = template_of(template_from) or template
    rows = generate_records(model, tokenizer, template, records, decoding, batch_size, extra,
                            str(records_path))
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    count = 0
    if output == "-":
        for line in lines:
            sys.stdout.write(line)
            count += 1
        sys.stdout.flush()
        return count
    tmp = Path(output).with_name(f".{Path(output).name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
            count += 1
    os.replace(tmp, output)  # atomic: an interrupted run leaves no half file
    return count
