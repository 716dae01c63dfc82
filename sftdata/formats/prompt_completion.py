"""Prompt/completion pairs (task "completion"), and TRL-style preference rows.

``prompt`` and ``completion`` may be strings or lists of messages. A row with ``chosen`` instead
of ``completion`` trains on the chosen answer; ``rejected`` goes to meta.
"""

from __future__ import annotations

from typing import Any

from ._base import Options, RowProblem, make_message, others, record, require
from .openai import parse_messages

NAME = "prompt-completion"
USED = ("id", "prompt", "completion", "chosen")


def matches(row: dict[str, Any]) -> bool:
    return "prompt" in row and ("completion" in row or "chosen" in row)


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    answer_key = "completion" if "completion" in row else "chosen"
    messages = _side(require(row, "prompt", NAME), "prompt", "user", opts)
    messages += _side(require(row, answer_key, NAME), answer_key, "assistant", opts)
    task = "completion" if answer_key == "completion" else None
    return [record(messages, opts, id=row.get("id"), extras=others(row, USED), task=task)]


def _side(value: Any, key: str, role: str, opts: Options) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return parse_messages(value, key, opts)[0]
    if not isinstance(value, str):
        raise RowProblem(key, f"must be a string or a list of messages, got {type(value).__name__}",
                         "make it a string")
    return [make_message(role, value, key)]
