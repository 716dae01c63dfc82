"""Source-format adapters: one module per format, each turning source rows into records.

Every adapter has ``NAME``, ``matches(row)`` (does a row look like this format?) and
``to_records(row, opts)``; some add ``fast(frame, opts)``, a vectorized path for whole batches.
Detection looks at a file's first row and tries the formats in ``DETECTION_ORDER``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..errors import json_kind
from . import (
    alpaca,
    benchmarks,
    classification,
    conll,
    oasst,
    openai,
    prompt_completion,
    prompts,
    sharegpt,
    text,
)
from ._base import Options, RowProblem

FORMATS: dict[str, ModuleType] = {
    "canonical": openai,  # canonical records are OpenAI-shaped messages plus record columns
    "openai": openai,
    "alpaca": alpaca,
    "sharegpt": sharegpt,
    "oasst": oasst,
    "prompt-completion": prompt_completion,
    "classification": classification,
    "conll": conll,
    "text": text,
    "prompts": prompts,
    "benchmark": benchmarks,
}
# More specific shapes first: a classification row also has `text`, an alpaca row may too.
DETECTION_ORDER = (
    "openai", "sharegpt", "alpaca", "oasst", "prompt-completion", "conll", "classification",
    "text", "prompts", "benchmark",
)

__all__ = ["FORMATS", "DETECTION_ORDER", "Options", "RowProblem", "detect", "explain_unknown"]


def detect(row: Any) -> str | None:
    """The format name of one source row, or None when no adapter recognizes it."""
    if not isinstance(row, dict):
        return "prompts" if prompts.matches(row) else None
    if openai.is_canonical(row):
        return "canonical"
    for name in DETECTION_ORDER:
        if FORMATS[name].matches(row):
            return name
    # A key only one format uses, holding the wrong type (a string of messages): that format,
    # whose adapter names the field and its type, instead of "no known format" (L6).
    for key, name in (("messages", "openai"), ("conversations", "sharegpt")):
        if row.get(key) is not None:
            return name
    return None


def explain_unknown(row: Any) -> str:
    """Why a row's shape was not recognized, naming pre-tokenized data and registries."""
    if not isinstance(row, dict):
        return f"a JSON {json_kind(row)} is not a record"
    keys = ", ".join(list(row)[:8]) or "none"
    if "input_ids" in row:
        return f"already tokenized data (keys: {keys}), not conversations"
    return f"no known format has these keys: {keys}"
