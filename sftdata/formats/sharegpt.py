"""ShareGPT: ``conversations`` of {from, value}.

Roles human/gpt/system/tool/observation (and the aliases in _base.ROLE_ALIASES) are normalized;
a ``function_call`` turn becomes an assistant turn whose tool_calls hold the call in OpenAI shape.
``tools`` (JSON text or a list) goes to meta as a JSON value. Preference rows (``chosen`` /
``rejected``, as LLaMA-Factory's DPO demo) train on the chosen answer; rejected goes to meta.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import json_kind
from ._base import (
    Options,
    RowProblem,
    dumps,
    make_message,
    normalize_role,
    others,
    record,
    require,
    system_field,
)
from .openai import to_openai_call

NAME = "sharegpt"
USED = ("id", "conversations", "system", "chosen")


def matches(row: dict[str, Any]) -> bool:
    return isinstance(row.get("conversations"), list)


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    turns = require(row, "conversations", NAME)
    if not isinstance(turns, list):
        raise RowProblem("conversations",
                         f"must be a list of {{from, value}} turns, got a JSON {json_kind(turns)}",
                         'write [{"from": "human", "value": ...}, ...]')
    if not turns:  # L10
        raise RowProblem("conversations", "no turns (an empty list)",
                         "give the conversation's turns, or drop the row (--rejects FILE skips it)")
    messages, blank_system = system_field(row)
    for i, turn in enumerate(turns):
        messages.append(_turn(turn, f"conversations[{i}]", opts))
    if "chosen" in row:
        chosen = row["chosen"]
        if isinstance(chosen, str):
            chosen = {"from": "gpt", "value": chosen}
        messages.append(_turn(chosen, "chosen", opts))
    extras = {**others(row, USED), **blank_system}
    if isinstance(extras.get("tools"), str):
        extras["tools"] = _json_or_text(extras["tools"])
    return [record(messages, opts, id=row.get("id"), extras=extras)]


def _turn(turn: Any, where: str, opts: Options) -> dict[str, Any]:
    if not isinstance(turn, dict):
        raise RowProblem(where, "must be an object with from and value",
                         'write {"from": "human", "value": ...}')
    role_key = "from" if "from" in turn else "role"
    value_key = "value" if "value" in turn else "content"
    role = normalize_role(turn.get(role_key), f"{where}.{role_key}", opts)
    value = turn.get(value_key)
    if role == "function_call":
        call = to_openai_call(value, f"{where}.{value_key}")
        return make_message("assistant", "", f"{where}.{value_key}", tool_calls=dumps([call]))
    return make_message(role, value, f"{where}.{value_key}")


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
