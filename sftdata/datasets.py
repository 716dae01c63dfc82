"""Datasets as directories: inputs listed as units of work, outputs written as numbered parts.

An input is a file, stdin, a directory, a glob (``data/*.parquet``) or a pyarrow filesystem URL
(``file:///...``, ``s3://bucket/dir/``, ``gs://...``, ``hdfs://...``). A directory with a
``manifest.json`` (what sftdata writes) is read in the manifest's part order; any other directory
or glob is read in sorted file-name order, hidden files (``.x``, ``_x``) and the manifest skipped.

A *unit* is what one engine task reads: a whole part file, or a range of row groups of a large
Parquet part (so a single big Parquet file still spreads over workers). Units are in input
order and each knows its first row inside its file, so an error names the part file and the
row in it, on either engine.

A directory output (``-o DIR/``, with the slash; an existing directory must be empty or an
sftdata dataset, since it is replaced as a whole) is built in a
temporary sibling and swapped in as a set (sftdata/outputs.py ``building_dir``): parts
``part-00000.parquet`` ... of ``rows_per_part`` rows each, and a ``manifest.json`` with the row
count, schema and SHA-256 of every part. Part boundaries depend only on row counts, never on how
an engine partitioned the work, so the same rows give byte-identical directories on any engine.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl

from . import outputs
from .errors import DataError, UsageProblem

MANIFEST = "manifest.json"
FORMAT = "sftdata-dataset"
FORMAT_VERSION = 1
ROWS_PER_PART = 100_000  # output part size; ~150 MB of 200-word conversations
UNIT_ROWS = 50_000  # target rows of one Parquet unit of work (whole row groups)
SLICE_ROWS = 20_000  # rows of one in-memory slice (stdin or JSONL read by the driver)
DATA_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
                 ".json": "jsonl", ".arrow": "arrow", ".ipc": "arrow"}
_GLOB = set("*?[")


@dataclass(frozen=True)
class Part:
    """One data file of an input: its display name, where it is, and its format."""

    name: str
    path: str  # a local path, or the path inside ``uri``'s filesystem
    fmt: str
    uri: str | None = None  # the URL it came from, for filesystems other than the local one


@dataclass
class Unit:
    """What one task reads: a part (or some of its row groups), or an in-memory slice."""

    index: int
    part: Part | None
    row_groups: tuple[int, int] | None = None  # [start, stop) of a Parquet part
    first_row: int = 0  # 0-based row of this unit's first row inside its file
    frame: Any = field(default=None, repr=False)  # a Polars frame (or a Ray ref) for slices
    conform: bool = True  # cast to the record schema; False: the table as stored (pack's input)

    @property
    def name(self) -> str:
        return self.part.name if self.part is not None else "<stdin>"


def is_url(path: str) -> bool:
    return "://" in path


def is_dataset(path: str | None) -> bool:
    """A directory, a glob or a URL: read as parts (a plain file or '-' is read as before)."""
    if path in (None, "-"):
        return False
    return is_url(path) or bool(_GLOB & set(path)) or os.path.isdir(path)


def is_dir_output(path: str | None) -> bool:
    """``-o DIR/`` (a trailing slash): written as parts + manifest. An existing directory named
    without the slash stays the usage error it was (never replaced by accident)."""
    if path in (None, "-"):
        return False
    return path.endswith(("/", os.sep))


def dir_output_problem(label: str, path: str) -> str | None:
    """A directory output replaces its target as a whole: refuse a non-empty directory that is
    not an sftdata dataset (no manifest.json), so `-o ~/` can never swap a home directory away."""
    if not os.path.isdir(path):
        return None
    entries = [e for e in os.listdir(path) if not e.startswith(".")]
    if entries and MANIFEST not in entries:
        return (f"{label} {path} exists, is not empty and is not an sftdata dataset (no "
                f"{MANIFEST}); it would be replaced as a whole: give a new or empty directory")
    return None


# --------------------------------------------------------------------------- listing


def _filesystem(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise UsageProblem(f"{uri}: cannot open this filesystem URL ({exc})") from None


def _fmt(name: str) -> str | None:
    return DATA_SUFFIXES.get(PurePosixPath(name).suffix.lower())


def list_parts(path: str) -> list[Part]:
    """The data files of a directory, glob or URL, in order (see the module docstring)."""
    if is_url(path):
        return _list_remote(path)
    if os.path.isdir(path):
        manifest = Path(path) / MANIFEST
        if manifest.is_file():
            return [Part(str(Path(path) / p["name"]), str(Path(path) / p["name"]), p["format"])
                    for p in _manifest_parts(manifest.read_bytes(), str(manifest))]
        names = sorted(e.name for e in os.scandir(path) if e.is_file())
        files = [str(Path(path) / n) for n in names if not n.startswith((".", "_"))]
    else:
        files = sorted(globlib.glob(path))
    parts = [Part(f, f, fmt) for f in files if (fmt := _fmt(f)) is not None]
    if not parts:
        raise UsageProblem(f"{path}: no data files (.parquet, .jsonl, .arrow) found; give a "
                           "directory or glob of record files")
    return parts


def _list_remote(uri: str) -> list[Part]:
    import pyarrow.fs as pafs

    fs, root = _filesystem(uri)
    scheme = uri.split("://", 1)[0]
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UsageProblem(f"{uri}: no such file or directory")
    if info.type == pafs.FileType.File:
        paths = [root]
    else:
        manifest = f"{root.rstrip('/')}/{MANIFEST}"
        if fs.get_file_info(manifest).type == pafs.FileType.File:
            with fs.open_input_stream(manifest) as fh:
                listed = _manifest_parts(fh.readall(), f"{uri.rstrip('/')}/{MANIFEST}")
            paths = [f"{root.rstrip('/')}/{p['name']}" for p in listed]
        else:
            found = fs.get_file_info(pafs.FileSelector(root, recursive=False))
            paths = sorted(i.path for i in found if i.type == pafs.FileType.File
                           and not PurePosixPath(i.path).name.startswith((".", "_")))
    parts = [Part(f"{scheme}://{p}" if scheme != "file" else p, p, fmt, uri)
             for p in paths if (fmt := _fmt(p)) is not None]
    if not parts:
        raise UsageProblem(f"{uri}: no data files (.parquet, .jsonl, .arrow) found")
    return parts


def _manifest_parts(data: bytes, name: str) -> list[dict[str, Any]]:
    try:
        manifest = json.loads(data)
        parts = manifest["parts"]
        return [{"name": p["name"], "format": p.get("format") or _fmt(p["name"])} for p in parts]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"not a dataset manifest ({exc})", file=name,
                        fix="remove the broken manifest.json to read the directory's files "
                            "in name order") from None


def units(path: str, unit_rows: int = UNIT_ROWS) -> list[Unit]:
    """An input as units of work: Parquet parts cut at row-group boundaries, other parts whole."""
    out: list[Unit] = []
    for part in list_parts(path):
        if part.fmt != "parquet":
            out.append(Unit(len(out), part))
            continue
        meta = _parquet_metadata(part)
        start, rows, first = 0, 0, 0
        for rg in range(meta.num_row_groups):
            rows += meta.row_group(rg).num_rows
            if rows >= unit_rows:
                out.append(Unit(len(out), part, (start, rg + 1), first))
                start, first, rows = rg + 1, first + rows, 0
        if start < meta.num_row_groups or meta.num_row_groups == 0:
            out.append(Unit(len(out), part, (start, meta.num_row_groups), first))
    return out


def raw_units(path: str) -> list[Unit] | None:
    """Units of raw input for convert: one per part file of a dataset of data files (read by
    the converter itself, any source format); None for anything convert reads as one source
    (a file, stdin, a raw text corpus)."""
    from .formats.text import corpus_source

    if not is_dataset(path) or corpus_source(path) is not None:
        return None
    return [Unit(i, Part(p.name, p.path, "raw", p.uri)) for i, p in enumerate(list_parts(path))]


def raw_source(unit: Unit) -> Any:
    """An io.Source for a raw unit: the part file opened as usual, or its bytes from a URL."""
    from .io import Source, open_source, sniff_format

    part = unit.part
    if part.uri is None:
        return open_source(part.path)
    with _open(part) as fh:
        data = fh.read()
    return Source(part.name, sniff_format(Path(part.path), data[:4096]), None, data)


def slices(frame: pl.DataFrame, rows: int = SLICE_ROWS) -> list[Unit]:
    """A frame already in memory (stdin, one JSONL file) as slices of ``rows`` rows."""
    if frame.height == 0:
        return [Unit(0, None, None, 0, frame)]
    return [Unit(i, None, None, start, frame.slice(start, rows))
            for i, start in enumerate(range(0, frame.height, rows))]


# --------------------------------------------------------------------------- reading


def _open(part: Part) -> Any:
    if part.uri is None:
        return open(part.path, "rb")
    fs, _ = _filesystem(part.uri)
    return fs.open_input_file(part.path)


def _parquet_metadata(part: Part) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with _open(part) as fh:
            return pq.ParquetFile(fh).metadata
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(part, exc) from None


def _unreadable(part: Part, exc: BaseException) -> DataError:
    return DataError(f"unreadable {part.fmt} file ({str(exc).splitlines()[0]})", file=part.name,
                     fix="check that it is a complete file (an interrupted copy is truncated)")


def read_unit(unit: Unit) -> pl.DataFrame:
    """The unit's records, cast to the record schema; errors name the part file."""
    from .io import Source, _conformed, iter_jsonl_frames, open_source, read_records, read_table
    from .schema import empty_frame

    if unit.part is None:
        return unit.frame
    part = unit.part
    if part.fmt == "raw":  # convert reads its own input (datasets.raw_source)
        return None
    if part.fmt == "records":
        return read_records(part.path) if unit.conform else read_table(open_source(part.path))
    if part.fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with _open(part) as fh:
                table = pq.ParquetFile(fh).read_row_groups(list(range(*unit.row_groups)))
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable(part, exc) from None
        frame = pl.from_arrow(table)
        if not unit.conform:
            return frame
        return _conformed(frame, part.name) if frame.width else empty_frame()
    if part.uri is None:
        return read_records(part.path) if unit.conform else read_table(open_source(part.path))
    with _open(part) as fh:
        source = Source(part.name, part.fmt, None, fh.read())
    if not unit.conform:
        return read_table(source)
    frames = ([f for _, f in iter_jsonl_frames(source) if f.width] if part.fmt == "jsonl"
              else [read_table(source)])
    frames = [_conformed(f, part.name) for f in frames if f.width]
    return pl.concat(frames, how="diagonal_relaxed") if frames else empty_frame()


