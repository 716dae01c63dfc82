"""A JSONL byte chunk as one typed frame, read by Arrow's JSON reader, or None.

The frame feeds the adapters' vectorized fast paths, which must give exactly what the row path
(Python's json) gives. So the reader has to be strict where Polars is lenient:

- a value whose type changes between rows (``"input": "x"`` then ``"input": 7``) must not be
  coerced: Polars reads the 7 as the string "7", so the fast path would accept a row the row
  path rejects ("must be a string"). Arrow's reader refuses the chunk instead.
- a key first seen late must not be dropped: Arrow infers from every row (Polars' default looks
  at 100). The next chunk is read with this chunk's schema and ``unexpected_field_behavior=
  "error"``, which costs less than inferring again and falls back to inference on a new key.
- strings that look like dates stay strings (Arrow would make them timestamps and lose the
  original spelling): such fields are re-read with an explicit string type.
- invalid UTF-8 inside a string is not checked by the parser: the table is validated.
- one object per line: Arrow accepts an object spread over lines, the row path does not, so the
  row count must equal the number of non-blank lines; and every line must start with `{` (a
  `null` line would be a row of nulls, and crashes pyarrow when it comes first).

Whenever the chunk is anything but clean, None: the caller's row path then reports the exact
line and reason.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

BLOCK_BYTES = 4 << 20  # Arrow parses blocks in parallel; a longer line is retried as one block


def read_jsonl_frame(
    chunk: bytes | bytearray, hint: Any = None, newlines: int | None = None
) -> tuple[pl.DataFrame | None, Any]:
    """(frame or None, the Arrow schema to pass as ``hint`` with the next chunk).

    ``newlines`` is ``chunk.count(b"\\n")`` when the caller already knows it.
    """
    import pyarrow.json as pj

    from .jsondepth import READER_MAX_DEPTH, first_too_deep

    if not _objects_only(chunk) or first_too_deep(chunk, READER_MAX_DEPTH) is not None:
        return None, None  # deep nesting crashes Arrow (M17): the row path measures each line
    table = None
    if hint is not None:
        table = _read(chunk, pj.ParseOptions(explicit_schema=hint, unexpected_field_behavior="error"))
    if table is None:
        table = _read(chunk, pj.ParseOptions())
        if table is None or _too_deep(table.schema):
            return None, None
        if _has_timestamp(table.schema):
            fixed = _timestamps_as_strings(table.schema)
            table = _read(chunk, pj.ParseOptions(explicit_schema=fixed))
            if table is None:
                return None, None
    if _too_deep(table.schema):
        return None, None
    if table.num_rows != _count_rows(chunk, table.num_rows, newlines) or not _valid(table):
        return None, None
    return pl.from_arrow(table), table.schema


def _objects_only(chunk: bytes | bytearray) -> bool:
    """Every non-blank line starts with `{`. A line that is `null`, `[1, 2]` or `42` must reach
    the row path, which rejects it with its line number (M2); Arrow would read a `null` line as a
    row of nulls, and a chunk that starts with one crashes pyarrow 26 (SIGSEGV). One regex scan
    (about 12 ms for 32 MB)."""
    return _BAD_FIRST_LINE.match(chunk) is None and _BAD_LATER_LINE.search(chunk) is None


_BAD_FIRST_LINE = re.compile(rb"[ \t\r]*[^{\s]")
_BAD_LATER_LINE = re.compile(rb"\n[ \t\r]*[^{\s]")


def _read(chunk: bytes | bytearray, parse: Any) -> Any:
    import pyarrow as pa
    import pyarrow.json as pj

    for block in (BLOCK_BYTES, len(chunk) + 1):
        try:
            return pj.read_json(pa.BufferReader(pa.py_buffer(chunk)),  # no copy of the chunk
                                read_options=pj.ReadOptions(block_size=block), parse_options=parse)
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or block > len(chunk):
                return None
        except (UnicodeDecodeError, pa.ArrowException):
            return None
    return None


def _valid(table: Any) -> bool:
    import pyarrow as pa

    try:
        table.validate(full=True)  # full: checks that every string is valid UTF-8
    except pa.ArrowInvalid:
        return False
    return True


def _count_rows(chunk: bytes | bytearray, expected: int, newlines: int | None) -> int:
    """Non-blank lines; the cheap count (newlines) first, the exact one only when it differs."""
    if newlines is None:
        newlines = chunk.count(b"\n")
    cheap = newlines + (0 if chunk.endswith(b"\n") else 1)
    if cheap == expected:
        return cheap
    return sum(1 for line in chunk.split(b"\n") if line.strip())


def _too_deep(schema: Any) -> bool:
    """Nesting deeper than a record table holds: pl.from_arrow crashes near 1,000 levels (M17),
    and the row path keeps such values as JSON text in meta."""
    from .jsondepth import TABLE_MAX_DEPTH

    stack = [(field.type, 1) for field in schema]
    while stack:
        dtype, level = stack.pop()
        if level > TABLE_MAX_DEPTH:
            return True
        stack.extend((dtype.field(i).type, level + 1) for i in range(dtype.num_fields))
    return False


def _has_timestamp(schema: Any) -> bool:
    return any(_type_has_timestamp(field.type) for field in schema)


def _type_has_timestamp(dtype: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_timestamp(dtype):
        return True
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return _type_has_timestamp(dtype.value_type)
    if pa.types.is_struct(dtype):
        return any(_type_has_timestamp(child.type) for child in dtype)
    return False


def _timestamps_as_strings(schema: Any) -> Any:
    import pyarrow as pa

    def fix(dtype: Any) -> Any:
        if pa.types.is_timestamp(dtype):
            return pa.string()
        if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
            return pa.list_(fix(dtype.value_type))
        if pa.types.is_struct(dtype):
            return pa.struct([pa.field(c.name, fix(c.type)) for c in dtype])
        return dtype

    return pa.schema([pa.field(f.name, fix(f.type)) for f in schema])
