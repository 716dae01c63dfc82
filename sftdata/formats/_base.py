"""What every format adapter shares: role names, message and record builders, the row error.

An adapter turns one source row (a dict) into zero or more canonical record dicts. It never
reads files and never prints; a bad row raises :class:`RowProblem` naming the source field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..schema import MESSAGE_FIELDS, RECORD_COLUMNS, content_id

# Source role names -> canonical roles. "function_call" is special: an assistant tool call.
ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
    "ipython": "tool",
    "function_call": "function_call",
}


class RowProblem(Exception):
    """One bad row: which source field, what is wrong, how to fix it."""

    def __init__(self, field: str | None, message: str, fix: str) -> None:
        self.field = field
        self.message = message
        self.fix = fix
        super().__init__(message)


@dataclass
class Options:
    """Conversion settings that adapters read (all come from command flags)."""

    source: str = "stdin"  # value of the `source` column for records that have none
    roles: dict[str, str] = field(default_factory=dict)  # extra role aliases (--roles)
    template: str | None = None  # prompt template for classification/extraction tables
    oasst_best: bool = False  # keep only the best-ranked path of each OASST tree
    task: str | None = None  # overrides the task an adapter would set


def normalize_role(raw: Any, where: str, opts: Options) -> str:
    if not isinstance(raw, str):
        raise RowProblem(where, f"role must be a string, got {_kind(raw)}", _ROLE_FIX)
    key = raw.strip()
    role = opts.roles.get(key) or ROLE_ALIASES.get(key.lower())
    if role is None:
        raise RowProblem(where, f"unknown role {raw!r}", _ROLE_FIX)
    return role


_ROLE_FIX = (
    "use system, user, assistant or tool (or human, gpt, function_call, observation), "
    "or map it with --roles NAME=ROLE"
)


def make_message(role: str, content: Any, where: str, **extra: Any) -> dict[str, Any]:
    """A full message dict; refuses non-string content and empty assistant turns."""
    if content is None:
        content = ""
    if isinstance(content, int | float) and not isinstance(content, bool):
        content = str(content)  # a bare number as an answer (Polars reads it as text too)
    if not isinstance(content, str):
        raise RowProblem(where, f"content must be a string, got {_kind(content)}",
                         "make the content a string (or a list of typed text parts)")
    if role == "assistant" and not content.strip() and not extra.get("tool_calls"):
        raise RowProblem(where, "empty assistant turn",
                         "fill in the answer or drop the row (--rejects FILE skips it)")
    out = dict.fromkeys(MESSAGE_FIELDS)
    out["role"] = role
    out["content"] = content
    for key, value in extra.items():
        out[key] = value
    return out


def system_field(row: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``system`` column of an Alpaca or ShareGPT row: a system turn when it has text; a
    blank one gives no turn and is kept in meta as it was (L13: never lost silently)."""
    system = row.get("system")
    if system is None:
        return [], {}
    if isinstance(system, str) and not system.strip():
        return [], {"system": system}
    return [make_message("system", system, "system")], {}


def require(row: dict[str, Any], key: str, fmt: str) -> Any:
    if key not in row or row[key] is None:
        raise RowProblem(key, f"missing ({fmt} rows need it)",
                         f"add it, map a column with --map {key}=COLUMN, or force another "
                         "format with --from")
    return row[key]


def require_str(row: dict[str, Any], key: str, fmt: str) -> str:
    value = require(row, key, fmt)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RowProblem(key, f"must be a string, got {_kind(value)}", "make it a string")
    return value


def dumps(value: Any) -> str:
    """Compact JSON, non-ASCII kept: the one spelling of JSON text inside records. NaN and
    infinities (Python's json reads `NaN` and `1e400`) are written as the strings "NaN",
    "Infinity" and "-Infinity": valid JSON, and nothing lost (L12)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def meta_json(extras: dict[str, Any], base: Any = None) -> str | None:
    """JSON of the source fields no column holds (nulls left out), merged into ``base``."""
    # keys sorted: the same record gets the same meta whichever path (row or vectorized) built it
    kept = {k: extras[k] for k in sorted(extras) if extras[k] is not None}
    if base is None:
        return dumps(kept) if kept else None
    if not kept:
        return base
    try:
        merged = json.loads(base)
    except (TypeError, ValueError):
        merged = None
    if not isinstance(merged, dict):
        merged = {"meta": base}
    merged.update(kept)
    return dumps(merged)


def record(
    messages: list[dict[str, Any]],
    opts: Options,
    *,
    id: Any = None,
    extras: dict[str, Any] | None = None,
    task: str | None = None,
    label: Any = None,
    group: Any = None,
    split: Any = None,
    source: Any = None,
    meta: Any = None,
) -> dict[str, Any]:
    """A canonical record dict; id falls back to the content hash of the messages."""
    if not messages:  # L10: the adapters name their own field; this is the backstop
        raise RowProblem(None, "no messages to make a record from",
                         "drop the row (--rejects FILE skips it)")
    return {
        "id": str(id) if id is not None else content_id(messages),
        "messages": messages,
        "source": source if source is not None else opts.source,
        "task": opts.task or task,
        "label": _label_text(label),
        "group": str(group) if group is not None else None,
        "split": split,
        "meta": meta_json(extras or {}, meta),
    }


def _label_text(label: Any) -> str | None:
    if label is None or isinstance(label, str):
        return label
    if isinstance(label, bool):
        return "true" if label else "false"
    return dumps(label) if isinstance(label, (list, dict)) else str(label)


def others(row: dict[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    """The row's fields an adapter did not map: they go to meta so nothing is lost."""
    return {k: v for k, v in row.items() if k not in used}


def passthrough_columns(row: dict[str, Any]) -> dict[str, Any]:
    """Canonical columns a source row already has (kept as they are)."""
    return {k: row[k] for k in RECORD_COLUMNS if k in row and k != "messages"}


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