def rebase(exc: DataError, unit: Unit) -> DataError:
    """An op's error about row i of a unit's frame, as row first_row + i of the unit's file."""
    if unit.part is not None and unit.name != "<stdin>":
        exc.file = unit.name
    if exc.row is not None:
        exc.row += unit.first_row
    exc.args = (str(exc),)
    return exc


def table_plan(path: str, engine: str) -> list[Unit]:
    """:func:`plan` for inputs read as stored, not cast to the record schema (tokenized records
    for pack need no ``messages``)."""
    from .io import open_source, read_table

    if is_dataset(path):
        found = units(path)
    elif engine == "local" or (path != "-" and _fmt(path) == "parquet"):
        found = plan(path, engine)
    else:
        source = open_source(path)
        found = slices(read_table(source))
    for unit in found:
        unit.conform = False
    return found


def plan(path: str, engine: str) -> list[Unit]:
    """How an engine reads ``path``: a dataset as its units; on the local engine a plain file
    or stdin as one unit read as before; on Ray a Parquet file by row groups and anything else
    read here and cut into slices (only files can be read by workers)."""
    from .io import display_name, read_records

    if is_dataset(path):
        return units(path)
    if engine == "local":
        return [Unit(0, Part(display_name(path), path, "records"))]
    if path != "-" and _fmt(path) == "parquet":
        return units(path)
    return slices(read_records(path))


