"""Reading and writing record tables: JSONL, JSON arrays, Parquet, Arrow IPC and CSV.

``-`` (or no path) means stdin/stdout. Input formats are sniffed from magic bytes, then the
extension, then the first non-blank character. Writes follow the one output-path policy of
sftdata/outputs.py (regular files atomically, pipes and devices in place). Large JSONL inputs are
read in byte batches so memory stays bounded.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import polars as pl

from . import outputs
from .errors import DataError, UsageProblem, json_kind, json_problem

STDIO = "-"
OUTPUT_FORMATS = ("jsonl", "parquet", "arrow")
INPUT_FORMATS = ("jsonl", "json", "parquet", "arrow", "csv", "tsv", "conll")
BATCH_BYTES = 32 * 1024 * 1024  # JSONL batch size: bounded memory, still big enough to be fast

_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".ipc": "arrow",
    ".feather": "arrow",
    ".csv": "csv",
    ".tsv": "tsv",
    ".conll": "conll",
}


def display_name(path: str | os.PathLike | None) -> str:
    return "<stdin>" if path in (None, STDIO) else str(path)


# --------------------------------------------------------------------------- input


@dataclass
class Source:
    """An opened input: its display name, format, and a way to get its bytes.

    stdin is streamed: only its first bytes are read for sniffing (kept in ``data``), the rest
    is read when the source is opened, so a large JSONL pipe never sits in memory whole.
    """

    name: str
    fmt: str
    path: Path | None  # None for stdin
    data: bytes | None = None  # all of stdin, or only its sniffed head while ``stream`` is set
    stream: IO[bytes] | None = None  # the rest of stdin, not read yet

    def open(self) -> IO[bytes]:
        if self.path is not None:
            return open(self.path, "rb")
        if self.stream is not None:
            head, stream, self.stream = self.data or b"", self.stream, None
            self.data = None  # a pipe can be read once; a second open() sees nothing
            return io.BufferedReader(_Prefixed(head, stream), buffer_size=1 << 20)
        return io.BytesIO(self.data or b"")

    def read_bytes(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        if self.stream is not None:
            self.data = (self.data or b"") + self.stream.read()
            self.stream = None
        return self.data or b""


class _Prefixed(io.RawIOBase):
    """Bytes already read (the sniffed head) followed by the rest of a stream."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        chunk = self._stream.read(len(buffer))
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        buffer[: len(chunk)] = chunk
        return len(chunk)


SNIFF_BYTES = 4096


def open_source(path: str | os.PathLike | None, fmt: str | None = None) -> Source:
    """Open ``path`` (or stdin) and decide its format from its first bytes."""
    name = display_name(path)
    if path in (None, STDIO):
        if sys.stdin is None:
            return Source(name, fmt or "jsonl", None, b"")
        return _stream_source(name, _stdin_bytes(), fmt, None)
    from .formats.text import corpus_source  # a directory or glob of .txt/.md: a raw corpus

    if (corpus := corpus_source(path)) is not None:
        return corpus
    p = Path(path)
    if not p.exists():
        raise UsageProblem(f"{name}: no such file")
    if p.is_dir():
        raise UsageProblem(f"{name}: is a directory, expected a file")
    if not p.is_file():
        # a pipe given by name (`<(cmd)`, a FIFO): it can be read once only, like stdin
        return _stream_source(name, open(p, "rb"), fmt, p)
    with open(p, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if gzipped:  # HumanEval.jsonl.gz and friends: decompressed as a stream, sniffed without .gz
        import gzip

        inner = p.with_suffix("") if p.suffix.lower() == ".gz" else p
        return _stream_source(name, gzip.open(p, "rb"), fmt, inner)
    with open(p, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    return _text_checked(Source(name, fmt or sniff_format(p, head), p), head)


def _stream_source(name: str, stream: IO[bytes], fmt: str | None, path: Path | None) -> Source:
    head = b""
    while len(head) < SNIFF_BYTES:  # a pipe may hand over less than asked for
        more = stream.read(SNIFF_BYTES - len(head))
        if not more:
            break
        head += more.encode("utf-8") if isinstance(more, str) else more
    return _text_checked(Source(name, fmt or sniff_format(path, head), None, head, stream), head)


# Magic numbers of files that are not data sftdata reads (L5): named in the error, so a PNG
# given as .jsonl is not told to re-encode itself as UTF-8, nor read from stdin as a CSV.
_NOT_DATA = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an .xlsx/.docx file)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"\x7fELF", "an executable"),
)
_COMPRESSED = (  # magic, name, the command that decompresses it to stdout
    (b"\x1f\x8b", "gzip", "gunzip -c"),
    (b"\xfd7zXZ\x00", "xz", "xz -dc"),
    (b"\x28\xb5\x2f\xfd", "zstd", "zstd -dc"),
    (b"BZh", "bzip2", "bunzip2 -c"),
)
READABLE = "sftdata reads JSONL, JSON, CSV/TSV, Parquet, Arrow IPC and CoNLL files"


