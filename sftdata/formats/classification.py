"""Classification tables: a ``label`` column plus text columns (CSV, Parquet or JSONL).

The user turn comes from a prompt template whose ``{column}`` placeholders name source columns
(``--template``). Without one: the ``text`` column under a default instruction, or, when there
is no ``text`` column, every other non-label column as ``Name: value`` lines. The assistant
answers with the label, which is also kept in ``label``; task is "classification".
"""

from __future__ import annotations

import re
from typing import Any

from ._base import Options, RowProblem, make_message, others, record, require

NAME = "classification"
DEFAULT_INSTRUCTION = "Classify the following text."
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_ -]*)\}")


def matches(row: dict[str, Any]) -> bool:
    if "label" not in row:
        return False
    return isinstance(row.get("text"), str) or any(
        isinstance(v, str) for k, v in row.items() if not k.startswith("label")
    )


_UNCLOSED = re.compile(r"\{[A-Za-z_][A-Za-z0-9_ -]*(?![A-Za-z0-9_ }-])")


def placeholders(template: str) -> list[str]:
    return _PLACEHOLDER.findall(template)


def unclosed(template: str) -> list[str]:
    """``{name`` fragments without their closing brace (a typo such as '{text'): kept as text."""
    return _UNCLOSED.findall(template)


def render(template: str, row: dict[str, Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in row:
            raise RowProblem(name, "used by the prompt template but missing from the row",
                             "fix the {placeholder} in --template or add the column")
        value = row[name]
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(fill, template)


def default_template(row: dict[str, Any]) -> str:
    if "text" in row:
        return DEFAULT_INSTRUCTION + "\n\n{text}"
    names = [k for k in row if not k.startswith("label") and k != "id"]
    lines = "\n".join(f"{k.replace('_', ' ').capitalize()}: {{{k}}}" for k in names)
    return f"{DEFAULT_INSTRUCTION}\n\n{lines}"


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    label = require(row, "label", NAME)
    template = opts.template or default_template(row)
    prompt = render(template, row)
    used = ("id", "label", *placeholders(template))
    messages = [
        make_message("user", prompt, "text"),
        make_message("assistant", str(label), "label"),
    ]
    return [record(messages, opts, id=row.get("id"), extras=others(row, used),
                   task="classification", label=str(label))]
