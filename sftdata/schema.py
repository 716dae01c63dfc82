"""The canonical record: one row per conversation, the same shape for every source format.

Text-only corpora (continued pretraining) are records with ``task = "text"`` and a single
assistant message holding the text: the whole text is trained, and templates render it raw.
"""

from __future__ import annotations

from typing import Any

import polars as pl

SCHEMA_VERSION = "1"

ROLES = ("system", "user", "assistant", "tool")
TASKS = ("chat", "qa", "classification", "extraction", "summarization", "completion", "text")
SPLITS = ("train", "val", "test", "gold")

# Per-message fields beyond role/content are optional (null when the source has none):
#   train        per-turn loss flag for multi-turn masking (null = the tokenize policy decides)
#   weight       per-turn loss weight (OpenAI fine-tuning `weight`, LLaMA-Factory `loss_weight`)
#   name         speaker or tool name
#   tool_calls   JSON text of the assistant's tool calls (OpenAI shape)
#   tool_call_id which call a tool message answers
MESSAGE_FIELDS: dict[str, pl.DataType] = {
    "role": pl.String(),
    "content": pl.String(),
    "train": pl.Boolean(),
    "weight": pl.Float64(),
    "name": pl.String(),
    "tool_calls": pl.String(),
    "tool_call_id": pl.String(),
}
MESSAGE_TYPE = pl.Struct(MESSAGE_FIELDS)

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "messages": pl.List(MESSAGE_TYPE),
    "source": pl.String(),
    "task": pl.String(),
    "label": pl.String(),
    "group": pl.String(),
    "split": pl.String(),
    "meta": pl.String(),
}
RECORD_COLUMNS = tuple(RECORD_SCHEMA)
REQUIRED_COLUMNS = ("id", "messages")


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=RECORD_SCHEMA)


def message(role: str, content: str, **extra: Any) -> dict[str, Any]:
    """A message dict with every struct field present, so frames build without inference."""
    out = {name: None for name in MESSAGE_FIELDS}
    out["role"] = role
    out["content"] = content
    for key, value in extra.items():
        if key not in MESSAGE_FIELDS:
            raise KeyError(f"unknown message field {key!r}")
        out[key] = value
    return out


def content_id(messages: list[dict[str, Any]]) -> str:
    """Stable id from the conversation's roles and contents (other fields do not change it).

    16 hex digits of XXH3-64 (a specified, seed-0, version-stable hash) over the conversation in
    a length-prefixed form: per message ``role NUL byte-length NUL content`` (``-`` as the length
    of a null content). The length prefix makes the form unambiguous without escaping, so the
    vectorized twin in formats/_fast.py builds it at memory speed; JSON spelling plus SHA-256
    cost a quarter of `convert`'s CPU time.
    """
    import xxhash

    return xxhash.xxh3_64_hexdigest(canonical_bytes(messages))


def canonical_bytes(messages: list[dict[str, Any]]) -> bytes:
    """The hashed form of a conversation (see content_id)."""
    parts = []
    for m in messages:
        role = (m.get("role") or "").encode("utf-8")
        content = m.get("content")
        if content is None:
            parts.append(role + b"\0-\0")
        else:
            data = content.encode("utf-8")
            parts.append(b"%s\0%d\0%s" % (role, len(data), data))
    return b"".join(parts)


def from_dicts(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Records from Python dicts; missing columns and message fields become null."""
    fixed = []
    for row in rows:
        out = {col: row.get(col) for col in RECORD_COLUMNS}
        out["messages"] = [message(**_only_known(m)) for m in (row.get("messages") or [])]
        if out["id"] is None:
            out["id"] = content_id(out["messages"])
        fixed.append(out)
    return pl.DataFrame(fixed, schema=RECORD_SCHEMA)


def _only_known(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k in MESSAGE_FIELDS}


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the canonical schema: record columns first in their order, extra columns kept after.

    Missing optional columns and message fields are added as nulls; a missing ``id`` or
    ``messages`` column is an error for the caller to report.
    """
    if "messages" in df.columns:
        df = df.with_columns(_conform_messages(df["messages"]).alias("messages"))
    cols = [
        pl.col(name).cast(dtype) if name in df.columns else pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in RECORD_SCHEMA.items()
    ]
    extras = [c for c in df.columns if c not in RECORD_SCHEMA]
    return df.select(cols + extras)


def _conform_messages(series: pl.Series) -> pl.Series:
    dtype = series.dtype
    if dtype == pl.List(MESSAGE_TYPE):
        return series
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        if dtype == pl.Null or (isinstance(dtype, pl.List) and dtype.inner == pl.Null):
            return series.cast(pl.List(MESSAGE_TYPE))
        raise TypeError(f"messages must be a list of structs, got {dtype}")
    # fields outside MESSAGE_FIELDS are dropped here; adapters move what matters into meta
    have = {f.name for f in dtype.inner.fields}
    inner = pl.element().struct
    fields = [
        (inner.field(name).cast(ftype) if name in have else pl.lit(None, dtype=ftype)).alias(name)
        for name, ftype in MESSAGE_FIELDS.items()
    ]
    return series.list.eval(pl.struct(fields)).cast(pl.List(MESSAGE_TYPE))


def json_schema() -> dict[str, Any]:
    """JSON Schema of one record as JSONL carries it (the file schemas/record.schema.json)."""
    nullable = lambda t: {"type": [t, "null"]}  # noqa: E731
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "sftdata/record.schema.json",
        "title": f"sftdata canonical record v{SCHEMA_VERSION}",
        "type": "object",
        "required": ["id", "messages"],
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "role": {"enum": list(ROLES)},
                        "content": {"type": "string"},
                        "train": nullable("boolean"),
                        "weight": nullable("number"),
                        "name": nullable("string"),
                        "tool_calls": {
                            "type": ["string", "null"],
                            "description": "JSON text of the tool calls (OpenAI shape)",
                        },
                        "tool_call_id": nullable("string"),
                    },
                },
            },
            "source": nullable("string"),
            "task": {"enum": [*TASKS, None]},
            "label": nullable("string"),
            "group": nullable("string"),
            "split": nullable("string"),
            "meta": {"type": ["string", "null"], "description": "JSON text of anything else"},
        },
        "additionalProperties": True,
    }