def _text_checked(source: Source, head: bytes) -> Source:
    """Refuse binary input to a text reader, saying what it is (L5). Parquet and Arrow pass;
    a stray NUL inside JSON text is left to the line reader (a bad line, --rejects skips it)."""
    if source.fmt in ("parquet", "arrow"):
        return source
    what, fix = None, f"{READABLE}; give it one of those"  # what: the whole message
    for magic, name in _NOT_DATA:
        if head.startswith(magic):
            what = f"{name}, not text data"
    for magic, name, command in _COMPRESSED:
        if head.startswith(magic) and (name != "bzip2" or head[4:10] == b"1AY&SY"):
            what = f"{name}-compressed data, not text data"
            fix = f"decompress it first (e.g. {command} FILE | sftdata ...)"
            if name == "gzip":
                fix += ", or give the file by name (a gzip file is read as it is)"
    if what is None and head.startswith((b"\xff\xfe", b"\xfe\xff")):
        what, fix = "UTF-16 text, not UTF-8", "re-encode the file as UTF-8 (e.g. iconv -f utf-16 -t utf-8)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if what is None and not text.startswith((b"{", b"[", b'"')) and (nul := head.find(b"\0")) >= 0:
        what = f"binary data (a NUL byte at byte {nul}), not text data"
        fix += "; UTF-16 text must be re-encoded as UTF-8 (e.g. iconv -f utf-16 -t utf-8)"
    if what is None:
        return source
    raise DataError(what, file=source.name, fix=fix)


def _stdin_bytes() -> IO[bytes]:
    """stdin as raw bytes. A real file descriptor is read through its own unbuffered FileIO: the
    prefetch thread may still be blocked in a read when the command exits, and it must not hold
    the lock of sys.stdin's buffer then (Python aborts at shutdown if it does)."""
    try:
        return io.FileIO(sys.stdin.fileno(), "rb", closefd=False)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return getattr(sys.stdin, "buffer", sys.stdin)  # e.g. click's CliRunner


def sniff_format(path: Path | None, head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "arrow"
    ext = _EXTENSIONS.get(path.suffix.lower()) if path is not None else None
    if ext in ("csv", "tsv", "conll", "parquet", "arrow"):
        return ext
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        # One object per line is JSONL; a single pretty-printed object is handled as JSON.
        # Without an extension (stdin), only a lone "{" line means pretty-printed: a broken
        # first JSONL line must still be reported as a broken line.
        first_line = text.partition(b"\n")[0].strip()
        if ext == "json" and not _is_complete_json(first_line):
            return "json"
        if ext is None and first_line == b"{":
            return "json"
        return "jsonl"
    if text.startswith(b'"'):
        return "jsonl"  # one JSON string per line (a prompt list)
    if text.startswith(b"-DOCSTART-"):
        return "conll"
    if ext:
        return ext
    if not text:
        return "jsonl"
    if path is not None and path.suffix.lower() == ".txt":
        return "conll"
    return "csv"


def _is_complete_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    except RecursionError:  # complete or not, too deep: the reader reports it with its line
        return True
    return True


def iter_lines(source: Source) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line bytes) for every non-blank line."""
    with source.open() as fh:
        for lineno, raw in enumerate(fh, start=1):
            if raw.strip():
                yield lineno, raw


def iter_jsonl_chunks(source: Source, batch_bytes: int = BATCH_BYTES) -> Iterator[tuple[int, bytes]]:
    """Byte chunks of whole lines, each with the line number of its first line."""
    for first_line, chunk, _ in _counted_jsonl_chunks(source, batch_bytes):
        yield first_line, chunk


def _counted_jsonl_chunks(source: Source, batch_bytes: int) -> Iterator[tuple[int, bytearray, int]]:
    """(first line number, chunk of whole lines, its newline count).

    Each chunk is read straight into one bytearray and completed with the rest of its last line:
    no slicing or concatenating copies of 32 MB (they cost more than the reading, mostly in page
    faults), and newlines are counted once.
    """
    with source.open() as fh:
        lineno = 1
        while True:
            chunk = bytearray(batch_bytes)
            got = _fill(fh, chunk)
            if not got:
                break
            del chunk[got:]
            if lineno == 1 and chunk.startswith(b"\xef\xbb\xbf"):
                del chunk[:3]  # a UTF-8 BOM, as CSV files may carry one (L8)
                if not chunk:
                    continue
            if not chunk.endswith(b"\n"):
                chunk += fh.readline()
            newlines = chunk.count(b"\n")
            if not chunk.isspace():  # stops at the first non-blank byte; strip() would copy
                yield lineno, chunk, newlines
            lineno += newlines


def _fill(fh: IO[bytes], buffer: bytearray) -> int:
    """readinto until the buffer is full or the input ends (a pipe hands over less at a time)."""
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        n = fh.readinto(view[got:])
        if not n:
            break
        got += n
    view.release()
    return got


def parse_json_line(raw: bytes, name: str, lineno: int) -> Any:
    """json.loads with the error policy's message: file, line and what to do."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"invalid UTF-8 at byte {exc.start}",
            file=name,
            line=lineno,
            fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None
    _check_depth(raw, name, lineno)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            json_problem(exc),
            file=name,
            line=lineno,
            fix="repair or remove the line, or pass --rejects FILE to skip bad rows",
        ) from None


def _check_depth(data: bytes, name: str, first_line: int, limit: int | None = None) -> None:
    """Refuse JSON nested deeper than a parser survives (M17), naming its line."""
    from .jsondepth import JSON_MAX_DEPTH, first_too_deep

    limit = JSON_MAX_DEPTH if limit is None else limit
    found = first_too_deep(data, limit)
    if found is not None:
        raise deep_json_error(name, first_line + found[0], found[1], limit)


def deep_json_error(name: str, line: int, depth: int, limit: int) -> DataError:
    return DataError(
        f"JSON nested {depth} levels deep; at most {limit} levels are read", file=name,
        line=line, fix="flatten the value (e.g. store it as a JSON string), or pass --rejects "
        "FILE to skip such rows",
    )


def skip_fix(name: str) -> str:
    """The fix for a damaged line in a record file read whole (every command but convert): only
    convert skips bad rows (--rejects), so that is the command to name (M15)."""
    target = "FILE" if name in ("<stdin>", "-") else name
    return (f"repair or remove the line, or write a copy without the bad rows: sftdata convert "
            f"{target} --rejects REJECTS.jsonl -o FIXED.jsonl")


def locate_bad_line(chunk: bytes, first_line: int, name: str) -> DataError:
    """Find the first line of a chunk Polars refused and describe it."""
    for offset, raw in enumerate(chunk.split(b"\n")):
        if not raw.strip():
            continue
        try:
            obj = parse_json_line(raw, name, first_line + offset)
        except DataError as exc:
            exc.fix = (exc.fix + "; " if "UTF-8" in exc.message else "") + skip_fix(name)
            return exc
        if not isinstance(obj, dict):
            return DataError(
                f"expected a JSON object, got {json_kind(obj)}",
                file=name,
                line=first_line + offset,
                fix=skip_fix(name),
            )
    return DataError("could not parse JSONL", file=name, fix="check the file is JSON Lines")


def read_json_array(source: Source) -> list[Any]:
    data = source.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 BOM (L8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"invalid UTF-8 at byte {exc.start}", file=source.name, line=line,
            fix="re-encode the file as UTF-8",
        ) from None
    from .jsondepth import JSON_MAX_DEPTH, first_too_deep

    found = first_too_deep(data, JSON_MAX_DEPTH, per_line=False)
    if found is not None:
        error = deep_json_error(source.name, found[0] + 1, found[1], JSON_MAX_DEPTH)
        error.fix = "flatten the value (e.g. store it as a JSON string)"
        raise error
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            json_problem(exc), file=source.name, line=exc.lineno,
            fix="repair the JSON (a JSON array of objects, or one object per line as JSONL)",
        ) from None
    return obj if isinstance(obj, list) else [obj]


