"""Plain text for continued pretraining: ``{"text": ...}`` -> task "text", one assistant message
holding the whole text (docs/pipeline.md: templates render it raw and train all of it).

Rows come from JSONL/Parquet with a text column, or from a raw text corpus (a directory or glob
of .txt/.md files, below). See docs/cpt.md."""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import DataError, UsageProblem
from . import _fast
from ._base import Options, make_message, others, record, require_str

NAME = "text"
USED = ("id", "text")


def matches(row: dict[str, Any]) -> bool:
    return isinstance(row.get("text"), str)


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    text = require_str(row, "text", NAME)
    messages = [make_message("assistant", text, "text")]
    return [record(messages, opts, id=row.get("id"), extras=others(row, USED), task="text")]


def fast(frame: pl.DataFrame, opts: Options) -> pl.DataFrame | None:
    if not _fast.plain_strings(frame, ["text"], nullable=["id"]) or not _fast.extras_ok(frame, USED):
        return None
    if (frame["text"].str.strip_chars() == "").any():
        return None
    turns = [("assistant", pl.col("text"))]
    messages = _fast.fixed_messages(frame, turns)
    ids = _fast.fixed_content_ids(frame, turns)
    return _fast.finish(frame, messages, ids, opts, USED, task="text")


# --------------------------------------------------------------------------- raw text corpora
#
# A directory (searched recursively) or a quoted glob of .txt / .md files is a raw text corpus:
# one document per file, its id the path relative to the directory (the glob's fixed part), files
# in sorted order so the records come out the same on every machine. A directory of .parquet /
# .jsonl parts is a dataset, not a corpus (sftdata.io reads those): a directory holding both is
# refused rather than guessed.

CORPUS_SUFFIXES = (".txt", ".md", ".markdown")
DATASET_SUFFIXES = (".parquet", ".pq", ".jsonl", ".ndjson", ".json", ".arrow", ".ipc", ".csv", ".tsv")
CORPUS_BATCH_FILES = 1024
CORPUS_BATCH_BYTES = 64 * 1024 * 1024
CORPUS_FORMAT = "text-corpus"
_GLOB_CHARS = "*?["


@dataclass
class Corpus:
    """The documents of a raw text corpus: files in id order, and what was passed over."""

    name: str  # as the user wrote it, for messages
    root: Path  # ids are paths relative to this
    files: list[Path]
    skipped: list[Path] = field(default_factory=list)  # other files in a corpus directory

    def ids(self) -> list[str]:
        return [f.relative_to(self.root).as_posix() for f in self.files]


def is_glob(path: str) -> bool:
    return any(c in path for c in _GLOB_CHARS)


def find_corpus(path: str | os.PathLike) -> Corpus | None:
    """The corpus at ``path`` (a directory of text files or a glob), or None when ``path`` is
    something else: a file, a missing path, a directory of dataset parts (io's to read)."""
    name = str(path)
    if not name or name == "-":
        return None
    p = Path(name)
    if p.is_dir():
        return _directory_corpus(name, p)
    if p.exists() or not is_glob(name):
        return None
    return _glob_corpus(name)


def _directory_corpus(name: str, root: Path) -> Corpus | None:
    texts, data, other = [], [], []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not f.is_file():
            continue  # hidden files and directories (.git, .DS_Store) are not documents
        suffix = f.suffix.lower()
        (texts if suffix in CORPUS_SUFFIXES else data if suffix in DATASET_SUFFIXES else other).append(f)
    if not texts:
        return None
    if data:
        raise UsageProblem(
            f"{name}: a directory with both text files ({texts[0].relative_to(root)}) and data "
            f"files ({data[0].relative_to(root)}); give a directory of .txt/.md documents (a raw "
            "text corpus) or one of .parquet/.jsonl parts (a dataset), not both"
        )
    return Corpus(name, root, _id_order(texts, root), other)


def _glob_corpus(pattern: str) -> Corpus | None:
    matched = sorted(Path(m) for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
    if not matched:
        raise UsageProblem(f"{pattern}: no file matches this pattern")
    bad = [m for m in matched if m.suffix.lower() not in CORPUS_SUFFIXES]
    if bad:
        raise UsageProblem(
            f"{pattern}: the pattern matches {bad[0]}, not a .txt/.md document; a pattern names "
            "a raw text corpus, so narrow it to text files (e.g. 'docs/**/*.md')"
        )
    fixed = Path(*[p for p in itertools.takewhile(lambda s: not is_glob(s), Path(pattern).parts)])
    root = fixed if fixed.is_dir() else Path(".")
    return Corpus(pattern, root, _id_order(matched, root))


def _id_order(files: list[Path], root: Path) -> list[Path]:
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def corpus_batches(corpus: Corpus) -> Iterator[Any]:
    """The corpus as input batches of rows {"id", "text"} (sftdata.io.InputBatch), bounded by
    files and bytes. An unreadable, non-UTF-8 or blank file is a bad row naming that file."""
    from ..io import InputBatch, RawRow

    rows: list[RawRow] = []
    size = 0
    for n, (path, doc_id) in enumerate(zip(corpus.files, corpus.ids(), strict=True), start=1):
        rows.append(_document_row(path, doc_id, n, RawRow))
        size += len(rows[-1].value.get("text") or "")
        if len(rows) >= CORPUS_BATCH_FILES or size >= CORPUS_BATCH_BYTES:
            yield _batch(rows, InputBatch)
            rows, size = [], 0
    if rows:
        yield _batch(rows, InputBatch)


def _document_row(path: Path, doc_id: str, n: int, row_type: Any) -> Any:
    def bad(message: str, fix: str) -> Any:
        return row_type({"id": doc_id}, row=n, error=DataError(message, file=str(path), fix=fix))

    try:
        data = path.read_bytes()
    except OSError as exc:
        return bad(f"cannot read ({exc.strerror or exc})", "check the file's permissions")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return bad(f"invalid UTF-8 at byte {exc.start}",
                   "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass "
                   "--rejects FILE to skip it")
    if not text.strip():
        return bad("empty document (no text)", "remove the file, or pass --rejects FILE to skip it")
    return row_type({"id": doc_id, "text": text}, row=n)


def _batch(rows: list[Any], batch_type: Any) -> Any:
    clean = all(r.error is None for r in rows)
    frame = pl.DataFrame([r.value for r in rows], schema={"id": pl.String, "text": pl.String})
    return batch_type(frame if clean else None, rows[0], lambda rows=rows: rows)


def corpus_source(path: str | os.PathLike | None) -> Any:
    """A :class:`sftdata.io.Source` of format ``text-corpus`` for a corpus path, else None (the
    one hook sftdata.io.open_source calls; iter_input_batches then calls ``batches()``)."""
    if path is None:
        return None
    corpus = find_corpus(path)
    if corpus is None:
        return None
    from ..io import Source

    class CorpusSource(Source):
        def batches(self) -> Iterator[Any]:
            return corpus_batches(corpus)

    source = CorpusSource(corpus.name, CORPUS_FORMAT, corpus.root)
    source.corpus = corpus  # type: ignore[attr-defined]
    return source
