"""The packed-shard format: the one artifact `sfttrain` reads. numpy + pyarrow only.

Layout::

    shards/
      manifest.json
      train/00000.arrow  train/00001.arrow ...   (uncompressed Arrow IPC *file* format: mmap-able)
      val/00000.arrow ...

Each row is one packed sequence, stored without padding (length <= seq_len):

    input_ids   list<int32>   token ids of all documents, concatenated
    labels      list<int32>   same length; -100 where not trained
    doc_lens    list<int32>   lengths of the documents inside, in order; sum == len(input_ids)
    record_ids  list<string>  the record id of each document (lineage: which rows reached training)

Position ids restart at 0 for every document and attention never crosses a document boundary:
both follow from ``doc_lens`` (see :func:`position_ids` and :func:`cu_seqlens`).

With ``pack --strategy wrap`` (continued pretraining) a row is one seq_len chunk of the document
stream and ``doc_lens`` are the pieces of the documents in it: a document crossing a chunk
boundary gives its last piece of one chunk and the first of the next, under the same record id,
so the boundaries are kept either way. ``packing.cross_doc_attention`` (true) tells readers to
treat each row as one stream instead (sfttrain.data.cross_doc_attention); ``packing.wrap`` counts
per split the documents, those split across chunks, the EOS added and the last chunk's tokens.

manifest.json (``format_version`` 1)::

    {
      "format": "sftdata-shards", "format_version": 1, "created_by": "sftdata 0.1.0",
      "seq_len": 2048, "pad_id": 0, "eos_id": 2, "label_pad": -100,
      "tokenizer": {"backend": "hf"|"tiktoken", "name": "...", "vocab_size": N,
                    "vocab_hash": "<sha256 from tokenizer_fingerprint>"},
      "template": {"name": "...", "hash": "<sha256 of text>", "text": "<template source>"},
      "packing": {"strategy": "bfd"|"ffd"|"none"|"wrap", "truncation": "..."|null, ...,
                  "cross_doc_attention": false, "wrap": {"train": {...}}},   (the last two: wrap)
      "input_fingerprint": "<sha256 of the tokenized input>",
      "splits": {
        "train": {"files": [{"path": "train/00000.arrow", "rows": N, "sha256": "..."}],
                  "sequences": N, "documents": N, "tokens": N, "supervised_tokens": N,
                  "padded_tokens": N, "efficiency": 0.993},
        ...
      }
    }

``efficiency`` = tokens / (sequences * seq_len): the share of a padded batch that is real data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import DataError, json_kind, json_problem

FORMAT = "sftdata-shards"
FORMAT_VERSION = 1
LABEL_PAD = -100
ROWS_PER_FILE = 8192

SHARD_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("doc_lens", pa.list_(pa.int32())),
        ("record_ids", pa.list_(pa.string())),
    ]
)


PACK_FIX = "run `sftdata pack TOKENS -o DIR` again and point at DIR"


class ShardFormatError(DataError, ValueError):
    """A shard directory that is missing, of another version, or inconsistent: a data error
    (exit 1) naming the file, the row (1-based, in that file) and field, and the fix."""

    def __init__(self, message: str, **where: Any) -> None:
        where.setdefault("fix", PACK_FIX)
        super().__init__(message, **where)


# --------------------------------------------------------------------------- identity


def tokenizer_fingerprint(vocab: Mapping[str | bytes, int]) -> str:
    """sha256 of a tokenizer's vocabulary (token -> id, added/special tokens included).

    Both sides compute it the same way: sftdata from the tokenizer it tokenized with, sfttrain
    from the model's tokenizer (``tokenizer.get_vocab()``). Byte tokens (tiktoken ranks) are
    hex-encoded so the JSON is well defined.
    """
    items = sorted(
        ((k.hex() if isinstance(k, bytes) else k), int(v)) for k, v in vocab.items()
    )
    blob = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def text_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- positions


def position_ids(doc_lens: np.ndarray | list[int]) -> np.ndarray:
    """0..len-1 for each document, concatenated: positions restart at every document."""
    lens = np.asarray(doc_lens, dtype=np.int64)
    total = int(lens.sum())
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    return (np.arange(total, dtype=np.int64) - starts).astype(np.int64)


def cu_seqlens(doc_lens: np.ndarray | list[int]) -> np.ndarray:
    """Cumulative document boundaries [0, l0, l0+l1, ...] (flash-attention varlen format)."""
    lens = np.asarray(doc_lens, dtype=np.int32)
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)


# --------------------------------------------------------------------------- writing


class ShardWriter:
    """Appends packed sequences of one split and writes numbered Arrow IPC files."""

    def __init__(self, out_dir: str | os.PathLike, split: str, rows_per_file: int = ROWS_PER_FILE):
        self.root = Path(out_dir)
        self.split = split
        self.rows_per_file = rows_per_file
        (self.root / split).mkdir(parents=True, exist_ok=True)
        self.files: list[dict[str, Any]] = []
        self._buf: dict[str, list[Any]] = {name: [] for name in SHARD_SCHEMA.names}
        self.sequences = self.documents = self.tokens = self.supervised = 0

    def add(
        self,
        input_ids: np.ndarray,
        labels: np.ndarray,
        doc_lens: list[int] | np.ndarray,
        record_ids: list[str],
    ) -> None:
        input_ids = np.asarray(input_ids, dtype=np.int32)
        labels = np.asarray(labels, dtype=np.int32)
        doc_lens = np.asarray(doc_lens, dtype=np.int32)
        if input_ids.shape != labels.shape or int(doc_lens.sum()) != input_ids.size:
            raise ShardFormatError("input_ids, labels and doc_lens disagree in length")
        if len(record_ids) != doc_lens.size:
            raise ShardFormatError("one record id per document is required")
        self._buf["input_ids"].append(input_ids)
        self._buf["labels"].append(labels)
        self._buf["doc_lens"].append(doc_lens)
        self._buf["record_ids"].append(list(record_ids))
        self.sequences += 1
        self.documents += int(doc_lens.size)
        self.tokens += int(input_ids.size)
        self.supervised += int((labels != LABEL_PAD).sum())
        if len(self._buf["input_ids"]) >= self.rows_per_file:
            self._flush()

    def add_packed(
        self,
        input_ids: np.ndarray,
        labels: np.ndarray,
        seq_offsets: np.ndarray,
        doc_lens: np.ndarray,
        doc_offsets: np.ndarray,
        record_ids: pa.Array | list[str],
    ) -> None:
        """Append many sequences at once from flat arrays (the fast path of `sftdata pack`).

        Sequence i holds tokens ``seq_offsets[i]:seq_offsets[i+1]`` of ``input_ids``/``labels``
        and documents ``doc_offsets[i]:doc_offsets[i+1]`` of ``doc_lens``/``record_ids``.
        Files still hold at most ``rows_per_file`` sequences.
        """
        self._flush()
        seq_offsets = np.asarray(seq_offsets, dtype=np.int64)
        doc_offsets = np.asarray(doc_offsets, dtype=np.int64)
        doc_lens = np.asarray(doc_lens, dtype=np.int32)
        input_ids = np.asarray(input_ids, dtype=np.int32)
        labels = np.asarray(labels, dtype=np.int32)
        if not isinstance(record_ids, pa.Array):
            record_ids = pa.array(record_ids, type=pa.string())
        n = seq_offsets.size - 1
        if (
            doc_offsets.size != n + 1
            or input_ids.size != labels.size
            or input_ids.size != seq_offsets[-1] - seq_offsets[0]
            or len(record_ids) != doc_lens.size
            or doc_lens.size != doc_offsets[-1] - doc_offsets[0]
        ):
            raise ShardFormatError("input_ids, labels, doc_lens and record ids disagree in length")
        for first in range(0, n, self.rows_per_file):
            last = min(first + self.rows_per_file, n)
            t0, t1 = int(seq_offsets[first]), int(seq_offsets[last])
            d0, d1 = int(doc_offsets[first]), int(doc_offsets[last])
            tok_off = pa.array((seq_offsets[first : last + 1] - t0).astype(np.int32))
            doc_off = pa.array((doc_offsets[first : last + 1] - d0).astype(np.int32))
            lens = doc_lens[d0:d1]
            summed = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])
            local = doc_offsets[first : last + 1] - d0
            if not np.array_equal(summed[local[1:]] - summed[local[:-1]],
                                  np.diff(seq_offsets[first : last + 1])):
                raise ShardFormatError("doc_lens do not sum to the sequence lengths")
            ids, labs = input_ids[t0:t1], labels[t0:t1]
            columns = [
                pa.ListArray.from_arrays(tok_off, pa.array(ids)),
                pa.ListArray.from_arrays(tok_off, pa.array(labs)),
                pa.ListArray.from_arrays(doc_off, pa.array(lens)),
                pa.ListArray.from_arrays(doc_off, _compact(record_ids.slice(d0, d1 - d0))),
            ]
            self._write(pa.Table.from_arrays(columns, schema=SHARD_SCHEMA))
            self.sequences += last - first
            self.documents += d1 - d0
            self.tokens += t1 - t0
            self.supervised += int((labs != LABEL_PAD).sum())

    def _flush(self) -> None:
        if not self._buf["input_ids"]:
            return
        columns = [
            _list_array(self._buf["input_ids"]),
            _list_array(self._buf["labels"]),
            _list_array(self._buf["doc_lens"]),
            pa.array(self._buf["record_ids"], type=pa.list_(pa.string())),
        ]
        self._write(pa.Table.from_arrays(columns, schema=SHARD_SCHEMA))
        self._buf = {name: [] for name in SHARD_SCHEMA.names}

    def _write(self, table: pa.Table) -> None:
        rel = f"{self.split}/{len(self.files):05d}.arrow"
        path = self.root / rel
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, SHARD_SCHEMA) as writer:
            writer.write_table(table)
        self.files.append({"path": rel, "rows": table.num_rows, "sha256": file_sha256(path)})

    def close(self, seq_len: int) -> dict[str, Any]:
        """Flush and return this split's manifest entry."""
        self._flush()
        capacity = self.sequences * seq_len
        return {
            "files": self.files,
            "sequences": self.sequences,
            "documents": self.documents,
            "tokens": self.tokens,
            "supervised_tokens": self.supervised,
            "padded_tokens": capacity - self.tokens,
            "efficiency": round(self.tokens / capacity, 6) if capacity else 0.0,
        }


