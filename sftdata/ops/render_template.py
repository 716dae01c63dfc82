"""Apply a chat template to records: adds `text`, `spans` and `template` (docs/pipeline.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from ..errors import DataError
from ..schema import ROLES
from ..templates import Template, TemplateError, load_template, renderer_for

SPAN_FIELDS = {
    "start": pl.Int64(),
    "end": pl.Int64(),
    "turn": pl.Int32(),
    "train": pl.Boolean(),
    "weight": pl.Float64(),
    "eot_start": pl.Int64(),
}
SPANS_TYPE = pl.List(pl.Struct(SPAN_FIELDS))
# Columns a later stage computed from an earlier rendering; stale once the text changes.
DOWNSTREAM_COLUMNS = ("input_ids", "labels", "n_tokens", "n_supervised", "tokenizer")


def spans_series(rows: list[list[dict[str, Any]]]) -> pl.Series:
    """The `spans` column, built as flat columns plus offsets: building list<struct> from
    Python dicts row by row was the slowest part of rendering."""
    import numpy as np
    import pyarrow as pa

    flat = [span for row in rows for span in row]
    fields = pl.DataFrame(
        {name: [span[name] for span in flat] for name in SPAN_FIELDS}, schema=SPAN_FIELDS
    )
    structs = fields.to_struct("spans").to_arrow()
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in rows], out=offsets[1:])
    offsets_array = pa.Array.from_buffers(pa.int64(), offsets.size, [None, pa.py_buffer(offsets)])
    column = pa.LargeListArray.from_arrays(offsets_array, structs)
    return pl.Series("spans", column).cast(SPANS_TYPE)


class _BadRole(ValueError):
    """(field, message): a message whose role no template knows (L4)."""


def _check_roles(messages: list[dict[str, Any]]) -> None:
    """A null or unknown role is the record's fault, not the template's: a template would ask
    for a --var (null) or render the turn without a span (unknown) (L4)."""
    for j, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            what = "role is missing (null)" if role is None else f"unknown role {role!r}"
            raise _BadRole(f"messages[{j}].role", what)


@dataclass
class RenderResult:
    records: pl.DataFrame  # input rows that rendered, with text/spans/template
    rejects: pl.DataFrame  # input rows the template refused, with a `reason`
    template: Template
    dropped_columns: list[str]


def render_template(
    df: pl.DataFrame,
    template: str | Template = "chatml",
    *,
    generation_prompt: bool = False,
    variables: dict[str, str] | None = None,
    keep_going: bool = False,
    source: str | None = None,
) -> RenderResult:
    """Render every record's `messages` with ``template``.

    A row the template refuses (e.g. a system turn a template does not support) raises a
    DataError naming the row, or with ``keep_going`` goes to ``rejects`` with its reason.
    """
    tmpl = template if isinstance(template, Template) else load_template(template)
    if variables:
        tmpl = tmpl.with_variables(variables)
    tasks = df["task"].to_list() if "task" in df.columns else [None] * df.height
    texts: list[str] = []
    spans: list[list[dict[str, Any]]] = []
    kept: list[int] = []
    failed: list[int] = []
    reasons: list[str] = []
    render = renderer_for(tmpl)
    for i, (messages, task) in enumerate(zip(df["messages"].to_list(), tasks, strict=True)):
        try:
            _check_roles(messages or [])
            out = render(messages or [], generation_prompt=generation_prompt, task=task)
        except _BadRole as exc:
            if not keep_going:
                raise DataError(
                    exc.args[1], file=source, row=i + 1, field=exc.args[0],
                    fix="roles are system, user, assistant or tool; convert refuses other roles "
                    "(`sftdata convert FILE --rejects REJECTS.jsonl -o FIXED.jsonl` writes a "
                    "clean copy), or pass --rejects FILE to set such rows aside",
                ) from None
            failed.append(i)
            reasons.append(f"field '{exc.args[0]}': {exc.args[1]}")
            continue
        except TemplateError as exc:
            if not keep_going:
                raise DataError(
                    str(exc), file=source, row=i + 1, field="messages",
                    fix="pick a template that accepts this conversation, "
                    "or pass --rejects FILE to set such rows aside",
                ) from None
            failed.append(i)
            reasons.append(str(exc))
            continue
        kept.append(i)
        texts.append(out.text)
        spans.append(out.spans)
    dropped = [c for c in DOWNSTREAM_COLUMNS if c in df.columns]
    base = df.drop(dropped)
    records = base[kept].with_columns(
        pl.Series("text", texts, dtype=pl.String),
        spans_series(spans),
        pl.lit(tmpl.to_json(), dtype=pl.String).alias("template"),
    )
    rejects = base[failed].with_columns(pl.Series("reason", reasons, dtype=pl.String))
    return RenderResult(records, rejects, tmpl, dropped)
