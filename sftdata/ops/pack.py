"""Pack tokenized records into sequences of ``seq_len``: best-fit decreasing, first-fit
decreasing, one document per sequence (``none``), or ``wrap`` (continued pretraining).

``wrap`` concatenates the documents of a split in input order, an EOS after each one that does
not end with it, and cuts the stream into seq_len chunks: every token lands in exactly one chunk,
in order, and the last chunk may be shorter (padded at train time, counted in the manifest). A
chunk's ``doc_lens`` are the pieces of the documents inside it, so positions and attention
restart at each document (and at each chunk); with ``cross_doc_attention`` the manifest tells
sfttrain to treat a chunk as one stream, as pretraining usually does. See docs/cpt.md.

With the bin-packing strategies a record is never split across sequences. A record longer than ``seq_len`` follows the
truncation policy (right, left, drop, fail); rows left with no token or no supervised token are
dropped with a reason, never passed on silently. The result is a plan over the input's own token
buffers: :meth:`PackedSplit.batches` gathers the packed sequences a file at a time, so memory
stays near the size of the input.

Bin packing works on lengths only. Lengths are integers in 1..seq_len, so documents of one length
are placed in bulk: a bin with remaining capacity c takes c // L documents of length L in a row
(it stays the best and the first fit until it is too full for another), so the work grows with
the number of distinct (length, capacity) steps, not with the number of documents, and the
result is the same as placing documents one at a time.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ..errors import DataError, UsageProblem
from ..shards import LABEL_PAD

STRATEGIES = ("bfd", "ffd", "none", "wrap")
TRUNCATIONS = ("right", "left", "drop", "fail")
SPLIT_ORDER = ("train", "val", "test", "gold")
DEFAULT_SPLIT = "train"
SPLIT_NAME = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"  # becomes a directory name inside the output
REQUIRED_COLUMNS = ("id", "input_ids", "labels", "tokenizer")
CHECK_CHUNK = 1 << 24  # tokens checked at a time
TOKENIZE_FIX = "run the records through `sftdata render-template | sftdata tokenize` first"


# --------------------------------------------------------------------------- bin packing


def pack_lengths(lengths: np.ndarray | list[int], seq_len: int, strategy: str = "bfd") -> np.ndarray:
    """The sequence (bin) index of every document; bins are numbered in the order they open.

    ``strategy``: "bfd" best-fit decreasing, "ffd" first-fit decreasing, "next-fit" (greedy in
    input order, for comparison) or "none" (one document per sequence). Documents of equal length
    are taken in input order, so the result is deterministic.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > seq_len):
        raise ValueError(f"every length must be in 1..{seq_len}")
    if strategy == "none":
        return np.arange(lengths.size, dtype=np.int64)
    if strategy == "next-fit":
        return _next_fit(lengths, seq_len)
    if strategy not in ("bfd", "ffd"):
        raise ValueError(f"unknown packing strategy {strategy!r}")
    order = np.argsort(-lengths, kind="stable")  # decreasing; ties keep input order
    fit = _best_fit if strategy == "bfd" else _first_fit
    bins = np.empty(lengths.size, dtype=np.int64)
    bins[order] = fit(lengths[order], seq_len)
    return bins


