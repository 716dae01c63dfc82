"""Alpaca: instruction / input / output, optional system and history; self-instruct seed tasks.

The user turn is the instruction, followed by a blank line and the input when there is one.
``history`` is a list of earlier [user, assistant] pairs. A self-instruct seed task (an
``instances`` list of input/output pairs) gives one record per instance.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from . import _fast
from ._base import (
    Options,
    RowProblem,
    make_message,
    others,
    record,
    require,
    require_str,
    system_field,
)

NAME = "alpaca"
USED = ("id", "instruction", "input", "output", "system", "history")


def matches(row: dict[str, Any]) -> bool:
    return "instruction" in row and ("output" in row or "instances" in row)


def user_text(instruction: str, input_text: Any) -> str:
    if isinstance(input_text, str) and input_text.strip():
        return f"{instruction}\n\n{input_text}"
    return instruction


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    instruction = require_str(row, "instruction", NAME)
    if "output" not in row and "instances" in row:
        return _seed_task(row, instruction, opts)
    output = require(row, "output", NAME)
    input_text = row.get("input")
    if input_text is not None and not isinstance(input_text, str):
        raise RowProblem("input", f"must be a string, got {type(input_text).__name__}",
                         "make it a string")
    messages = _prefix(row)
    messages.append(make_message("user", user_text(instruction, input_text), "instruction"))
    messages.append(make_message("assistant", output, "output"))
    extras = {**others(row, USED), **system_field(row)[1]}
    return [record(messages, opts, id=row.get("id"), extras=extras)]


def _prefix(row: dict[str, Any]) -> list[dict[str, Any]]:
    messages = system_field(row)[0]
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowProblem("history", "must be a list of [user, assistant] pairs",
                         "write history as [[question, answer], ...]")
    for i, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RowProblem(f"history[{i}]", "must be a [user, assistant] pair",
                             "write history as [[question, answer], ...]")
        messages.append(make_message("user", pair[0], f"history[{i}][0]"))
        messages.append(make_message("assistant", pair[1], f"history[{i}][1]"))
    return messages


def _seed_task(row: dict[str, Any], instruction: str, opts: Options) -> list[dict[str, Any]]:
    instances = row["instances"]
    if not isinstance(instances, list) or not instances:
        raise RowProblem("instances", "must be a non-empty list of {input, output}",
                         "give at least one instance")
    is_classification = bool(row.get("is_classification"))
    extras = {**others(row, (*USED, "instances")), **system_field(row)[1]}
    out = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise RowProblem(f"instances[{i}]", "must be an object with input and output",
                             "write each instance as {\"input\": ..., \"output\": ...}")
        output = inst.get("output")
        messages = _prefix(row)
        messages.append(make_message("user", user_text(instruction, inst.get("input")),
                                     f"instances[{i}].input"))
        messages.append(make_message("assistant", output, f"instances[{i}].output"))
        rid = row.get("id")
        if rid is not None and len(instances) > 1:
            rid = f"{rid}-{i}"
        out.append(record(
            messages, opts, id=rid, extras=extras,
            task="classification" if is_classification else None,
            label=output if is_classification else None,
            group=row.get("id") if len(instances) > 1 else None,
        ))
    return out


def fast(frame: pl.DataFrame, opts: Options) -> pl.DataFrame | None:
    """Vectorized twin of to_records for the plain shape (no system, history or instances)."""
    cols = set(frame.columns)
    if not {"instruction", "output"} <= cols or cols & {"system", "history", "instances"}:
        return None
    if not _fast.plain_strings(frame, ["instruction", "output"], nullable=["input", "id"]):
        return None
    if not _fast.extras_ok(frame, USED):
        return None
    if (frame["output"].str.strip_chars() == "").any():
        return None  # an empty answer: the row path reports it with its line
    instruction = pl.col("instruction")
    if "input" in cols:
        has_input = pl.col("input").fill_null("").str.strip_chars() != ""
        user = pl.when(has_input).then(
            pl.concat_str([instruction, pl.lit("\n\n"), pl.col("input")])
        ).otherwise(instruction)
    else:
        user = instruction
    frame = frame.with_columns(user.alias("\0user"))  # computed once, used twice
    turns = [("user", pl.col("\0user")), ("assistant", pl.col("output"))]
    messages = _fast.fixed_messages(frame, turns)
    ids = _fast.fixed_content_ids(frame, turns)
    return _fast.finish(frame, messages, ids, opts, (*USED, "\0user"))
