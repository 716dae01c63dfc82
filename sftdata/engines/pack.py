"""pack over units: every unit prepared (checks, truncation, drop reasons) where it is read.

bfd, ffd and --no-pack: each unit is also packed where it is (ops.pack.pack_splits over the
unit's rows), and the driver appends the units' sequences to the shards in unit order, cutting
files at --rows-per-file as the local engine does. The driver holds one unit's tokens at a time.
--no-pack gives the local engine's shards byte for byte (one document per sequence, input
order); bfd and ffd place documents in the bins of their own unit only, so a unit ends with its
own partly filled bins: the bins differ from the local engine's, the tokens, labels and
documents do not (docs/engines.md gives the measured efficiency).

wrap: one stream per split, so its chunk boundaries are those of the whole input: the units'
prepared buffers are joined on the driver in input order (ops.pack.combine) and cut there, the
same chunks as the local engine; the driver holds every kept token (8 bytes a token).

The manifest's input fingerprint is the local engine's: the driver hashes each unit's buffers
as they arrive (ops.pack.StreamFingerprint, spilling to temporary files what is hashed after
the offsets), so the same input gives the same fingerprint on either engine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ..errors import DataError
from ..ops import pack as op
from ..shards import LABEL_PAD, ShardWriter

REFILL_BELOW = 0.99  # a unit's sequences fuller than this are written as the unit packed them
POOL_SEQUENCES = 4096  # loose sequences held (per split) before they are packed again


def _prepare_unit(frame: pl.DataFrame, unit: Any, source: str, options: dict) -> Any:
    """One unit prepared and, except for wrap, packed (runs on a worker)."""
    if frame is None or frame.height == 0:
        return None
    name = unit.name if unit.part is not None else source
    prep = op.prepare(frame, source=name, **options)
    if options["strategy"] == "wrap":
        return prep, None
    splits, _ = op.pack_splits(prep)
    return prep, splits  # plans over prep's buffers: the tokens travel once


def pack(engine: Any, units: list, out_dir: Path, *, source: str, rows_per_file: int,
         **options: Any) -> tuple[op.PackResult, dict[str, dict]]:
    """(the result without its sequences, the manifest entry of every split written)."""
    fingerprint = op.StreamFingerprint()
    first: tuple[Any, op.Prepared] | None = None
    wrapped: list[op.Prepared] = []
    reports, dropped, warnings, seen = [], [], [], set()
    writers: dict[str, _Appender] = {}
    for unit, item in zip(units, engine.map(units, _prepare_unit, source, options), strict=True):
        if item is None:
            continue
        prep, batches = item
        if first is None:
            first = (unit, _without_buffers(prep))  # the identities, not the tokens
        else:
            _same_identities(first, unit, prep, source)
        fingerprint.add(prep.offsets, prep.ids, prep.labels != LABEL_PAD, prep.record_ids)
        seen.update(prep.split_names.tolist())
        if batches is None:  # wrap: joined below
            wrapped.append(prep)
            continue
        reports.append(prep.report)
        dropped.append(prep.dropped)
        warnings.extend(prep.warnings)
        for name, packed in batches.items():
            if name not in writers:
                writers[name] = _Appender(ShardWriter(out_dir, name, rows_per_file), rows_per_file,
                                          prep.seq_len, prep.strategy)
            for batch in packed.batches(rows_per_file):  # a file's worth of tokens at a time
                writers[name].add(batch)
        # let this unit's tokens go before the next unit is read (local engine: in this process)
        item = prep = batches = packed = None
    if first is None:
        raise DataError("no records to pack", file=source, fix="check the input is not empty")
    prep = first[1]
    splits: dict[str, Any] = {}
    if wrapped:
        whole = op.combine(wrapped)
        reports, dropped, warnings = [whole.report], [whole.dropped], whole.warnings
        splits, _ = op.pack_splits(whole)
        for name, packed in splits.items():
            writer = _Appender(ShardWriter(out_dir, name, rows_per_file), rows_per_file,
                               prep.seq_len, "wrap")
            for batch in packed.batches(rows_per_file):
                writer.add(batch)
            writers[name] = writer
    warnings = list(dict.fromkeys(warnings))
    written = {}
    for name in op._ordered(seen):
        if name in writers:
            written[name] = writers[name].close()
        else:
            warnings.append(f"split {name!r}: every row was dropped, no shards written for it")
    result = op.PackResult(
        seq_len=prep.seq_len, strategy=prep.strategy, truncation=options["truncation"],
        tokenizer=prep.tokenizer, template=prep.template,
        input_fingerprint=fingerprint.hexdigest(), splits=splits,
        dropped=pl.concat(dropped, how="diagonal_relaxed"),
        report=op.merge_reports(reports), warnings=warnings,
        cross_doc_attention=options["cross_doc_attention"],
    )
    return result, written


def _without_buffers(prep: op.Prepared) -> op.Prepared:
    """``prep`` with no rows: what later units are compared with and the manifest is made from,
    without holding the first unit's tokens to the end."""
    none = np.zeros(0, dtype=np.int64)
    return replace(
        prep, offsets=np.zeros(1, dtype=np.int64), ids=none.astype(np.int32),
        labels=none.astype(np.int32), record_ids=pa.array([], type=pa.string()),
        split_names=none.astype(object), is_text=none.astype(bool), start=none, kept=none,
        keep=none.astype(bool), supervised_kept=none, dropped=prep.dropped.clear(),
    )