def _read_csv(source: Source, sep: str) -> pl.DataFrame:
    """A CSV/TSV file as text columns. An empty file is 0 rows, like an empty JSONL (M5); a
    file Polars refuses is described by the first bad line Python's csv module finds (L9)."""
    data = source.read_bytes()
    if not data.strip():
        return pl.DataFrame()
    try:
        return pl.read_csv(io.BytesIO(data), separator=sep, infer_schema=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as exc:
        raise _csv_problem(data, sep, source.name, exc) from None


def _csv_problem(data: bytes, sep: str, name: str, exc: Exception) -> DataError:
    import csv

    kind = "TSV" if sep == "\t" else "CSV"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as bad:
        line = data[: bad.start].count(b"\n") + 1
        return DataError(f"invalid UTF-8 at byte {bad.start}", file=name, line=line,
                         fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    width = None
    start = 1
    try:
        for fields in reader:
            start, row_start = reader.line_num + 1, start
            if width is None:
                width = len(fields)
            elif fields and len(fields) != width:
                return DataError(
                    f"{len(fields)} fields, the header has {width}", file=name, line=row_start,
                    fix=f"quote fields that contain {'tabs' if sep == chr(9) else 'commas'}, "
                        "or repair the line",
                )
    except csv.Error as err:
        return DataError(f"malformed {kind} ({err})", file=name, line=start,
                         fix='close the quote (a quote inside a field is written ""), or repair '
                             "the line")
    first = str(exc).split("Original error:")[-1].strip(" `\n")
    return DataError(f"unreadable {kind} ({first.splitlines()[0] if first else exc})", file=name,
                     fix=f"check that it is a {kind} file with a header line")


def read_table(source: Source, schema_overrides: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Any supported input as one DataFrame (JSONL in batches to bound memory)."""
    fmt = source.fmt
    if fmt in ("parquet", "arrow"):
        try:
            return _read_binary(source)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataError(
                f"unreadable {fmt} file ({str(exc).splitlines()[0]})", file=source.name,
                fix=f"check that it is a complete {fmt} file (an interrupted copy is truncated)",
            ) from None
    if fmt in ("csv", "tsv"):
        return _read_csv(source, "\t" if fmt == "tsv" else ",")
    if fmt == "json":
        rows = read_json_array(source)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DataError(
                    f"expected a JSON object, got {json_kind(row)}", file=source.name, row=i + 1,
                    fix="the array must hold objects",
                )
        if not rows:
            return pl.DataFrame()
        return pl.DataFrame(rows, schema_overrides=schema_overrides, infer_schema_length=None)
    if fmt == "jsonl":
        frames = [
            frame for _, frame in iter_jsonl_frames(source, schema_overrides=schema_overrides)
        ]
        if not frames:
            return pl.DataFrame()
        return pl.concat(frames, how="diagonal_relaxed")
    if fmt == "text-corpus":
        raise UsageProblem(f"{source.name}: a raw text corpus (.txt/.md files), not records; "
                           "turn it into records with `sftdata convert` first")
    raise UsageProblem(f"{source.name}: cannot read format {fmt!r} as a table")


def _read_binary(source: Source) -> pl.DataFrame:
    if source.fmt == "parquet":
        if source.path is not None:
            return pl.read_parquet(source.path)
        return pl.read_parquet(io.BytesIO(source.read_bytes()))
    data = source.read_bytes()
    if data.startswith(b"ARROW1"):
        return pl.read_ipc(io.BytesIO(data))
    return pl.read_ipc_stream(io.BytesIO(data))


def iter_jsonl_frames(
    source: Source,
    batch_bytes: int = BATCH_BYTES,
    schema_overrides: dict[str, pl.DataType] | None = None,
) -> Iterator[tuple[int, pl.DataFrame]]:
    """JSONL as DataFrames of bounded size, each with the line number of its first line."""
    for first_line, chunk in iter_jsonl_chunks(source, batch_bytes):
        yield first_line, _read_ndjson_chunk(chunk, first_line, source.name, schema_overrides)


def _read_ndjson_chunk(
    chunk: bytes, first_line: int, name: str, overrides: dict[str, pl.DataType] | None
) -> pl.DataFrame:
    from .jsondepth import READER_MAX_DEPTH, TABLE_MAX_DEPTH, first_too_deep

    # Polars dies on deep nesting (M17): measured before it reads, the table checked after
    limit = READER_MAX_DEPTH
    found = first_too_deep(chunk, limit)
    if found is None:
        try:
            frame = pl.read_ndjson(io.BytesIO(chunk), schema_overrides=overrides,
                                   infer_schema_length=None)
        except Exception:
            frame = None
        if frame is not None and max(map(dtype_depth, frame.dtypes), default=0) <= TABLE_MAX_DEPTH:
            return frame
        if frame is not None:
            limit = TABLE_MAX_DEPTH
            found = first_too_deep(chunk, limit)
    if found is not None:
        error = deep_json_error(name, first_line + found[0], found[1], limit)
        error.fix = "flatten the value (e.g. store it as a JSON string); " + skip_fix(name)
        raise error
    # Polars' error does not say which line; find it ourselves
    raise locate_bad_line(chunk, first_line, name) from None


def dtype_depth(dtype: pl.DataType) -> int:
    """How many list and struct levels a Polars type nests (without recursion)."""
    deepest, stack = 0, [(dtype, 0)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(current, (pl.List, pl.Array)):
            stack.append((current.inner, level + 1))
        elif isinstance(current, pl.Struct):
            stack.extend((f.dtype, level + 1) for f in current.fields)
    return deepest


@dataclass
class RawRow:
    """One source row before conversion, with where it came from and its original text."""

    value: Any
    line: int | None = None  # 1-based line in the file (JSONL, CoNLL)
    row: int | None = None  # 1-based item number (JSON arrays, tables)
    raw: bytes | None = None  # the original bytes, when the row came from a line
    error: DataError | None = None  # the row could not even be parsed

    def original_text(self) -> str:
        if self.raw is not None:
            return self.raw.decode("utf-8", errors="replace").rstrip("\r\n")
        try:
            return json.dumps(self.value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return repr(self.value)


@dataclass
class InputBatch:
    """A slice of an input: its rows on demand and, when Polars could read it, a frame."""

    frame: pl.DataFrame | None
    first: RawRow | None  # the batch's first row, cheap to get (for format detection)
    _rows: Any  # a zero-argument callable returning list[RawRow]

    def rows(self) -> list[RawRow]:
        return self._rows()


BATCH_ROWS = 50_000


def iter_input_batches(
    source: Source, batch_bytes: int = BATCH_BYTES, batch_rows: int = BATCH_ROWS
) -> Iterator[InputBatch]:
    """Any input as bounded batches of rows; JSONL and tables also come as frames."""
    fmt = source.fmt
    if fmt == "text-corpus":  # sftdata.formats.text: one row per document file
        yield from source.batches()
    elif fmt == "jsonl":
        yield from _jsonl_batches(source, batch_bytes)
    elif fmt == "json":
        items = read_json_array(source)
        for start in range(0, len(items), batch_rows):
            rows = [RawRow(v, row=start + i + 1) for i, v in enumerate(items[start : start + batch_rows])]
            yield InputBatch(None, rows[0], lambda rows=rows: rows)
    elif fmt == "conll":
        rows = list(iter_conll_rows(source))
        for start in range(0, len(rows), batch_rows):
            part = rows[start : start + batch_rows]
            yield InputBatch(None, part[0], lambda part=part: part)
    elif fmt == "parquet" and source.path is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(source.path)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"unreadable parquet file ({str(exc).splitlines()[0]})", file=source.name,
                fix="check that it is a complete parquet file (an interrupted copy is truncated)",
            ) from None
        done = 0
        for rb in parquet.iter_batches(batch_size=batch_rows):
            frame = pl.from_arrow(rb)
            yield _frame_batch(frame, done)
            done += frame.height
    else:
        table = read_table(source)
        for start in range(0, table.height, batch_rows):
            yield _frame_batch(table.slice(start, batch_rows), start)


def _frame_batch(frame: pl.DataFrame, done: int) -> InputBatch:
    def rows() -> list[RawRow]:
        return [RawRow(r, row=done + i + 1) for i, r in enumerate(frame.iter_rows(named=True))]

    first = RawRow(frame.row(0, named=True), row=done + 1) if frame.height else None
    return InputBatch(frame, first, rows)


def _jsonl_batches(source: Source, batch_bytes: int) -> Iterator[InputBatch]:
    from .jsonl_arrow import read_jsonl_frame

    hint = None  # the previous chunk's schema: reading with it is cheaper than inferring
    for first_line, chunk, newlines in _counted_jsonl_chunks(source, batch_bytes):
        frame, hint = read_jsonl_frame(chunk, hint, newlines)
        rows = functools.partial(_jsonl_rows, chunk, first_line, source.name)
        first = _first_jsonl_row(chunk, first_line, source.name)
        if first is not None:
            yield InputBatch(frame, first, rows)


def _jsonl_row(raw: bytes, line: int, name: str) -> RawRow:
    try:
        return RawRow(parse_json_line(raw, name, line), line=line, raw=raw)
    except DataError as exc:
        return RawRow(None, line=line, raw=raw, error=exc)


def _jsonl_rows(chunk: bytes, first_line: int, name: str) -> list[RawRow]:
    return [
        _jsonl_row(raw, first_line + offset, name)
        for offset, raw in enumerate(chunk.split(b"\n"))
        if raw.strip()
    ]


def _first_jsonl_row(chunk: bytes, first_line: int, name: str) -> RawRow | None:
    """The first non-blank line, found without splitting the whole chunk."""
    start, line = 0, first_line
    while start < len(chunk):
        end = chunk.find(b"\n", start)
        end = len(chunk) if end < 0 else end
        raw = chunk[start:end]
        if raw.strip():
            return _jsonl_row(raw, line, name)
        start, line = end + 1, line + 1
    return None


def iter_conll_rows(source: Source) -> Iterator[RawRow]:
    """CoNLL sentences as rows {tokens, tags, columns, doc}; -DOCSTART- lines start documents.

    Columns are separated by whitespace; the tag is the last column, columns between token and
    tag (POS, chunk) are kept as lists in ``columns``.
    """
    doc, start, lines = 0, None, []

    def flush() -> RawRow | None:
        if not lines:
            return None
        split = [ln.split() for ln in lines]
        bad = next((i for i, parts in enumerate(split) if len(parts) < 2), None)
        raw = "\n".join(lines).encode("utf-8")
        if bad is not None:
            err = DataError("a token line needs at least two columns (token ... tag)",
                            file=source.name, line=start + bad, field="tag",
                            fix="separate token and tag by whitespace; one token per line")
            return RawRow(None, line=start, raw=raw, error=err)
        value = {
            "tokens": [p[0] for p in split],
            "tags": [p[-1] for p in split],
            "columns": [list(col) for col in zip(*(p[1:-1] for p in split), strict=False)] or None,
            "doc": doc,
        }
        return RawRow(value, line=start, raw=raw)

    with source.open() as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                err = DataError(f"invalid UTF-8 at byte {exc.start}", file=source.name, line=lineno,
                                fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
                yield RawRow(None, line=lineno, raw=raw, error=err)
                continue
            if text.startswith("-DOCSTART-"):
                row = flush()
                if row:
                    yield row
                lines, start, doc = [], None, doc + 1
                continue
            if not text:
                row = flush()
                if row:
                    yield row
                lines, start = [], None
                continue
            if start is None:
                start = lineno
            lines.append(text)
        row = flush()
        if row:
            yield row


def read_records(path: str | os.PathLike | None, fmt: str | None = None) -> pl.DataFrame:
    """Canonical records from any format, cast to the record schema (extra columns kept)."""
    from .schema import empty_frame

    source = open_source(path, fmt)
    if source.fmt == "jsonl":
        # Each batch is cast to the record schema before they are joined: batches infer their
        # own types (a batch without a `weight` anywhere has no such message field).
        frames = [
            _conformed(frame, source.name)
            for _, frame in iter_jsonl_frames(source, batch_bytes=BATCH_BYTES)
            if frame.width
        ]
        return pl.concat(frames, how="diagonal_relaxed") if frames else empty_frame()
    df = read_table(source)
    return _conformed(df, source.name) if df.width else empty_frame()


def _conformed(df: pl.DataFrame, name: str) -> pl.DataFrame:
    from .schema import conform

    missing = [c for c in ("id", "messages") if c not in df.columns]
    if missing:
        raise DataError(
            f"not a record table: missing column(s) {', '.join(missing)}",
            file=name,
            fix="run it through `sftdata convert` first",
        )
    try:
        return conform(df)
    except (TypeError, pl.exceptions.PolarsError) as exc:
        raise DataError(
            f"columns do not match the record schema ({exc})", file=name,
            fix="run it through `sftdata convert` first",
        ) from None


# --------------------------------------------------------------------------- output


def output_format(path: str | os.PathLike | None, to: str | None) -> str:
    ext = None if path in (None, STDIO) else _EXTENSIONS.get(Path(path).suffix.lower())
    if to:
        if ext in OUTPUT_FORMATS and ext != to:
            raise UsageProblem(
                f"{path}: the name says {ext} but --to says {to}; rename the file or drop --to"
            )
        return to
    if path in (None, STDIO):
        return "jsonl"
    if ext in OUTPUT_FORMATS:
        return ext
    if ext == "json":
        return "jsonl"
    return "jsonl" if ext is None else _refuse_output(path, ext)


def _refuse_output(path: Any, ext: str) -> str:
    raise UsageProblem(f"{path}: cannot write {ext}; use .jsonl, .parquet or .arrow, or --to")


def atomic_path(target: str | os.PathLike, label: str | None = None) -> Any:
    """A path to write ``target`` through (see sftdata/outputs.py: atomic for regular files,
    in place for pipes and devices, nothing left behind on failure)."""
    return outputs.atomic_path(target, label)


class TableWriter:
    """Writes frames batch by batch to an output under the policy of sftdata/outputs.py:
    stdout, a pipe or a device in place; a regular file atomically (a temporary beside it).

    All batches must share one schema (the first batch fixes it). ``label`` names the option in
    error messages; ``-o`` (or none) marks the data output, whose closed pipe ends quietly.
    """

    def __init__(self, path: str | os.PathLike | None, fmt: str | None = None,
                 label: str | None = None) -> None:
        self.path = None if path in (None, STDIO) else Path(path)
        self.label = label
        self.fmt = output_format(path, fmt)
        if self.fmt not in OUTPUT_FORMATS:
            raise UsageProblem(f"--to must be one of {', '.join(OUTPUT_FORMATS)}")
        self.rows = 0
        self._writer: Any = None
        self._schema: Any = None
        self._closed = False
        self._out = outputs.Output(STDIO if path is None else path, label)
        self._fh: IO[bytes] = self._out.fh

    def write(self, df: pl.DataFrame) -> None:
        try:
            self._write(df)
        except (OSError, pl.exceptions.PolarsError) as exc:
            if isinstance(exc, OSError) or outputs.error_number(exc) is not None:
                raise outputs.failure(exc, self.label, self._out.path) from None
            raise

    def _write(self, df: pl.DataFrame) -> None:
        self.rows += df.height
        if self.fmt == "jsonl":
            if df.height:
                df.write_ndjson(self._fh)
            return
        if self.fmt == "parquet":
            if self._writer is None:
                from .parquet_sink import ParquetSink

                self._writer = ParquetSink(self._fh)
            self._writer.write(df)
            return
        table = df.to_arrow(compat_level=pl.CompatLevel.oldest())
        if self._writer is None:
            import pyarrow as pa

            self._schema = table.schema
            self._writer = pa.ipc.new_stream(self._fh, table.schema)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def close(self, ok: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._finish(ok)
        except BaseException as exc:
            self._out.close(ok=False)
            if isinstance(exc, OSError) or (
                isinstance(exc, pl.exceptions.PolarsError) and outputs.error_number(exc) is not None
            ):
                raise outputs.failure(exc, self.label, self._out.path) from None
            raise
        self._out.close(ok)

    def _finish(self, ok: bool) -> None:
        if not ok:
            if self.fmt == "parquet" and self._writer is not None:
                self._writer.close(ok=False)  # the sink stops without finishing the file
            self._writer = None  # never finish a file that is about to be thrown away
            return
        if self._writer is None and self.fmt != "jsonl":
            # An empty table still gets a valid file with the schema of an empty record frame.
            from .schema import empty_frame

            self._write(empty_frame())
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(ok=exc_type is None)


def write_table(df: pl.DataFrame, path: str | os.PathLike | None, fmt: str | None = None,
                label: str | None = None) -> int:
    with TableWriter(path, fmt, label) as w:
        w.write(df)
    return df.height


def write_json(obj: Any, path: str | os.PathLike, label: str | None = "--report") -> None:
    """Pretty JSON (reports, manifests, lock files) under the output policy, keys in stable
    order."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    outputs.write_bytes(text.encode("utf-8"), path, label)


# --------------------------------------------------------------------------- pipelining

_DONE = object()


def prefetch(iterable: Any, depth: int = 2) -> Iterator[Any]:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead.

    Polars and pyarrow release the GIL while parsing, so reading the next batch overlaps with
    converting this one. Errors are re-raised in the consuming thread, in order.
    """
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer
            items.put((_DONE, exc))

    thread = threading.Thread(target=work, name="sftdata-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()


class BackgroundWriter:
    """Writes frames to a TableWriter from a background thread (compression overlaps work).

    ``write`` returns at once unless ``depth`` frames are already waiting; an error in the
    writer thread is raised by the next ``write`` or by ``close``.
    """

    def __init__(self, writer: TableWriter, depth: int = 2) -> None:
        import queue
        import threading

        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="sftdata-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _DONE:
                return
            if self._error is None:
                try:
                    self.writer.write(frame)
                except BaseException as exc:
                    self._error = exc

    def write(self, df: pl.DataFrame) -> None:
        self._raise()
        self._queue.put(df)

    def close(self, ok: bool = True) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        failed = self._error is not None
        self.writer.close(ok=ok and not failed)
        if ok and failed:
            raise self._error

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(ok=exc_type is None)
