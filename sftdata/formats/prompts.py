"""Bare prompts: a JSON string per line (OASST's prompt lottery) or ``{"prompt": ...}`` alone.

Each becomes a record with one user message and no answer yet: input for
``sfttrain generate``, not training data (validate's records suite rejects it until an
assistant turn is added).
"""

from __future__ import annotations

from typing import Any

from ..errors import json_kind
from ._base import Options, RowProblem, make_message, record

NAME = "prompts"


def matches(row: Any) -> bool:
    return isinstance(row, str)


def to_records(row: Any, opts: Options) -> list[dict[str, Any]]:
    if not isinstance(row, str):
        raise RowProblem(None, f"expected a JSON string, got {json_kind(row)}",
                         "write one JSON string per line, or force the format with --from")
    return [record([make_message("user", row, "prompt")], opts)]
