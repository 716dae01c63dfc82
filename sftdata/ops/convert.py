"""Convert source rows of any known format into canonical records.

Pure: the caller reads the input (sftdata.io.iter_input_batches) and writes the output. A
:class:`Converter` is fed batches in order and keeps the counts; formats whose rows stand alone
stream, a flat OASST message table is gathered and converted at :meth:`Converter.finish`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ..errors import DataError, UsageProblem, json_kind
from ..formats import (
    FORMATS,
    Options,
    RowProblem,
    classification,
    conll,
    detect,
    explain_unknown,
    oasst,
)
from ..io import InputBatch, RawRow
from ..schema import RECORD_SCHEMA

FORMAT_NAMES = tuple(FORMATS)
REJECT_SCHEMA = {
    "file": pl.String(),
    "line": pl.Int64(),
    "row": pl.Int64(),
    "reason": pl.String(),
    "original": pl.String(),
}


@dataclass
class BatchResult:
    records: pl.DataFrame
    rejects: pl.DataFrame


@dataclass
class ConvertResult:
    """What :func:`convert` returns: the records, the rejected rows and the counts."""

    records: pl.DataFrame
    rejects: pl.DataFrame
    fmt: str | None
    rows_in: int
    rows_rejected: int

    def summary(self) -> str:
        return summary(self.fmt, self.rows_in, self.rows_rejected, self.records.height)


def summary(fmt: str | None, rows_in: int, rejected: int, records_out: int) -> str:
    converted = rows_in - rejected
    head = f"{rows_in} rows in = {converted if records_out != converted else records_out}"
    if records_out == converted:
        return f"{head} records out + {rejected} rejected ({fmt or 'no rows'})"
    return (f"{head} converted + {rejected} rejected; the converted rows gave "
            f"{records_out} records ({fmt})")


@dataclass
class Converter:
    """Turns input batches into record frames; one per input file."""

    file: str
    fmt: str | None = None
    opts: Options = field(default_factory=Options)
    mapping: dict[str, str] = field(default_factory=dict)  # target key -> source key
    keep_going: bool = False  # False: the first bad row raises; True: it becomes a reject
    rows_in: int = 0
    rows_rejected: int = 0
    records_out: int = 0
    _flat: list[RawRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fmt is not None and self.fmt not in FORMATS:
            raise UsageProblem(f"unknown format {self.fmt!r}; choose one of {', '.join(FORMATS)}")
        self._rename = {src: dst for dst, src in self.mapping.items()}
        if self.opts.template is not None and (
                problem := template_problem(self.opts.template, self.fmt)):
            raise UsageProblem(problem)

    def feed(self, batch: InputBatch) -> BatchResult:
        if self.fmt is None and batch.first is not None:
            first = batch.first
            if (first.error is not None or _not_a_row(first.value)) and self.keep_going:
                # an unreadable first row is rejected like any other; detect from the next
                first = next((r for r in batch.rows()
                              if r.error is None and not _not_a_row(r.value)), None)
            if first is not None:
                self.fmt = self._detect(first)
        adapter = FORMATS[self.fmt] if self.fmt else None
        if adapter is not None and batch.frame is not None and hasattr(adapter, "fast"):
            frame = self._rename_frame(batch.frame)
            fast = adapter.fast(frame, self.opts) if frame is not None else None
            if fast is not None and fast["meta"].str.contains("NaN|Infinity").any():
                fast = None  # maybe a non-finite number: the row path writes it as valid JSON (L12)
            if fast is not None:
                self.rows_in += batch.frame.height
                self.records_out += fast.height
                return BatchResult(fast, _rejects_frame([]))
        records: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        for raw in batch.rows():
            self.rows_in += 1
            if raw.error is not None:
                self._problem(raw, raw.error, rejects)
                continue
            value = raw.value
            if _not_a_row(value) or (not isinstance(value, dict) and self.fmt != "prompts"):
                self._problem(raw, self._error(raw, _not_an_object(value)), rejects)  # M2
                continue
            if shadowed := self._shadowed(value):
                problem = RowProblem(shadowed, self._shadow_message(shadowed),
                                     self._shadow_fix(shadowed) + ", or pass --rejects FILE")
                self._problem(raw, self._error(raw, problem), rejects)
                continue
            value = self._rename_row(value)
            if adapter is None:  # every row so far was unreadable; this one is the first good
                self.fmt = self._detect(raw)
                adapter = FORMATS[self.fmt]
            if self.fmt == "oasst" and (oasst.is_flat(value) or self._flat):
                self._flat.append(RawRow(value, raw.line, raw.row, raw.raw))
                continue
            try:
                records += adapter.to_records(value, self.opts)
            except RowProblem as p:
                self._problem(raw, self._error(raw, p), rejects)
            except RecursionError:  # a value nested too deeply for what reads it (M17)
                problem = RowProblem(None, "nested too deeply to convert",
                                     "flatten the value, or pass --rejects FILE to skip such rows")
                self._problem(raw, self._error(raw, problem), rejects)
        self.records_out += len(records)
        return BatchResult(_records_frame(records), _rejects_frame(rejects))

    def finish(self) -> BatchResult:
        """Rows that needed the whole file (a flat OASST table) are converted here."""
        if not self._flat:
            return BatchResult(_records_frame([]), _rejects_frame([]))
        rejects: list[dict[str, Any]] = []
        good = []
        rejected: dict[str, str] = {}  # message id -> where, for the replies to a rejected row
        for raw in self._flat:
            try:
                oasst.check_flat_row(raw.value)
                oasst.normalize_role(raw.value.get("role"), "role", self.opts)
                if not isinstance(raw.value.get("text"), str):
                    raise RowProblem("text", "missing or not a string", "give every message a text")
            except RowProblem as p:
                self._problem(raw, self._error(raw, p), rejects)
                mid = oasst.message_id(raw.value)
                if mid is not None:
                    rejected.setdefault(mid, _place(raw))
                continue
            good.append(raw)
        # duplicate ids, parent loops, missing parents and every row below them (L11), in order
        problems = oasst.table_problems([r.value for r in good], [_place(r) for r in good],
                                        rejected)
        for i in sorted(problems):
            self._problem(good[i], self._error(good[i], problems[i]), rejects)
        good = [r for i, r in enumerate(good) if i not in problems]
        self._flat = []
        try:
            records = oasst.flat_to_records([r.value for r in good], self.opts)
        except RowProblem as p:  # already checked row by row; kept for safety
            raise DataError(p.message, file=self.file, field=p.field, fix=p.fix) from None
        self.records_out += len(records)
        return BatchResult(_records_frame(records), _rejects_frame(rejects))

    def summary(self) -> str:
        return summary(self.fmt, self.rows_in, self.rows_rejected, self.records_out)

    # ---------------------------------------------------------------- helpers

    def _detect(self, first: RawRow) -> str:
        if first.error is not None:
            raise first.error
        if _not_a_row(first.value):
            raise self._error(first, _not_an_object(first.value))
        value = self._rename_row(first.value)
        missing = [src for src in self.mapping.values()
                   if not isinstance(first.value, dict) or src not in first.value]
        if missing:
            raise UsageProblem(f"--map: column {missing[0]!r} is not in {self.file}")
        if shadowed := self._shadowed(first.value):
            raise UsageProblem(f"{self._shadow_message(shadowed, self.file)}; "
                               f"{self._shadow_fix(shadowed)}")
        fmt = detect(value)
        if fmt is None:
            raise DataError(
                f"cannot tell the source format: {explain_unknown(value)}",
                file=self.file, line=first.line, row=first.row if first.line is None else None,
                fix=f"force a format with --from ({', '.join(FORMATS)}) or rename columns "
                    "with --map TARGET=COLUMN",
            )
        return fmt

    def _rename_row(self, value: Any) -> Any:
        if not self._rename or not isinstance(value, dict):
            return value
        return {self._rename.get(k, k): v for k, v in value.items()}

    def _shadowed(self, value: Any) -> str | None:
        """A column that a --map target would replace (M4: its values would go nowhere)."""
        if not self._rename or not isinstance(value, dict):
            return None
        return next((dst for src, dst in self._rename.items()
                     if src in value and value.get(dst) is not None and dst not in self._rename),
                    None)

    def _shadow_message(self, column: str, where: str = "the row") -> str:
        return (f"--map {column}={self.mapping[column]}: {where} has a column {column!r} too, "
                "and its values would be lost")

    def _shadow_fix(self, column: str) -> str:
        return (f"map it to another name as well (--map {column}={self.mapping[column]},"
                f"original_{column}={column}; unknown names go to meta)")

    def _rename_frame(self, frame: pl.DataFrame) -> pl.DataFrame | None:
        if not self._rename:
            return frame
        renames = {k: v for k, v in self._rename.items() if k in frame.columns}
        if any(v in frame.columns and v not in renames for v in renames.values()):
            return None  # a mapped name collides with an existing column: the row path decides
        return frame.rename(renames)

    def _error(self, raw: RawRow, problem: RowProblem) -> DataError:
        return DataError(problem.message, file=self.file, line=raw.line,
                         row=raw.row if raw.line is None else None,
                         field=problem.field, fix=problem.fix)

    def _problem(self, raw: RawRow, error: DataError, rejects: list[dict[str, Any]]) -> None:
        if not self.keep_going:
            raise error
        self.rows_rejected += 1
        reason = DataError(error.message, field=error.field)
        rejects.append({"file": self.file, "line": raw.line, "row": raw.row,
                        "reason": str(reason), "original": raw.original_text()})


def template_problem(template: str, fmt: str | None) -> str | None:
    """Why a prompt template would give every row the same prompt (L14), or None. A template
    with no ``{column}`` placeholder (the typo '{text' is one) is refused before any row is read;
    CoNLL templates must have ``{text}`` (checked again once a CoNLL input is detected)."""
    typos = classification.unclosed(template)
    hint = f" ({typos[0]!r} has no closing brace)" if typos else ""
    if fmt == "conll" and "{text}" not in template:
        return conll.TEXT_ONLY.format(template=template) + hint + "."
    if not classification.placeholders(template):
        return (f"--template {template!r} has no {{column}} placeholder{hint}, so every row would "
                "get the same prompt; name a source column in braces, e.g. 'Category of: {text}'.")
    return None


def _place(raw: RawRow) -> str:
    return f"line {raw.line}" if raw.line is not None else f"row {raw.row}"


def _not_a_row(value: Any) -> bool:
    """null, an array, a number or a boolean: no format reads it (a string is a bare prompt)."""
    return not isinstance(value, (dict, str))


def _not_an_object(value: Any) -> RowProblem:
    return RowProblem(None, f"expected a JSON object, got {json_kind(value)}",
                      "make each row one JSON object, or pass --rejects FILE to skip bad rows")


def _records_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(records, schema=RECORD_SCHEMA)


def _rejects_frame(rejects: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rejects, schema=REJECT_SCHEMA)


def convert(
    data: pl.DataFrame | list[Any],
    fmt: str | None = None,
    *,
    source: str = "memory",
    mapping: dict[str, str] | None = None,
    roles: dict[str, str] | None = None,
    template: str | None = None,
    task: str | None = None,
    oasst_best: bool = False,
    keep_going: bool = False,
) -> ConvertResult:
    """Records from rows in memory (a frame, or a list of dicts / strings).

    ``fmt=None`` detects the format from the first row. With ``keep_going`` bad rows are
    returned in ``rejects`` instead of raising :class:`DataError`.
    """
    opts = Options(source=source, roles=roles or {}, template=template, oasst_best=oasst_best,
                   task=task)
    conv = Converter(source, fmt, opts, mapping or {}, keep_going)
    if isinstance(data, pl.DataFrame):
        rows = [RawRow(r, row=i + 1) for i, r in enumerate(data.iter_rows(named=True))]
        batch = InputBatch(data, rows[0] if rows else None, lambda: rows)
    else:
        rows = [RawRow(r, row=i + 1) for i, r in enumerate(data)]
        batch = InputBatch(None, rows[0] if rows else None, lambda: rows)
    parts = [conv.feed(batch), conv.finish()] if rows else [conv.finish()]
    return ConvertResult(
        records=pl.concat([p.records for p in parts]),
        rejects=pl.concat([p.rejects for p in parts]),
        fmt=conv.fmt,
        rows_in=conv.rows_in,
        rows_rejected=conv.rows_rejected,
    )
