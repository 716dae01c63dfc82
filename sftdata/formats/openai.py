"""OpenAI chat messages (and canonical records, which are the same shape).

Per message: role system/user/assistant/tool; content a string, null (with tool_calls) or a list
of typed parts; ``tool_calls`` kept as JSON text; ``tool_call_id`` and ``name`` kept; ``weight``
(OpenAI) or ``loss_weight`` (LLaMA-Factory) becomes ``weight`` and ``train = weight > 0``.
Typed parts: ``text`` parts are joined by newlines, ``reasoning``/``thinking`` parts are wrapped
in ``<think>...</think>`` before the text, ``tool_call`` parts become tool_calls.
An openai/evals sample (``input`` messages + ``ideal`` answer) gets the ideal as the assistant turn.
Canonical columns (id, source, task, label, group, split, meta) pass through unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from ..errors import json_kind
from ..schema import MESSAGE_FIELDS, MESSAGE_TYPE, RECORD_COLUMNS, RECORD_SCHEMA, ROLES, conform
from . import _fast
from ._base import (
    Options,
    RowProblem,
    dumps,
    make_message,
    normalize_role,
    others,
    passthrough_columns,
    record,
)

NAME = "openai"
USED = (*RECORD_COLUMNS, "input", "ideal")
_KNOWN_MESSAGE_KEYS = {"role", "content", "loss_weight", "function_call", *MESSAGE_FIELDS}


def matches(row: dict[str, Any]) -> bool:
    if isinstance(row.get("messages"), list):
        return True
    return isinstance(row.get("input"), list) and "ideal" in row


def is_canonical(row: dict[str, Any]) -> bool:
    """Already a canonical record: an id, messages, and no column outside the record."""
    return "id" in row and isinstance(row.get("messages"), list) and set(row) <= set(RECORD_COLUMNS)


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    key = "messages" if "messages" in row else "input"
    raw = row.get(key)
    if raw is None:
        raise RowProblem(key, "missing (openai rows need a list of messages)",
                         "give a list of {role, content} objects, or force another format with --from")
    if not isinstance(raw, list):  # L6: the key is known, its type is wrong
        fix = "give a list of {role, content} objects"
        if isinstance(raw, str):
            fix += f" (messages kept as JSON text: parse them first, e.g. jq -c '.{key} |= fromjson')"
        raise RowProblem(key, f"must be a list of messages, got a JSON {json_kind(raw)}", fix)
    if not raw:  # L10: a record with no messages has nothing to train or prompt with
        raise RowProblem(key, "no messages (an empty list)",
                         "give the conversation's messages, or drop the row (--rejects FILE skips it)")
    messages, message_extras = parse_messages(raw, key, opts)
    task = None
    extras = others(row, USED)
    if key == "input":
        ideal = row.get("ideal")
        answer = ideal[0] if isinstance(ideal, list) and ideal else ideal
        if isinstance(ideal, list) and len(ideal) > 1:
            extras["ideal"] = ideal  # several acceptable answers: all of them kept
        messages.append(make_message("assistant", answer, "ideal"))
        task = "qa"
    if message_extras:
        extras["message_fields"] = message_extras
    kept = passthrough_columns(row)
    return [record(
        messages, opts,
        id=kept.get("id"), extras=extras, task=kept.get("task") or task,
        label=kept.get("label"), group=kept.get("group"), split=kept.get("split"),
        source=kept.get("source"), meta=kept.get("meta"),
    )]


def parse_messages(
    raw: list[Any], key: str, opts: Options
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages in OpenAI shape -> canonical message dicts, plus unmapped per-message fields."""
    messages, extras = [], {}
    for i, m in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(m, dict):
            raise RowProblem(where, "must be an object with role and content",
                             "write each message as {\"role\": ..., \"content\": ...}")
        role = normalize_role(m.get("role"), f"{where}.role", opts)
        content, reasoning_calls = _content(m.get("content"), f"{where}.content")
        tool_calls = _tool_calls(m, reasoning_calls, where)
        fields: dict[str, Any] = {}
        if tool_calls is not None:
            fields["tool_calls"] = tool_calls
        for name in ("name", "tool_call_id"):
            if m.get(name) is not None:
                fields[name] = str(m[name])
        weight = m.get("weight", m.get("loss_weight"))
        if weight is not None:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise RowProblem(f"{where}.weight", f"must be a number, got {weight!r}",
                                 "use 0 (not trained) or 1 (trained)")
            fields["weight"] = float(weight)
        train = m.get("train")
        if train is not None:
            fields["train"] = bool(train)
        elif weight is not None:
            fields["train"] = weight > 0
        if role == "function_call":
            role = "assistant"
        messages.append(make_message(role, content, f"{where}.content", **fields))
        leftover = {k: v for k, v in m.items() if k not in _KNOWN_MESSAGE_KEYS and v is not None}
        if leftover:
            extras[str(i)] = leftover
    return messages, extras


