"""Batched generation with the training chat template -> predictions JSONL (`id`, `prediction`).

The prompt is each record's conversation without its last assistant turn, rendered with the
template the shards were made with (run.json / manifest.json), so inference sees exactly the
format training saw. Records are read with json / pyarrow, never Polars.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sftdata.errors import DataError, json_kind, json_problem

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


class Records(list):
    """Records as dicts, with where each came from (`where(i)`: line N of a JSONL file, row N of
    a table; both count from 1, as in every sftdata message)."""

    def __init__(self, items: list[dict], path: str, lines: list[int] | None = None) -> None:
        super().__init__(items)
        self.path = path
        self.lines = lines

    def where(self, index: int) -> dict:
        if self.lines is not None:
            return {"file": self.path, "line": self.lines[index]}
        return {"file": self.path, "row": index + 1}


RECORDS_FIX = "pass canonical records as JSONL or Parquet (`sftdata convert` makes them)"


def read_records(path: str | Path) -> Records:
    """Canonical records from JSONL, Parquet or Arrow IPC; any unreadable input is a DataError
    naming the file, the line or row and the fix (never a traceback, M9)."""
    path = Path(path)
    name = str(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})", file=name) from None
    if magic[:4] == b"PAR1" or magic[:6] == b"ARROW1" or magic[:4] == b"\xff\xff\xff\xff":
        return Records(_read_table(path, magic), name)
    records, lines = [], []
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            where = {"file": name, "line": line_no}
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"invalid UTF-8 at byte {exc.start}", **where,
                                fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t "
                                    "utf-8), or pass canonical records") from None
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(json_problem(exc), **where,
                                fix="each line must be one JSON record; " + RECORDS_FIX) from None
            except RecursionError:
                raise DataError("JSON nested too deeply", **where, fix=RECORDS_FIX) from None
            if not isinstance(value, dict):
                raise DataError(f"expected a JSON object, got {json_kind(value)}", **where,
                                fix=RECORDS_FIX)
            records.append(value)
            lines.append(line_no)
    return Records(records, name, lines)


def _read_table(path: Path, magic: bytes) -> list[dict]:
    import pyarrow as pa

    kind = "parquet" if magic[:4] == b"PAR1" else "arrow"
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        elif magic[:6] == b"ARROW1":
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        else:
            table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
        table.validate(full=True)
        return table.to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            f"unreadable {kind} file ({str(exc).splitlines()[0]})", file=str(path),
            fix=f"check that it is a complete {kind} file (an interrupted copy is truncated)",
        ) from None


def prompt_of(record: dict, index: int, path: str, records: Records | None = None) -> list[dict]:
    """The conversation without its last assistant turn."""
    where = records.where(index) if records is not None else {"file": path, "row": index + 1}
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError("no messages", **where, field="messages",
                        fix="pass canonical records (`sftdata convert` makes them)")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(
            m.get("content"), str
        ):
            raise DataError("not a message with a string role and content", **where,
                            field=f"messages[{k}]",
                            fix="pass canonical records (`sftdata convert` makes them)")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages:
        raise DataError("nothing before the assistant turn", **where,
                        field="messages", fix="give each record a user turn")
    return messages


def template_of(source: str | Path | None) -> str | None:
    """The chat template text from a shard dir (manifest.json) or a run dir (run.json)."""
    if source is None:
        return None
    source = Path(source)
    if (source / "run.json").is_file():
        from .merge import read_run

        info = read_run(source)
    elif (source / "manifest.json").is_file():
        from sftdata.shards import read_manifest

        info = read_manifest(source)
    else:
        raise DataError("neither run.json nor manifest.json here", file=str(source),
                        fix="pass a run directory or a shard directory to --template")
    template = info.get("template") or {}
    return template.get("text") if isinstance(template, dict) else None


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
    located = records if isinstance(records, Records) else None
    device = next(model.parameters()).device
    torch.manual_seed(decoding.seed)
    model.eval()
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        prompts = [
            tokenizer.apply_chat_template(prompt_of(r, start + i, path, located),
                                          chat_template=template,
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
    from sftdata import outputs
    from sftdata.commands._common import check_paths

    # before any work: the output against the records (same file, unwritable, a directory)
    check_paths([("--records", records_path)], [("-o", output)])
    records = read_records(records_path)
    for i, record in enumerate(records):
        if record.get("id") is None:
            raise DataError("record has no id", **records.where(i), field="id",
                            fix="run it through `sftdata convert` (ids are added there)")
        prompt_of(record, i, str(records_path), records)  # every record checked before the model
    template = template_of(template_from)
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and
                                                      torch.cuda.is_available()) else "cpu")
    model, tokenizer, run_template, extra = load_model(model_path, dev)
    rows = generate_records(model, tokenizer, template or run_template, records, decoding,
                            batch_size, extra, str(records_path))
    count = 0
    # the output policy of sftdata/outputs.py: stdout and pipes in place, files atomically
    with outputs.Output(None if output == "-" else output, "-o") as out:
        for row in rows:
            try:
                out.fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise outputs.failure(exc, "-o", output) from None
            count += 1
    return count
