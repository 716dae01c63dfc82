"""Plain text for continued pretraining: ``{"text": ...}`` -> task "text", one assistant message
holding the whole text (docs/pipeline.md: templates render it raw and train all of it)."""

from __future__ import annotations

from typing import Any

import polars as pl

from . import _fast
from ._base import Options, make_message, others, record, require_str

NAME = "text"
USED = ("id", "text")


def matches(row: dict[str, Any]) -> bool:
    return isinstance(row.get("text"), str)


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    text = require_str(row, "text", NAME)
    messages = [make_message("assistant", text, "text")]
    return [record(messages, opts, id=row.get("id"), extras=others(row, USED), task="text")]


def fast(frame: pl.DataFrame, opts: Options) -> pl.DataFrame | None:
    if not _fast.plain_strings(frame, ["text"], nullable=["id"]) or not _fast.extras_ok(frame, USED):
        return None
    if (frame["text"].str.strip_chars() == "").any():
        return None
    turns = [("assistant", pl.col("text"))]
    messages = _fast.fixed_messages(frame, turns)
    ids = _fast.fixed_content_ids(frame, turns)
    return _fast.finish(frame, messages, ids, opts, USED, task="text")