def _runs(sorted_lengths: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(length, first position, count) of each run of equal values."""
    n = sorted_lengths.size
    if n == 0:
        return iter(())
    cuts = np.flatnonzero(np.diff(sorted_lengths)) + 1
    starts = np.concatenate([[0], cuts])
    counts = np.diff(np.concatenate([starts, [n]]))
    return zip(sorted_lengths[starts].tolist(), starts.tolist(), counts.tolist(), strict=True)


class _Fifo:
    """Bin ids waiting at one remaining capacity, oldest first (chunks of numpy arrays)."""

    __slots__ = ("chunks", "head", "size")

    def __init__(self) -> None:
        self.chunks: collections.deque[np.ndarray] = collections.deque()
        self.head = 0
        self.size = 0

    def push(self, bins: np.ndarray) -> None:
        self.chunks.append(bins)
        self.size += bins.size

    def pop(self, count: int) -> np.ndarray:
        out = []
        need = count
        while need:
            first = self.chunks[0]
            take = min(need, first.size - self.head)
            out.append(first[self.head : self.head + take])
            self.head += take
            need -= take
            if self.head == first.size:
                self.chunks.popleft()
                self.head = 0
        self.size -= count
        return out[0] if len(out) == 1 else np.concatenate(out)


def _best_fit(sorted_lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """Best fit over lengths sorted in decreasing order: the bin with the least room that fits."""
    placed = np.empty(sorted_lengths.size, dtype=np.int64)
    waiting: dict[int, _Fifo] = {}
    open_caps: list[int] = []  # sorted remaining capacities that have bins waiting
    n_bins = 0

    def park(cap: int, bins: np.ndarray) -> None:
        if cap <= 0 or bins.size == 0:
            return  # a full bin takes nothing more
        queue = waiting.setdefault(cap, _Fifo())
        if queue.size == 0:
            bisect.insort(open_caps, cap)
        queue.push(bins)

    for length, pos, count in _runs(sorted_lengths):
        while count:
            i = bisect.bisect_left(open_caps, length)
            if i == len(open_caps):  # nothing fits: open new bins
                cap = seq_len
                per_bin = cap // length
                bins = np.arange(n_bins, n_bins + -(-count // per_bin), dtype=np.int64)
                n_bins += bins.size
            else:
                cap = open_caps[i]
                per_bin = cap // length
                queue = waiting[cap]
                bins = queue.pop(min(queue.size, -(-count // per_bin)))
                if queue.size == 0:
                    del open_caps[i]
            used = min(count, bins.size * per_bin)
            placed[pos : pos + used] = np.repeat(bins, per_bin)[:used]
            full, rest = divmod(used, per_bin)
            park(cap - per_bin * length, bins[:full])
            if rest:  # only at the end of a run: the last bin took fewer
                park(cap - rest * length, bins[full : full + 1])
            pos += used
            count -= used
    return placed


def _first_fit(sorted_lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """First fit over lengths sorted in decreasing order: the oldest bin that fits."""
    placed = np.empty(sorted_lengths.size, dtype=np.int64)
    room = np.empty(sorted_lengths.size, dtype=np.int64)  # never more bins than documents
    n_bins = 0
    for length, pos, count in _runs(sorted_lengths):
        fits = np.flatnonzero(room[:n_bins] >= length)
        if fits.size:
            takes = room[fits] // length
            ends = np.cumsum(takes)
            last = int(np.searchsorted(ends, count))
            if last < fits.size:
                fits, takes = fits[: last + 1], takes[: last + 1]
                takes[-1] -= int(ends[last]) - count
            used = int(takes.sum())
            placed[pos : pos + used] = np.repeat(fits, takes)
            room[fits] -= takes * length
            pos += used
            count -= used
        if count:
            per_bin = seq_len // length
            new = -(-count // per_bin)
            placed[pos : pos + count] = np.repeat(np.arange(n_bins, n_bins + new), per_bin)[:count]
            room[n_bins : n_bins + new] = seq_len - per_bin * length
            room[n_bins + new - 1] = seq_len - (count - (new - 1) * per_bin) * length
            n_bins += new
    return placed


def _next_fit(lengths: np.ndarray, seq_len: int) -> np.ndarray:
    bins = np.empty(lengths.size, dtype=np.int64)
    current, room = -1, 0
    for i, length in enumerate(lengths.tolist()):
        if length > room:
            current, room = current + 1, seq_len
        room -= length
        bins[i] = current
    return bins


# --------------------------------------------------------------------------- results


@dataclass
class PackedSplit:
    """The packed sequences of one split, as a plan over the input's token buffers."""

    name: str
    seq_len: int
    token_ids: np.ndarray  # int32, every input token (input order)
    token_labels: np.ndarray  # int32, aligned with token_ids
    doc_starts: np.ndarray  # int64 per document in sequence order: first kept token
    doc_lens: np.ndarray  # int32 per document in sequence order
    doc_offsets: np.ndarray  # int64, sequences + 1: documents of sequence i
    record_ids: pa.Array  # string per document in sequence order
    supervised_tokens: int
    wrap: dict[str, int] | None = None  # wrap only: documents, split ones, EOS added, last chunk

    @property
    def sequences(self) -> int:
        return self.doc_offsets.size - 1

    @property
    def documents(self) -> int:
        return int(self.doc_lens.size)

    @property
    def tokens(self) -> int:
        return int(self.doc_lens.sum())

    @property
    def efficiency(self) -> float:
        capacity = self.sequences * self.seq_len
        return self.tokens / capacity if capacity else 0.0

    def batches(
        self, rows: int, begin: int = 0, end: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Flat arrays for ``rows`` sequences at a time, as `ShardWriter.add_packed` takes them."""
        end = self.sequences if end is None else end
        for first in range(begin, end, rows):
            last = min(first + rows, end)
            d0, d1 = int(self.doc_offsets[first]), int(self.doc_offsets[last])
            lens = self.doc_lens[d0:d1]
            small = self.token_ids.size < 2**31
            gather = _ranges(self.doc_starts[d0:d1], lens, np.int32 if small else np.int64)
            doc_offsets = self.doc_offsets[first : last + 1] - d0
            seq_lens = np.add.reduceat(lens.astype(np.int64), doc_offsets[:-1])
            yield {
                "input_ids": self.token_ids[gather],
                "labels": self.token_labels[gather],
                "seq_offsets": np.concatenate([[0], np.cumsum(seq_lens)]),
                "doc_lens": lens,
                "doc_offsets": doc_offsets,
                "record_ids": self.record_ids.slice(d0, d1 - d0),
            }


@dataclass
class PackReport:
    rows_in: int = 0
    rows_packed: int = 0
    rows_truncated: int = 0
    supervised_tokens_lost: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason kind -> rows

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())


@dataclass
class PackResult:
    seq_len: int
    strategy: str
    truncation: str
    tokenizer: dict[str, Any]
    template: dict[str, Any] | None
    input_fingerprint: str
    splits: dict[str, PackedSplit]
    dropped: pl.DataFrame  # the dropped input rows with a `reason` column
    report: PackReport
    warnings: list[str] = field(default_factory=list)
    cross_doc_attention: bool = False

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.get("pad_id")
        return int(self.eos_id if pad is None else pad)

    @property
    def eos_id(self) -> int | None:
        eos = self.tokenizer.get("eos_id")
        return None if eos is None else int(eos)

    def _wrap_manifest(self) -> dict[str, Any]:
        if self.strategy != "wrap":
            return {}
        return {
            "cross_doc_attention": self.cross_doc_attention,
            "wrap": {name: dict(split.wrap or {}) for name, split in self.splits.items()},
        }

    def manifest(self) -> dict[str, Any]:
        """Everything manifest.json holds except the per-split file lists and counts."""
        from .. import __version__

        tok = self.tokenizer
        report = self.report
        return {
            "created_by": f"sftdata {__version__}",
            "seq_len": self.seq_len,
            "pad_id": self.pad_id,
            "eos_id": self.eos_id,
            "label_pad": LABEL_PAD,
            "tokenizer": {k: tok.get(k) for k in ("backend", "name", "vocab_size", "vocab_hash")},
            "template": self.template,
            "packing": {
                "strategy": self.strategy,
                "truncation": None if self.strategy == "wrap" else self.truncation,
                "rows_in": report.rows_in,
                "rows_packed": report.rows_packed,
                "rows_truncated": report.rows_truncated,
                "supervised_tokens_lost": report.supervised_tokens_lost,
                "rows_dropped": dict(sorted(report.dropped.items())),
                **self._wrap_manifest(),
            },
            "input_fingerprint": self.input_fingerprint,
        }


def _window_sums(mask: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """mask[start:stop].sum() for windows in buffer order (each ends before the next begins),
    without a cumulative array the size of the input."""
    out = np.zeros(starts.size, dtype=np.int64)
    nonempty = stops > starts
    if not nonempty.any():
        return out
    bounds = np.empty(2 * int(nonempty.sum()), dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts[nonempty], stops[nonempty]
    if bounds[-1] >= mask.size:
        bounds = bounds[:-1]  # reduceat runs the last window to the end by itself
    # even positions sum a window; odd ones the gap before the next window (ignored)
    # int32 sums (a window is one document, < 2**31 tokens) run twice as fast as int64
    out[nonempty] = np.add.reduceat(mask.view(np.uint8), bounds, dtype=np.int32)[0::2]
    return out


def _ranges(starts: np.ndarray, lens: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """Concatenation of arange(s, s + l) for every (s, l), without a Python loop.

    One cumulative sum over steps of 1, with a jump where each range begins. ``dtype`` int32
    halves the memory traffic when every index fits.
    """
    keep = lens > 0
    starts, lens = starts[keep].astype(np.int64), lens[keep].astype(np.int64)
    total = int(lens.sum())
    steps = np.ones(total, dtype=dtype)
    if total == 0:
        return steps
    out_starts = np.cumsum(lens) - lens
    steps[0] = starts[0]
    steps[out_starts[1:]] = starts[1:] - (starts[:-1] + lens[:-1]) + 1
    return np.cumsum(steps, out=steps)


# --------------------------------------------------------------------------- the op


def pack(
    frame: pl.DataFrame,
    seq_len: int = 2048,
    strategy: str = "bfd",
    truncation: str = "right",
    source: str | None = None,
    cross_doc_attention: bool = False,
) -> PackResult:
    """Pack tokenized records (columns of docs/pipeline.md) into sequences of ``seq_len``.

    ``source`` names the input in error messages. One set of sequences per value of ``split``
    (``train`` when the column is absent or empty). ``truncation`` does not apply to ``wrap``
    (nothing is cut); ``cross_doc_attention`` applies to ``wrap`` only.

    Two halves: :func:`prepare` (checks, truncation and drop reasons, row-local) and
    :func:`pack_splits` (the packing of every split, global); engines run them apart
    (sftdata/engines/pack.py).
    """
    prep = prepare(frame, seq_len, strategy, truncation, source, cross_doc_attention)
    splits, emptied = pack_splits(prep)
    warnings = prep.warnings + [
        f"split {name!r}: every row was dropped, no shards written for it" for name in emptied
    ]
    return PackResult(
        seq_len=seq_len,
        strategy=strategy,
        truncation=truncation,
        tokenizer=prep.tokenizer,
        template=prep.template,
        input_fingerprint=prep.fingerprint(),
        splits=splits,
        dropped=prep.dropped,
        report=prep.report,
        warnings=warnings,
        cross_doc_attention=cross_doc_attention,
    )


@dataclass
class Prepared:
    """The row-local half of pack over one frame: the checked token buffers, every row's kept
    window [start, start + kept) and whether it is packed, the report and the dropped rows."""

    seq_len: int
    strategy: str
    tokenizer: dict[str, Any]
    template_identity: dict[str, Any] | None  # as the rows give it (compared across parts)
    template: dict[str, Any] | None  # with its text resolved, for the manifest
    warnings: list[str]
    offsets: np.ndarray  # int64, rows + 1
    ids: np.ndarray  # int32
    labels: np.ndarray  # int32
    record_ids: pa.Array
    split_names: np.ndarray  # object, per row
    is_text: np.ndarray  # bool, per row
    start: np.ndarray  # int64, per row
    kept: np.ndarray  # int64, per row
    keep: np.ndarray  # bool, per row
    supervised_kept: np.ndarray  # int64, per row
    report: PackReport
    dropped: pl.DataFrame

    def fingerprint(self) -> str:
        return _fingerprint(self.offsets, self.ids, self.labels != LABEL_PAD, self.record_ids)


def prepare(
    frame: pl.DataFrame,
    seq_len: int = 2048,
    strategy: str = "bfd",
    truncation: str = "right",
    source: str | None = None,
    cross_doc_attention: bool = False,
) -> Prepared:
    """Checks, truncation and drop reasons of :func:`pack`, row by row (no packing)."""
    if seq_len < 1:
        raise UsageProblem(f"--seq-len must be at least 1, got {seq_len}")
    if strategy not in STRATEGIES:
        raise UsageProblem(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if truncation not in TRUNCATIONS:
        raise UsageProblem(f"--truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    if cross_doc_attention and strategy != "wrap":
        raise UsageProblem("--cross-doc-attention applies to --strategy wrap only")
    wrap = strategy == "wrap"
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"not tokenized records: missing column(s) {', '.join(missing)}", file=source,
            fix=TOKENIZE_FIX,
        )
    if frame.height == 0:
        raise DataError("no records to pack", file=source, fix="check the input is not empty")
    warnings: list[str] = []
    tokenizer = _one_identity(frame, "tokenizer", source)
    template = template_identity = None
    if "template" in frame.columns:
        template_identity = _one_identity(frame, "template", source)
        template = _with_template_text(template_identity, warnings)
    else:
        warnings.append("no `template` column: the manifest records no chat template")
    if tokenizer.get("eos_id") is None:
        raise DataError(
            "the tokenizer has no eos_id", file=source, field="tokenizer",
            fix="tokenize with a tokenizer that defines an end-of-sequence token",
        )
    if tokenizer.get("pad_id") is None:
        warnings.append(
            "the tokenizer has no pad token: pad_id = eos_id (padding is never trained, "
            "so EOS keeps its labels)"
        )

    offsets, ids, labels = _token_buffers(frame, tokenizer, source)
    record_ids = _record_ids(frame, source)
    split_names = _split_names(frame, source)
    is_text = (  # raw text rows end with their template's end-of-text already (render-template)
        (frame["task"].cast(pl.String) == "text").fill_null(False).to_numpy()
        if "task" in frame.columns else np.zeros(frame.height, dtype=bool)
    )

    lengths = np.diff(offsets)
    trained = labels != LABEL_PAD
    supervised = _window_sums(trained, offsets[:-1], offsets[1:])

    # truncation: the kept window [start, start + kept) of every document
    too_long = (lengths > seq_len) & (not wrap)  # wrap cuts documents into chunks instead
    start = offsets[:-1].copy()
    kept = lengths if wrap else np.minimum(lengths, seq_len)
    reasons = np.full(frame.height, None, dtype=object)
    kinds = np.full(frame.height, None, dtype=object)
    if too_long.any():
        first = int(np.flatnonzero(too_long)[0])
        if truncation == "fail":
            raise DataError(
                f"record {record_ids[first].as_py()!r} has {int(lengths[first])} tokens, "
                f"longer than --seq-len {seq_len} ({int(too_long.sum())} rows are)",
                file=source, row=first + 1, field="input_ids",
                fix="raise --seq-len, tokenize with --max-len, or pick --truncation right|left|drop",
            )
        if truncation == "drop":
            for i in np.flatnonzero(too_long).tolist():
                kinds[i] = "too_long"
                reasons[i] = (
                    f"{int(lengths[i])} tokens, longer than --seq-len {seq_len} (--truncation drop)"
                )
        elif truncation == "left":  # keep the end of the conversation
            start[too_long] = offsets[1:][too_long] - seq_len
    cut = too_long & (truncation in ("right", "left"))
    supervised_kept = _window_sums(trained, start, start + kept) if cut.any() else supervised
    lost = supervised - supervised_kept
    for i in np.flatnonzero((kinds == None) & (supervised_kept == 0)).tolist():  # noqa: E711
        if lengths[i] == 0:
            kinds[i], reasons[i] = "empty", "no tokens"
        elif cut[i]:
            kinds[i] = "no_supervised_after_truncation"
            reasons[i] = (
                f"no supervised token left after --truncation {truncation} to {seq_len} tokens "
                f"({int(supervised[i])} lost)"
            )
        else:
            kinds[i], reasons[i] = "no_supervised", "no supervised token (every label is -100)"
    keep = kinds == None  # noqa: E711

    report = PackReport(
        rows_in=frame.height,
        rows_packed=int(keep.sum()),
        rows_truncated=int((cut & keep).sum()),
        supervised_tokens_lost=int(lost[cut & keep].sum()),
        dropped=dict(collections.Counter(k for k in kinds.tolist() if k is not None)),
    )
    dropped = frame.filter(pl.Series(~keep)).with_columns(
        pl.Series("reason", reasons[~keep].tolist(), dtype=pl.String)
    )
    return Prepared(
        seq_len=seq_len, strategy=strategy, tokenizer=tokenizer,
        template_identity=template_identity, template=template, warnings=warnings,
        offsets=offsets, ids=ids, labels=labels, record_ids=record_ids, split_names=split_names,
        is_text=is_text, start=start, kept=kept, keep=keep, supervised_kept=supervised_kept,
        report=report, dropped=dropped,
    )


def pack_splits(prep: Prepared) -> tuple[dict[str, PackedSplit], list[str]]:
    """The packed sequences of every split of ``prep``, and the splits whose rows were all
    dropped (no sequences)."""
    seq_len, keep, kept, start = prep.seq_len, prep.keep, prep.kept, prep.start
    splits, emptied = {}, []
    for name in _ordered(set(prep.split_names.tolist())):
        rows = np.flatnonzero(keep & (prep.split_names == name))
        if rows.size == 0:
            emptied.append(name)
            continue
        if prep.strategy == "wrap":
            splits[name] = _wrap_split(name, seq_len, rows, prep.offsets, prep.ids, prep.labels,
                                       prep.record_ids, int(prep.tokenizer["eos_id"]),
                                       prep.is_text[rows])
            continue
        bins = pack_lengths(kept[rows], seq_len, prep.strategy)
        docs = rows[np.argsort(bins, kind="stable")]  # sequence by sequence, input order inside
        per_seq = np.bincount(bins)
        splits[name] = PackedSplit(
            name=name,
            seq_len=seq_len,
            token_ids=prep.ids,
            token_labels=prep.labels,
            doc_starts=start[docs],
            doc_lens=kept[docs].astype(np.int32),
            doc_offsets=np.concatenate([[0], np.cumsum(per_seq)]),
            record_ids=prep.record_ids.take(pa.array(docs)),
            supervised_tokens=int(prep.supervised_kept[rows].sum()),
        )
    return splits, emptied


def combine(preps: list[Prepared]) -> Prepared:
    """Consecutive parts of one input as one :class:`Prepared`, the same as if the whole input
    had been prepared at once (the caller compares the parts' identities first); warnings are
    kept once each, in order."""
    if len(preps) == 1:
        return preps[0]
    first = preps[0]
    tokens = np.cumsum([0] + [p.ids.size for p in preps])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in preps])

    return Prepared(
        seq_len=first.seq_len, strategy=first.strategy, tokenizer=first.tokenizer,
        template_identity=first.template_identity, template=first.template,
        warnings=list(dict.fromkeys(w for p in preps for w in p.warnings)),
        offsets=np.concatenate([[0]] + [p.offsets[1:] + t for p, t in zip(preps, tokens[:-1],
                                                                           strict=True)]),
        ids=cat("ids"), labels=cat("labels"),
        record_ids=pa.concat_arrays([p.record_ids for p in preps]),
        split_names=cat("split_names"), is_text=cat("is_text"),
        start=np.concatenate([p.start + t for p, t in zip(preps, tokens[:-1], strict=True)]),
        kept=cat("kept"), keep=cat("keep"), supervised_kept=cat("supervised_kept"),
        report=merge_reports([p.report for p in preps]),
        dropped=pl.concat([p.dropped for p in preps], how="diagonal_relaxed"),
    )


def merge_reports(reports: list[PackReport]) -> PackReport:
    """The report of consecutive parts of one input (counts add up)."""
    out = PackReport()
    for r in reports:
        out.rows_in += r.rows_in
        out.rows_packed += r.rows_packed
        out.rows_truncated += r.rows_truncated
        out.supervised_tokens_lost += r.supervised_tokens_lost
        for kind, n in r.dropped.items():
            out.dropped[kind] = out.dropped.get(kind, 0) + n
    return out


def wrap_stream(
    rows: np.ndarray, offsets: np.ndarray, ids: np.ndarray, labels: np.ndarray, eos_id: int,
    ended: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The documents ``rows`` concatenated in order, an EOS after each that does not end with
    one (trained when the document's last token is): (ids, labels, document end offsets in the
    stream, EOS added). ``ended`` marks documents that end with a separator of their own (raw
    text: the template's end-of-text token, which may differ from EOS): none is added there."""
    starts, ends = offsets[rows], offsets[rows + 1]
    gather = _ranges(starts, ends - starts)
    stream_ids, stream_labels = ids[gather], labels[gather]
    doc_ends = np.cumsum(ends - starts)
    needs = ids[ends - 1] != eos_id  # documents are never empty here (dropped before)
    if ended is not None:
        needs &= ~ended
    if needs.any():
        at = doc_ends[needs]
        eos_labels = np.where(labels[ends - 1][needs] != LABEL_PAD, eos_id, LABEL_PAD)
        stream_ids = np.insert(stream_ids, at, np.int32(eos_id))
        stream_labels = np.insert(stream_labels, at, eos_labels.astype(np.int32))
        doc_ends = doc_ends + np.cumsum(needs)
    return stream_ids, stream_labels, doc_ends, int(needs.sum())


def _wrap_split(
    name: str, seq_len: int, rows: np.ndarray, offsets: np.ndarray, ids: np.ndarray,
    labels: np.ndarray, record_ids: pa.Array, eos_id: int, ended: np.ndarray,
) -> PackedSplit:
    """One split as a wrapped stream cut into chunks; a chunk's 'documents' are the pieces of
    the documents that lie in it (a document crossing a chunk boundary gives one per chunk)."""
    stream_ids, stream_labels, doc_ends, eos_added = wrap_stream(
        rows, offsets, ids, labels, eos_id, ended
    )
    total = int(doc_ends[-1])
    chunk_ends = np.arange(seq_len, total, seq_len, dtype=np.int64)
    bounds = np.union1d(doc_ends, chunk_ends)  # every piece ends at one or both
    piece_starts = np.concatenate([[0], bounds[:-1]])
    piece_lens = bounds - piece_starts
    piece_doc = np.searchsorted(doc_ends, piece_starts, side="right")
    piece_chunk = piece_starts // seq_len
    per_chunk = np.bincount(piece_chunk, minlength=-(-total // seq_len))
    pieces_per_doc = np.bincount(piece_doc, minlength=rows.size)
    return PackedSplit(
        name=name,
        seq_len=seq_len,
        token_ids=stream_ids,
        token_labels=stream_labels,
        doc_starts=piece_starts,
        doc_lens=piece_lens.astype(np.int32),
        doc_offsets=np.concatenate([[0], np.cumsum(per_chunk)]),
        record_ids=record_ids.take(pa.array(rows[piece_doc])),
        supervised_tokens=int((stream_labels != LABEL_PAD).sum()),
        wrap={
            "documents": int(rows.size),
            "documents_split": int((pieces_per_doc > 1).sum()),
            "eos_added": eos_added,
            "tokens": total,
            "last_chunk_tokens": total - (per_chunk.size - 1) * seq_len,
        },
    )


# --------------------------------------------------------------------------- input checks


def _one_identity(frame: pl.DataFrame, column: str, source: str | None) -> dict[str, Any]:
    """The single tokenizer/template identity all rows share, parsed from its JSON."""
    values = frame[column].cast(pl.String)
    if values.null_count():
        row = int(values.is_null().arg_max())
        raise DataError(f"{column} is null", file=source, row=row + 1, field=column, fix=TOKENIZE_FIX)
    first: Any = None
    for text in values.unique(maintain_order=True).to_list():
        row = int((values == text).arg_max())
        try:
            identity = json.loads(text)
        except json.JSONDecodeError:
            raise DataError(
                f"{column} is not JSON", file=source, row=row + 1, field=column, fix=TOKENIZE_FIX
            ) from None
        if first is None:
            first = identity
        elif identity != first:  # the same identity with keys in another order is fine
            what = "tokenizers" if column == "tokenizer" else "chat templates"
            raise DataError(
                f"rows disagree on the {column}: row 1 has {_describe(first)}, "
                f"this row has {_describe(identity)}",
                file=source, row=row + 1, field=column,
                fix=f"pack records made with one tokenizer and one template; do not mix {what}",
            )
    return dict(first) if isinstance(first, dict) else {"name": str(first)}


def _describe(identity: Any) -> str:
    if not isinstance(identity, dict):
        return repr(identity)
    digest = identity.get("vocab_hash") or identity.get("hash") or ""
    return f"{identity.get('name')!r} ({str(digest)[:12]})"


def _with_template_text(template: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """Add the template's source text, resolved through sftdata.templates and checked by hash."""
    from ..shards import text_hash

    out = {k: template.get(k) for k in ("name", "spec", "hash")}
    text = template.get("text")
    if text is None:
        text = _resolve_template_text(template.get("spec"))
    if text is not None and template.get("hash") not in (None, text_hash(text)):
        warnings.append(
            f"template {template.get('name')!r}: the text found for spec {template.get('spec')!r} "
            "does not match the hash the records were rendered with; the manifest keeps name and "
            "hash only"
        )
        text = None
    elif text is None:
        warnings.append(
            f"template {template.get('name')!r}: its text could not be resolved from spec "
            f"{template.get('spec')!r}; the manifest keeps name and hash only"
        )
    out["text"] = text
    if out["hash"] is None and text is not None:
        out["hash"] = text_hash(text)
    return out


def _resolve_template_text(spec: Any) -> str | None:
    """The template source through sftdata.templates (built-in name, file or directory)."""
    if not isinstance(spec, str) or not spec:
        return None
    from ..templates import TemplateError, load_template

    try:
        return load_template(spec).text
    except (TemplateError, OSError, ValueError):  # gone or changed: only the text is lost
        return None


def _list_buffers(series: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(offsets int64, values, row validity) of a list column, without a Python loop."""
    arr = series.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise TypeError(f"expected a list column, got {arr.type}")
    valid = None if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    base = offsets[0]
    return offsets - base, values[base : offsets[-1]], valid


def _token_buffers(
    frame: pl.DataFrame, tokenizer: dict[str, Any], source: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets and int32 values of input_ids and labels, checked against each other."""
    bufs = {}
    for column in ("input_ids", "labels"):
        try:
            offsets, values, valid = _list_buffers(frame[column])
        except TypeError as exc:
            raise DataError(str(exc), file=source, field=column, fix=TOKENIZE_FIX) from None
        if valid is not None:
            raise DataError(
                f"{column} is null", file=source, row=int(np.argmin(valid)) + 1, field=column,
                fix=TOKENIZE_FIX,
            )
        if values.size and not np.issubdtype(values.dtype, np.integer):  # nulls or floats
            raise DataError(f"{column} must hold integers", file=source, field=column)
        bufs[column] = (offsets, values)
    offsets, ids = bufs["input_ids"]
    label_offsets, labels = bufs["labels"]
    if not np.array_equal(offsets, label_offsets):
        row = int(np.flatnonzero(np.diff(offsets) != np.diff(label_offsets))[0])
        raise DataError(
            f"labels has {int(label_offsets[row + 1] - label_offsets[row])} values for "
            f"{int(offsets[row + 1] - offsets[row])} tokens",
            file=source, row=row + 1, field="labels", fix="labels must have one value per token",
        )
    # (no upper bound: vocab_size counts tokens, and tiktoken's special ids lie beyond it)
    if ids.size and ids.min() < 0:
        at = int(np.flatnonzero(ids < 0)[0])
        row = int(np.searchsorted(offsets, at, side="right") - 1)
        raise DataError(
            f"token id {int(ids[at])} is negative", file=source, row=row + 1, field="input_ids",
            fix="tokenize again; token ids are never negative",
        )
    for lo in range(0, ids.size, CHECK_CHUNK):  # in chunks: no input-sized temporaries
        chunk_ids, chunk_labels = ids[lo : lo + CHECK_CHUNK], labels[lo : lo + CHECK_CHUNK]
        misaligned = (chunk_labels != LABEL_PAD) & (chunk_labels != chunk_ids)
        if not misaligned.any():
            continue
        at = lo + int(np.flatnonzero(misaligned)[0])
        row = int(np.searchsorted(offsets, at, side="right") - 1)
        raise DataError(
            f"label {int(labels[at])} at token {at - int(offsets[row])} is neither -100 nor the "
            f"token id {int(ids[at])}",
            file=source, row=row + 1, field="labels",
            fix="labels must be unshifted: the token's own id where trained, -100 elsewhere",
        )
    return offsets, ids.astype(np.int32, copy=False), labels.astype(np.int32, copy=False)


def _record_ids(frame: pl.DataFrame, source: str | None) -> pa.Array:
    ids = frame["id"].cast(pl.String)
    if ids.null_count():
        raise DataError(
            "id is null", file=source, row=int(ids.is_null().arg_max()) + 1, field="id",
            fix="give every record an id (`sftdata convert` does)",
        )
    arr = ids.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.string())


def _split_names(frame: pl.DataFrame, source: str | None) -> np.ndarray:
    if "split" not in frame.columns or frame["split"].null_count() == frame.height:
        return np.full(frame.height, DEFAULT_SPLIT, dtype=object)
    splits = frame["split"].cast(pl.String)
    if splits.null_count():
        raise DataError(
            "split is null while other rows have one", file=source,
            row=int(splits.is_null().arg_max()) + 1, field="split",
            fix="assign every row a split (`sftdata split`) or drop the split column",
        )
    bad = splits.filter(~splits.str.contains(SPLIT_NAME))
    if bad.len():
        raise DataError(
            f"split {bad[0]!r} cannot name a shard directory", file=source,
            row=int((splits == bad[0]).arg_max()) + 1, field="split",
            fix="use letters, digits, '_', '-' and '.' only (train, val, test, gold, ...)",
        )
    return np.asarray(splits.to_list(), dtype=object)


def _ordered(names: set[str]) -> list[str]:
    known = [n for n in SPLIT_ORDER if n in names]
    return known + sorted(names - set(SPLIT_ORDER))


def _fingerprint(offsets: np.ndarray, ids: np.ndarray, trained: np.ndarray, record_ids: pa.Array) -> str:
    """sha256 of the tokenized input in order (the same for JSONL, Parquet or Arrow input).

    Labels are checked to be the token id or -100, so ids plus one bit per token (trained or
    not) determine them: hashing the bits instead of the labels halves the bytes hashed.
    """
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(offsets, dtype="<i8"))
    h.update(np.ascontiguousarray(ids, dtype="<i4"))
    h.update(np.packbits(trained))
    id_offsets = np.frombuffer(record_ids.buffers()[1], dtype=np.int32)
    id_offsets = id_offsets[record_ids.offset : record_ids.offset + len(record_ids) + 1]
    h.update((id_offsets - id_offsets[0]).astype("<i8"))
    data = record_ids.buffers()[2]
    if data is not None:
        h.update(memoryview(data)[id_offsets[0] : id_offsets[-1]])
    return h.hexdigest()


class StreamFingerprint:
    """:func:`_fingerprint` of an input given as consecutive parts, equal to the digest of the
    whole: the row offsets are hashed as they come (they lead the hashed bytes), the other
    streams (ids, trained flags, record ids) wait in temporary files until the last part, so
    memory holds one part at a time."""

    def __init__(self) -> None:
        import tempfile

        self._hash = hashlib.sha256(np.zeros(1, dtype="<i8"))  # the first offset
        self._files = [tempfile.TemporaryFile() for _ in range(4)]  # ids, flags, id offs, ids
        self._tokens = 0
        self._id_bytes = 0

    def add(self, offsets: np.ndarray, ids: np.ndarray, trained: np.ndarray,
            record_ids: pa.Array) -> None:
        ids_f, flags_f, id_off_f, id_data_f = self._files
        self._hash.update(np.ascontiguousarray(offsets[1:] + self._tokens, dtype="<i8"))
        self._tokens += int(offsets[-1])
        ids_f.write(np.ascontiguousarray(ids, dtype="<i4"))
        flags_f.write(np.ascontiguousarray(trained, dtype=np.uint8))
        id_offsets = np.frombuffer(record_ids.buffers()[1], dtype=np.int32)
        id_offsets = id_offsets[record_ids.offset : record_ids.offset + len(record_ids) + 1]
        id_off_f.write((id_offsets[1:] - id_offsets[0] + self._id_bytes).astype("<i8"))
        self._id_bytes += int(id_offsets[-1] - id_offsets[0])
        data = record_ids.buffers()[2]
        if data is not None:
            id_data_f.write(memoryview(data)[id_offsets[0] : id_offsets[-1]])

    def hexdigest(self, chunk: int = 1 << 24) -> str:
        ids_f, flags_f, id_off_f, id_data_f = self._files
        for f in self._files:
            f.seek(0)
        while block := ids_f.read(chunk):
            self._hash.update(block)
        while block := flags_f.read(chunk * 8):  # whole bytes of bits until the last block
            self._hash.update(np.packbits(np.frombuffer(block, dtype=np.uint8).astype(bool)))
        self._hash.update(np.zeros(1, dtype="<i8"))  # the first record id offset
        for f in (id_off_f, id_data_f):
            while block := f.read(chunk):
                self._hash.update(block)
        for f in self._files:
            f.close()
        return self._hash.hexdigest()