def _same_identities(first: tuple[Any, op.Prepared], unit: Any, prep: op.Prepared,
                     source: str) -> None:
    """Every unit was packed with one tokenizer and one template (as ops.pack checks rows)."""
    first_unit, first_prep = first
    for column, a, b in (("tokenizer", first_prep.tokenizer, prep.tokenizer),
                         ("template", first_prep.template_identity, prep.template_identity)):
        if a != b:
            what = "tokenizers" if column == "tokenizer" else "chat templates"
            name = first_unit.name if first_unit.part is not None else source
            raise DataError(
                f"rows disagree on the {column}: {name}, row {first_unit.first_row + 1} has "
                f"{op._describe(a)}, this row has {op._describe(b)}",
                file=unit.name if unit.part is not None else source, row=unit.first_row + 1,
                field=column,
                fix=f"pack records made with one tokenizer and one template; do not mix {what}")


class _Appender:
    """Sequences of one split appended a unit at a time; files of exactly ``rows`` sequences
    (the last one shorter), as the local engine cuts them.

    bfd and ffd: a unit's sequences less than REFILL_BELOW full (its last, partly filled bins)
    are not written yet: their documents wait in a pool and are packed again, by the same
    strategy, with those of the other units: when the pool holds POOL_SEQUENCES sequences
    (the fuller ones are written then, the least full half a pool stays) and at the end. So
    the unit boundaries cost little efficiency (docs/engines.md), and the driver holds at most
    one unit and POOL_SEQUENCES x seq_len tokens per split."""

    def __init__(self, writer: ShardWriter, rows: int, seq_len: int, strategy: str) -> None:
        self.writer, self.rows, self.seq_len = writer, rows, seq_len
        self.strategy = strategy if strategy in ("bfd", "ffd") else None
        self.pending: list[dict[str, Any]] = []
        self.count = 0
        self.pool: list[dict[str, Any]] = []
        self.pooled = 0

    def add(self, batch: dict[str, Any]) -> None:
        if self.strategy is not None:
            fill = np.diff(batch["seq_offsets"]) / self.seq_len
            loose = np.flatnonzero(fill < REFILL_BELOW)
            if loose.size:
                self.pool.append(_take(batch, loose))
                self.pooled += loose.size
                batch = _take(batch, np.flatnonzero(fill >= REFILL_BELOW))
            if self.pooled >= POOL_SEQUENCES:
                self._refill(final=False)
        self._append(batch)

    def _refill(self, final: bool) -> None:
        """The pooled documents packed again; the sequences still under REFILL_BELOW stay
        pooled unless this is the end."""
        packed = _repack(_concat(self.pool), self.seq_len, self.strategy)
        self.pool, self.pooled = [], 0
        if final:
            self._append(packed)
            return
        fill = np.diff(packed["seq_offsets"]) / self.seq_len
        loose = np.flatnonzero(fill < REFILL_BELOW)
        # at most half a pool stays (the least full), so a refill comes after at least half a
        # pool of new sequences: linear time, bounded memory
        loose = np.sort(loose[np.argsort(fill[loose], kind="stable")][:POOL_SEQUENCES // 2])
        done = np.ones(fill.size, dtype=bool)
        done[loose] = False
        self._append(_take(packed, np.flatnonzero(done)))
        if loose.size:
            self.pool, self.pooled = [_take(packed, loose)], loose.size

    def _append(self, batch: dict[str, Any]) -> None:
        n = len(batch["seq_offsets"]) - 1
        if n == 0:
            return
        self.pending.append(batch)
        self.count += n
        if self.count < self.rows:
            return
        whole = _concat(self.pending)
        full = self.count // self.rows * self.rows
        self.writer.add_packed(**_slice(whole, 0, full))
        self.count -= full
        self.pending = [_slice(whole, full, full + self.count)] if self.count else []

    def close(self) -> dict[str, Any]:
        if self.pool:
            self._refill(final=True)
        if self.count:
            self.writer.add_packed(**_concat(self.pending))
        return self.writer.close(self.seq_len)


def _take(batch: dict[str, Any], seqs: np.ndarray) -> dict[str, Any]:
    """The sequences ``seqs`` (increasing) of a batch, as a batch."""
    seq, doc = batch["seq_offsets"], batch["doc_offsets"]
    tok_lens, doc_counts = np.diff(seq)[seqs], np.diff(doc)[seqs]
    tokens = op._ranges(seq[:-1][seqs], tok_lens)
    docs = op._ranges(doc[:-1][seqs], doc_counts)
    return {"input_ids": batch["input_ids"][tokens], "labels": batch["labels"][tokens],
            "seq_offsets": np.concatenate([[0], np.cumsum(tok_lens)]),
            "doc_lens": batch["doc_lens"][docs],
            "doc_offsets": np.concatenate([[0], np.cumsum(doc_counts)]),
            "record_ids": batch["record_ids"].take(pa.array(docs, type=pa.int64()))}


def _repack(batch: dict[str, Any], seq_len: int, strategy: str) -> dict[str, Any]:
    """The documents of a batch packed again into new sequences (ops.pack.pack_lengths); in
    a sequence, documents keep the order they had in the batch."""
    lens = batch["doc_lens"].astype(np.int64)
    bins = op.pack_lengths(lens, seq_len, strategy)
    order = np.argsort(bins, kind="stable")
    starts = np.cumsum(lens) - lens
    tokens = op._ranges(starts[order], lens[order])
    per_seq = np.bincount(bins)
    tok_per_seq = np.bincount(bins, weights=lens).astype(np.int64)
    return {"input_ids": batch["input_ids"][tokens], "labels": batch["labels"][tokens],
            "seq_offsets": np.concatenate([[0], np.cumsum(tok_per_seq)]),
            "doc_lens": batch["doc_lens"][order],
            "doc_offsets": np.concatenate([[0], np.cumsum(per_seq)]),
            "record_ids": batch["record_ids"].take(pa.array(order, type=pa.int64()))}


def _slice(batch: dict[str, Any], first: int, last: int) -> dict[str, Any]:
    seq, doc = batch["seq_offsets"], batch["doc_offsets"]
    t0, t1, d0, d1 = int(seq[first]), int(seq[last]), int(doc[first]), int(doc[last])
    return {"input_ids": batch["input_ids"][t0:t1], "labels": batch["labels"][t0:t1],
            "seq_offsets": seq[first:last + 1] - t0, "doc_lens": batch["doc_lens"][d0:d1],
            "doc_offsets": doc[first:last + 1] - d0,
            "record_ids": batch["record_ids"].slice(d0, d1 - d0)}


def _concat(batches: list[dict[str, Any]]) -> dict[str, Any]:
    if len(batches) == 1:
        return batches[0]
    tokens = np.cumsum([0] + [b["input_ids"].size for b in batches])
    docs = np.cumsum([0] + [b["doc_lens"].size for b in batches])

    def offsets(key: str, base: np.ndarray) -> np.ndarray:
        return np.concatenate([[0]] + [b[key][1:] - b[key][0] + s
                                       for b, s in zip(batches, base[:-1], strict=True)])

    return {"input_ids": np.concatenate([b["input_ids"] for b in batches]),
            "labels": np.concatenate([b["labels"] for b in batches]),
            "seq_offsets": offsets("seq_offsets", tokens),
            "doc_lens": np.concatenate([b["doc_lens"] for b in batches]),
            "doc_offsets": offsets("doc_offsets", docs),
            "record_ids": pa.concat_arrays([b["record_ids"].cast(pa.string())
                                            for b in batches])}