# --------------------------------------------------------------------------- writing


class DatasetWriter:
    """A directory output: frames in, numbered parts of ``rows_per_part`` rows + manifest out.

    The directory is built beside its target and swapped in as a set when the command ends
    (outputs.building_dir); on an error nothing of it is left.
    """

    def __init__(self, target: str | os.PathLike, fmt: str | None = None,
                 label: str | None = "-o", rows_per_part: int = ROWS_PER_PART) -> None:
        self.fmt = fmt or "parquet"
        if self.fmt not in ("parquet", "jsonl"):
            raise UsageProblem(f"{label}: a directory output holds parquet or jsonl parts, "
                               f"not {self.fmt}; use --to parquet or --to jsonl")
        self.label = label
        self.rows_per_part = rows_per_part
        self.rows = 0
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0
        self._parts: list[dict[str, Any]] = []
        self._schema: pl.Schema | None = None
        self._stack = contextlib.ExitStack()
        self._build = self._stack.enter_context(outputs.building_dir(target, label))
        self._closed = False

    def write(self, df: pl.DataFrame) -> None:
        if self._schema is None:
            self._schema = df.schema
        elif df.schema != self._schema:
            df = df.cast(dict(self._schema))
        self.rows += df.height
        while df.height:
            take = min(df.height, self.rows_per_part - self._pending_rows)
            self._pending.append(df.slice(0, take))
            self._pending_rows += take
            df = df.slice(take)
            if self._pending_rows == self.rows_per_part:
                self._flush()

    def _flush(self) -> None:
        frame = pl.concat(self._pending, how="vertical").rechunk() if self._pending else None
        if frame is None:
            from .schema import empty_frame

            frame = pl.DataFrame(schema=self._schema) if self._schema else empty_frame()
        self._pending, self._pending_rows = [], 0
        name = f"part-{len(self._parts):05d}.{self.fmt}"
        path = self._build.path / name
        try:
            if self.fmt == "parquet":
                frame.write_parquet(path, compression="zstd", compression_level=1)
            else:
                frame.write_ndjson(path)
            data = path.read_bytes()
        except OSError as exc:
            raise outputs.failure(exc, self.label, self._build.target) from None
        self._parts.append({"name": name, "format": self.fmt, "rows": frame.height,
                            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})

    def close(self, ok: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if not ok:
            with contextlib.suppress(RuntimeError):
                self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
            return
        try:
            if self._pending_rows or not self._parts:
                self._flush()
            schema = self._schema or pl.Schema()
            manifest = {
                "format": FORMAT, "version": FORMAT_VERSION, "rows": self.rows,
                "schema": {name: str(dtype) for name, dtype in schema.items()},
                "parts": self._parts,
            }
            text = json.dumps(manifest, indent=2) + "\n"
            (self._build.path / MANIFEST).write_text(text, encoding="utf-8")
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                self._stack.__exit__(type(exc), exc, None)
            if isinstance(exc, OSError):
                raise outputs.failure(exc, self.label, self._build.target) from None
            raise
        self._stack.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(ok=exc_type is None)


def open_writer(path: str | None, fmt: str | None = None, label: str | None = "-o") -> Any:
    """A DatasetWriter for a directory output, else the file/stdout TableWriter."""
    if is_dir_output(path):
        return DatasetWriter(path, fmt, label)
    from .io import TableWriter

    return TableWriter(path, fmt, label)


def iter_frames(path: str) -> Iterator[pl.DataFrame]:
    """Every unit of a dataset input, read in order in this process."""
    for unit in units(path):
        yield read_unit(unit)