def _content(content: Any, where: str) -> tuple[Any, list[Any]]:
    if not isinstance(content, list):
        return content, []
    texts, thoughts, calls = [], [], []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get("text", part.get("value")) if isinstance(part, dict) else None
        if kind == "text":
            texts.append(value or "")
        elif kind in ("reasoning", "thinking"):
            thoughts.append(value or "")
        elif kind == "tool_call":
            calls.append(value)
        else:
            raise RowProblem(f"{where}[{j}].type", f"unsupported content part {kind!r}",
                             "use text, reasoning or tool_call parts (images are not supported)")
    text = "\n".join(texts)
    if thoughts:
        text = "<think>\n" + "\n".join(thoughts) + "\n</think>\n\n" + text
    return text, calls


def _tool_calls(m: dict[str, Any], part_calls: list[Any], where: str) -> str | None:
    calls = m.get("tool_calls")
    if calls is None and m.get("function_call") is not None:
        calls = [m["function_call"]]  # the legacy single-call field
    if calls is None and part_calls:
        calls = part_calls
    if calls is None:
        return None
    if isinstance(calls, str):
        return calls
    if not isinstance(calls, list):
        raise RowProblem(f"{where}.tool_calls", "must be a list of tool calls",
                         "give tool_calls in the OpenAI shape")
    return dumps([to_openai_call(c, f"{where}.tool_calls") for c in calls])


def to_openai_call(call: Any, where: str) -> dict[str, Any]:
    """{"name", "arguments"} (as JSON text or an object) -> the OpenAI tool-call object."""
    if isinstance(call, str):
        try:
            call = json.loads(call)
        except ValueError:
            raise RowProblem(where, "tool call is not valid JSON",
                             'write it as {"name": ..., "arguments": {...}}') from None
    if not isinstance(call, dict):
        raise RowProblem(where, "tool call must be an object", 'write {"name": ..., "arguments": ...}')
    if "function" in call:
        return call  # already OpenAI-shaped
    args = call.get("arguments", {})
    return {
        "type": "function",
        "function": {"name": call.get("name"), "arguments": args if isinstance(args, str) else dumps(args)},
    }


def fast(frame: pl.DataFrame, opts: Options) -> pl.DataFrame | None:
    """Vectorized path for messages whose fields are already canonical (no tool calls, parts)."""
    dtype = frame.schema.get("messages")
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        return None
    fields = {f.name: f.dtype for f in dtype.inner.fields}
    if set(fields) - set(MESSAGE_FIELDS):
        return None
    if fields.get("role") != pl.String or fields.get("content") != pl.String or not set(
        frame.columns
    ) <= set(RECORD_COLUMNS):
        return None
    for name in ("id", "source", "task", "label", "group", "split", "meta"):
        if name in frame.columns and frame.schema[name] not in (pl.String, pl.Null):
            return None
    if any(n in fields and fields[n] not in (pl.String, pl.Null) for n in ("name", "tool_call_id", "tool_calls")):
        return None
    if "weight" in fields and not fields["weight"].is_numeric():
        return None
    if "train" in fields and fields["train"] not in (pl.Boolean, pl.Null):
        return None
    messages = conform(frame.select("messages"))["messages"]
    if messages.null_count() or (messages.list.len() == 0).any():
        return None  # explode() drops empty lists: they go the row path, which refuses them (L10)
    msgs = messages.explode()
    role, content = msgs.struct.field("role"), msgs.struct.field("content")
    # is_in(...).all() skips nulls: a missing or null role must go the row path too (M3)
    if (msgs.null_count() or content.null_count() or role.null_count()
            or not role.is_in(list(ROLES)).all()):
        return None  # aliases, unknown or missing roles, empty lists: the row path decides
    if ((role == "assistant") & (content.str.strip_chars() == "")).any():
        return None
    elem = pl.element().struct
    fixed = messages.list.eval(pl.struct(
        *(elem.field(n).alias(n) if n != "train"
          else pl.coalesce(elem.field("train"), elem.field("weight") > 0).alias("train")
          for n in MESSAGE_FIELDS)
    )).cast(pl.List(MESSAGE_TYPE))
    out = frame.with_columns(fixed.alias("messages"))
    for name, dtype_ in RECORD_SCHEMA.items():
        if name not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=dtype_).alias(name))
    ids = out["id"].cast(pl.String).fill_null(_fast.content_ids(out["messages"]))
    return out.select(
        pl.lit(ids).alias("id"),
        pl.col("messages"),
        pl.col("source").cast(pl.String).fill_null(opts.source),
        (pl.lit(opts.task, dtype=pl.String) if opts.task else pl.col("task").cast(pl.String)),
        *(pl.col(n).cast(pl.String) for n in ("label", "group", "split", "meta")),
    ).cast(RECORD_SCHEMA)