def _list_array(arrays: list[np.ndarray]) -> pa.ListArray:
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int32, count=len(arrays))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int32)))


def _compact(strings: pa.Array) -> pa.Array:
    """A string slice with its own buffers, so a file holds only the strings it lists."""
    return pa.concat_arrays([strings.cast(pa.string())])


def write_manifest(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    path = Path(out_dir) / "manifest.json"
    tmp = path.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- reading
#
# Every reader of a shard directory (sfttrain run/plan/generate, sftdata inspect) goes through
# read_manifest and ShardReader: whatever is wrong with the directory (no manifest, broken JSON,
# another version, a missing, truncated or corrupted file, sequences whose lengths disagree, token
# ids outside the vocabulary) is a ShardFormatError naming the file, the row (1-based, in that
# file) and field, and the fix; never a traceback and never a crash half-way through training.


def read_manifest(shard_dir: str | os.PathLike) -> dict[str, Any]:
    root = Path(shard_dir)
    path = root / "manifest.json"
    if not root.is_dir():
        raise ShardFormatError("not a directory", file=str(shard_dir))
    if not path.is_file():
        empty = not any(root.iterdir())
        raise ShardFormatError(
            "no manifest.json, so not a `sftdata pack` output"
            + (" (the directory is empty)" if empty else ""),
            file=str(shard_dir),
        )
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ShardFormatError(f"cannot read ({exc.strerror or exc})", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ShardFormatError(f"invalid UTF-8 at byte {exc.start}", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise ShardFormatError(
            json_problem(exc), file=str(path), line=exc.lineno
        ) from None
    except RecursionError:
        raise ShardFormatError("JSON nested too deeply", file=str(path)) from None
    if not isinstance(manifest, dict):
        raise ShardFormatError(
            f"not a shard manifest: a JSON {json_kind(manifest)}, not an object", file=str(path)
        )
    if manifest.get("format") != FORMAT:
        raise ShardFormatError("not an sftdata shard manifest", file=str(path), field="format")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardFormatError(
            f"shard format version {manifest.get('format_version')} is not supported "
            f"(this reader knows version {FORMAT_VERSION})",
            file=str(path), field="format_version", fix="re-run `sftdata pack` with this version",
        )
    problems = _manifest_problems(manifest)
    if problems:
        raise ShardFormatError("; ".join(problems), file=str(path))
    return manifest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Every structural problem of a manifest (all of them, not the first)."""
    problems = []
    seq_len = manifest.get("seq_len")
    if not _is_int(seq_len) or seq_len < 1:
        problems.append(f"field 'seq_len': expected a positive integer, got {seq_len!r}")
    for key in ("pad_id", "eos_id"):
        value = manifest.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            problems.append(f"field '{key}': expected a token id (integer >= 0), got {value!r}")
    tokenizer = manifest.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, dict):
        problems.append("field 'tokenizer': expected an object")
    elif tokenizer and tokenizer.get("vocab_size") is not None and (
        not _is_int(tokenizer["vocab_size"]) or tokenizer["vocab_size"] < 1
    ):
        problems.append(f"field 'tokenizer.vocab_size': expected a positive integer, "
                        f"got {tokenizer['vocab_size']!r}")
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        problems.append("field 'splits': expected an object with at least one split")
        return problems
    for name, entry in splits.items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, list):
            problems.append(f"field 'splits.{name}.files': expected a list of files")
            continue
        for i, f in enumerate(files):
            at = f"splits.{name}.files[{i}]"
            if not isinstance(f, dict):
                problems.append(f"field '{at}': expected an object")
                continue
            rel = f.get("path")
            if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
                problems.append(f"field '{at}.path': expected a path inside the directory, got {rel!r}")
            if not _is_int(f.get("rows")) or f["rows"] < 0:
                problems.append(f"field '{at}.rows': expected an integer >= 0, got {f.get('rows')!r}")
            if not isinstance(f.get("sha256"), str):
                problems.append(f"field '{at}.sha256': expected a sha256 hex string")
    return problems


def verify_checksums(shard_dir: str | os.PathLike, splits: list[str] | None = None) -> int:
    """Check every shard file's sha256 against the manifest (all splits, or those named).

    Returns the number of files checked. Raises ShardFormatError (a DataError, exit 1) naming the
    file, the expected and the actual sha256 and the fix, for the first file that differs or is
    missing. For `sfttrain run` to call before training (M7).
    """
    root = Path(shard_dir)
    manifest = read_manifest(root)
    checked = 0
    for name in splits if splits is not None else list(manifest["splits"]):
        if name not in manifest["splits"]:
            raise ShardFormatError(
                f"no split {name!r} (have: {', '.join(manifest['splits'])})",
                file=str(root / "manifest.json"), field="splits",
            )
        for entry in manifest["splits"][name]["files"]:
            _verify_file(root / entry["path"], entry["sha256"])
            checked += 1
    return checked


def _verify_file(path: Path, expected: str) -> None:
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        raise ShardFormatError("missing: the manifest lists this file", file=str(path)) from None
    except OSError as exc:
        raise ShardFormatError(f"cannot read ({exc.strerror or exc})", file=str(path)) from None
    if actual != expected:
        raise ShardFormatError(
            f"checksum differs from the manifest (expected sha256 {expected}, actual {actual}): "
            "the file was changed or damaged after `sftdata pack`",
            file=str(path),
        )


def _open_table(path: Path, entry: dict[str, Any]) -> pa.Table:
    """One shard file, memory-mapped and checked: schema, row count, Arrow structure (offsets,
    UTF-8), and that each row's columns agree in length."""
    if not path.is_file():
        raise ShardFormatError("missing: the manifest lists this file", file=str(path))
    try:
        source = pa.memory_map(str(path), "r")
        table = pa.ipc.open_file(source).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ShardFormatError(
            f"not a readable Arrow IPC file, truncated or corrupted ({str(exc).splitlines()[0]})",
            file=str(path),
        ) from None
    if not table.schema.equals(SHARD_SCHEMA):
        try:
            found = (f"columns {table.schema.names} with types "
                     f"{[str(t) for t in table.schema.types]}")
        except (UnicodeDecodeError, pa.ArrowException):  # a damaged schema block
            found = "damaged column names"
        raise ShardFormatError(
            f"{found} are not the shard schema {SHARD_SCHEMA.names}", file=str(path)
        )
    if table.num_rows != entry["rows"]:
        raise ShardFormatError(
            f"{table.num_rows} rows, the manifest says {entry['rows']}", file=str(path)
        )
    try:
        table.validate(full=True)
    except (pa.ArrowException, ValueError) as exc:
        raise ShardFormatError(
            f"corrupted Arrow data ({str(exc).splitlines()[0]})", file=str(path)
        ) from None
    return table


_CHECKED: set[tuple[Any, ...]] = set()


def _file_key(path: Path, entry: dict[str, Any], seq_len: int) -> tuple[Any, ...]:
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, entry["sha256"], seq_len)


def _check_rows(table: pa.Table, path: Path, seq_len: int) -> None:
    """Row-level consistency, vectorized: the first offending row is named (1-based)."""

    def lens(name: str) -> np.ndarray:
        col = table.column(name).combine_chunks()
        return np.diff(col.offsets.to_numpy()).astype(np.int64)

    def values(name: str) -> np.ndarray:
        return table.column(name).combine_chunks().values.to_numpy(zero_copy_only=False)

    def fail(rows: np.ndarray, message: str, field: str) -> None:
        raise ShardFormatError(message, file=str(path), row=int(np.flatnonzero(rows)[0]) + 1,
                               field=field)

    n_ids = lens("input_ids")
    if (bad := n_ids != lens("labels")).any():
        fail(bad, "labels and input_ids differ in length", "labels")
    if (bad := n_ids > seq_len).any():
        fail(bad, f"{n_ids[bad][0]} tokens, longer than seq_len {seq_len}", "input_ids")
    n_docs = lens("doc_lens")
    if (bad := n_docs != lens("record_ids")).any():
        fail(bad, "one record id per document is required", "record_ids")
    doc_lens = values("doc_lens").astype(np.int64)
    if doc_lens.size and (bad_doc := doc_lens < 1).any():
        row = np.searchsorted(np.cumsum(n_docs), np.flatnonzero(bad_doc)[0], side="right")
        fail(np.arange(n_ids.size) == row, "a document length is below 1", "doc_lens")
    offsets = np.concatenate([[0], np.cumsum(n_docs)])
    summed = np.concatenate([[0], np.cumsum(doc_lens)])
    if (bad := summed[offsets[1:]] - summed[offsets[:-1]] != n_ids).any():
        fail(bad, "doc_lens do not sum to the number of tokens", "doc_lens")
    # token ids: only the lower bound is the shard's to check (vocab_size counts tokens, and
    # tiktoken's special ids lie beyond it); the model's embedding size is checked by sfttrain
    ids = values("input_ids")
    labels = values("labels")
    ends = np.cumsum(n_ids)
    for name, column, bad_at in (
        ("input_ids", ids, ids < 0),
        ("labels", labels, (labels < 0) & (labels != LABEL_PAD)),
    ):
        if column.size and bad_at.any():
            at = int(np.flatnonzero(bad_at)[0])
            row = int(np.searchsorted(ends, at, side="right"))
            what = "token id" if name == "input_ids" else f"label (neither {LABEL_PAD} nor a token id)"
            fail(np.arange(n_ids.size) == row, f"{what} {int(column[at])} is negative", name)


class ShardReader:
    """Random access to the packed sequences of one split, memory-mapped.

    ``reader[i]`` -> {"input_ids": int64 array, "labels": int64 array, "doc_lens": int64 array,
    "record_ids": list[str]}.

    Opening checks every file of the split (structure, row counts, lengths, token ids; the sha256
    too with ``verify=True``), so a damaged directory fails here with a data error, not later.
    """

    def __init__(self, shard_dir: str | os.PathLike, split: str = "train", verify: bool = False):
        self.root = Path(shard_dir)
        self.manifest = read_manifest(self.root)
        if split not in self.manifest["splits"]:
            raise ShardFormatError(
                f"no split {split!r} (have: {', '.join(self.manifest['splits'])})",
                file=str(shard_dir), fix="pass one of those splits",
            )
        self.split = split
        self.seq_len = int(self.manifest["seq_len"])
        self._tables: list[pa.Table] = []
        for entry in self.manifest["splits"][split]["files"]:
            path = self.root / entry["path"]
            if verify:
                _verify_file(path, entry["sha256"])
            table = _open_table(path, entry)
            key = _file_key(path, entry, self.seq_len)
            if key not in _CHECKED:  # a run opens its splits many times (eval): check once
                _check_rows(table, path, self.seq_len)
                _CHECKED.add(key)
            self._tables.append(table)
        self._starts = np.cumsum([0] + [t.num_rows for t in self._tables])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def lengths(self) -> np.ndarray:
        """Token count of every sequence (for batching and memory planning)."""
        out = [
            np.diff(t.column("input_ids").combine_chunks().offsets.to_numpy())
            for t in self._tables
        ]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        t = int(np.searchsorted(self._starts, index, side="right") - 1)
        row = index - int(self._starts[t])
        table = self._tables[t]

        def ints(name: str) -> np.ndarray:
            return table.column(name)[row].values.to_numpy(zero_copy_only=False).astype(np.int64)

        return {
            "input_ids": ints("input_ids"),
            "labels": ints("labels"),
            "doc_lens": ints("doc_lens"),
            "record_ids": table.column("record_ids")[row].as_py(),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]
