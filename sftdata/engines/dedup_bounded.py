"""dedup within a memory budget on the local engine: the answer of ops/dedup.py, reading the
input a unit at a time (engines/bounded.py) instead of holding it.

Three passes over the units, with the signatures spilled to disk in between:
  1 features  per unit: exact key (16 B), empty flag, keep score (8 B) kept in memory; the
              MinHash signature written to one scratch file per band (band-major, so a band
              is read back as one contiguous array)
  2 global    exact stage over the keys (ops.dedup._exact_stage); per band, the band's values
              of the alive rows memory-mapped and bucketed (minhash.band_pairs); candidate
              pairs made unique
  3 verify    the units read again: the sorted distinct shingle hashes of the candidate rows
              written to a scratch file, and the ids of every row some dropped row leaves for;
              the exact Jaccard of each candidate from the memory-mapped sets (with
              ``approx``: the estimate from the band files); union-find (ops.dedup)
  4 output    the units read a third time, each giving its kept rows and dupes by the same
              ops.dedup.Outcome as the whole-frame path

Memory: about 40 bytes a row for the whole input (keys, flags, scores, representatives,
similarities), one unit's frame and features, one band of the alive rows (rows x 4 bytes + 24
bytes a row while bucketing) and the candidate pairs (16 bytes each). The signatures
(num_perm x 4 bytes a row) and the candidates' shingle sets live in the scratch directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from .. import minhash
from ..datasets import Unit, read_unit, rebase
from ..errors import DataError
from ..ops import dedup as op
from .bounded import aligned, union_columns


def dedup(
    units: list[Unit], spill: Path, *, mode: str = "both", on: str = "conversation",
    threshold: float = 0.8, num_perm: int = 128, ngram: int = 3, unit: str = "word",
    punctuation: bool = False, approx: bool = False, keep: str = "first", seed: int = 1,
    workers: int | None = None, read: Callable[[Unit], pl.DataFrame] = read_unit,
    progress: Callable = lambda items, **_: items,
) -> op.DedupResult:
    """ops.dedup.dedup over ``units``; ``result.parts`` yields (kept, dupes) per unit, in input
    order, and must be consumed while ``spill`` exists. ``progress(items, desc=...)`` wraps
    each pass (a bar on a terminal)."""
    workers = workers or minhash.default_workers()
    exact, near = mode in ("exact", "both"), mode in ("near", "both")
    result = op.DedupResult(pl.DataFrame(), pl.DataFrame(), 0, 0, 0, 0, 0)
    bands, rows = op.banding(result, threshold, num_perm, approx) if near else (0, 0)
    groups = _column_groups(num_perm, bands, rows) if near else []
    f = _features(units, spill, groups, read, progress, mode=mode, on=on, threshold=threshold,
                  num_perm=num_perm, ngram=ngram, unit=unit, punctuation=punctuation,
                  keep=keep, seed=seed, workers=workers, exact=exact, near=near)
    n = f.rows
    result.rows_in, result.not_compared = n, int(f.empty.sum())
    rank = op.rank_of(f.scores, n)
    exact_rep = op._exact_stage(f.keys, f.empty, rank) if exact else np.arange(n)
    del f.keys
    near_rep, similarity = np.arange(n), np.ones(n)
    pairs = np.empty((0, 2), dtype=np.int64)
    if near:
        alive = np.flatnonzero((exact_rep == np.arange(n)) & ~f.empty)
        pairs = _candidates(spill, groups[:bands], alive, n, progress)
        result.candidate_pairs = len(pairs)
    candidates = np.unique(pairs)
    needed = np.union1d(candidates, exact_rep[exact_rep != np.arange(n)])
    ids, sets = _second_pass(units, spill, f.starts, candidates, needed, read, on=on,
                             ngram=ngram, unit=unit, punctuation=punctuation,
                             want_sets=near and not approx, progress=progress)
    if near and len(pairs):
        if approx:
            sigs_of = _signature_reader(spill, groups, n)
            pairs = op.estimated_pairs(pairs, sigs_of, threshold, result)
            moved = op.cluster_pairs(pairs, rank, near_rep)
            if moved.size:
                est = op.estimated_jaccard_of(sigs_of, np.stack([moved, near_rep[moved]], axis=1))
                similarity[moved] = est
        else:
            with sets:
                pairs = op.verified_pairs(pairs, sets, threshold, result)
                moved = op.cluster_pairs(pairs, rank, near_rep)
                similarity[moved] = op.exact_similarity(moved, near_rep, sets)
    outcome = op.Outcome(exact_rep, near_rep, similarity)
    outcome.count(result)
    result.parts = _output(units, f, outcome, needed, ids, read, progress)
    return result


# --------------------------------------------------------------------------- 1 features


class _Features:
    def __init__(self) -> None:
        self.rows = 0
        self.starts: list[int] = []  # each unit's first row in the input
        self.keys = self.empty = self.scores = None
        self.columns = pl.DataFrame()  # empty frame of the union of the units' columns


def _column_groups(num_perm: int, bands: int, rows: int) -> list[tuple[int, int]]:
    """The signature columns of each band file, then any left over (the estimate reads all)."""
    groups = [(b * rows, (b + 1) * rows) for b in range(bands)]
    if bands * rows < num_perm:
        groups.append((bands * rows, num_perm))
    return groups


def _features(units: list[Unit], spill: Path, groups: list[tuple[int, int]],
              read: Callable[[Unit], pl.DataFrame], progress: Callable, *, exact: bool, near: bool,
              workers: int, **opts) -> _Features:
    f = _Features()
    keys, empty, scores, heads = [], [], [], []
    seen_keep = opts["keep"] in ("first", "longest")
    files = [open(spill / f"sig-{a}-{b}.u32", "wb") for a, b in groups]
    try:
        for u in progress(units, desc="dedup: signatures"):
            frame = _read(u, read)
            keep = _check(frame, opts)
            seen_keep = seen_keep or keep != "first"
            heads.append(frame.head(0))
            f.starts.append(f.rows)
            f.rows += frame.height
            lengths = []
            for start in range(0, frame.height, op.CHUNK_ROWS):
                texts = op.view_texts(frame.slice(start, op.CHUNK_ROWS), opts["on"])
                key_bytes, chunk_empty, chunk_lengths, sigs, _, _ = op.chunk_features(
                    texts, exact, near, opts["punctuation"], opts["num_perm"], opts["ngram"],
                    opts["unit"], opts["seed"], workers)
                if exact:
                    keys.append(np.frombuffer(key_bytes, dtype=np.uint64).reshape(-1, 2))
                empty.append(chunk_empty)
                lengths.append(chunk_lengths)
                for fh, (a, b) in zip(files, groups, strict=True):
                    fh.write(np.ascontiguousarray(sigs[:, a:b]).tobytes())
            lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
            if opts["keep"] == "first":
                continue
            if keep == "first":  # a unit without the column: nulls once concatenated
                scores.append(np.full(frame.height, -np.inf))
            else:
                scores.append(op.keep_scores(frame, lengths, keep))
    finally:
        for fh in files:
            fh.close()
    f.keys = np.concatenate(keys) if keys else np.zeros((f.rows, 2), dtype=np.uint64)
    f.empty = np.concatenate(empty) if empty else np.zeros(0, dtype=bool)
    f.scores = np.concatenate(scores) if opts["keep"] != "first" and scores else None
    f.columns = union_columns(heads)
    if not seen_keep:  # in no unit: the whole-frame op's error
        op._check_arguments(f.columns, opts["mode"], opts["on"], opts["threshold"],
                            opts["num_perm"], opts["ngram"], opts["unit"], opts["keep"])
    return f


def _check(frame: pl.DataFrame, opts: dict) -> str:
    """ops.dedup's argument checks on one unit; returns the keep policy for this unit: a keep
    column some unit lacks is null there, as in the concatenated frame ("first" here)."""
    keep = opts["keep"]
    if keep not in op.KEEP_POLICIES and keep not in frame.columns:
        keep = "first"
    op._check_arguments(frame, opts["mode"], opts["on"], opts["threshold"], opts["num_perm"],
                        opts["ngram"], opts["unit"], keep)
    return keep


def _read(u: Unit, read: Callable[[Unit], pl.DataFrame]) -> pl.DataFrame:
    try:
        return read(u)
    except DataError as exc:
        raise rebase(exc, u) from None


# --------------------------------------------------------------------------- 2 candidates


def _band(spill: Path, group: tuple[int, int], n: int) -> np.ndarray:
    a, b = group
    return np.memmap(spill / f"sig-{a}-{b}.u32", dtype=np.uint32, mode="r", shape=(n, b - a))


def _candidates(spill: Path, bands: list[tuple[int, int]], alive: np.ndarray, n: int,
                progress: Callable) -> np.ndarray:
    """Unique (lo, hi) global rows sharing a band: minhash.candidate_pairs, one band in memory."""
    if alive.size < 2:
        return np.empty((0, 2), dtype=np.int64)
    parts = []
    for group in progress(bands, desc="dedup: bands"):
        values = np.ascontiguousarray(_band(spill, group, n)[alive])
        lo, hi = minhash.band_pairs(values)
        parts.append((alive[lo], alive[hi]))  # alive is ascending: lo < hi stays so
        del values
    return minhash.unique_pairs(parts, n)


def _signature_reader(spill: Path, groups: list[tuple[int, int]], n: int) -> Callable:
    """The signatures of given rows, one band file mapped at a time: a gather of scattered rows
    touches most pages of a file, and pages of a live mapping count as the process's memory."""

    def sigs_of(rows: np.ndarray) -> np.ndarray:
        parts = []
        for group in groups:
            band = _band(spill, group, n)
            parts.append(band[rows])
            del band
        return np.concatenate(parts, axis=1)

    return sigs_of


# --------------------------------------------------------------------------- 3 verify


class _Sets:
    """Sorted distinct shingle hashes of the candidate rows, read from the scratch file when
    asked for (positioned reads, not a mapping: the page cache holds the file, the process
    only the sets in use)."""

    def __init__(self, rows: np.ndarray, offsets: np.ndarray, path: Path) -> None:
        self.rows, self.offsets, self.path = rows, offsets, path
        self.fd: int | None = None

    def __enter__(self) -> _Sets:
        import os

        self.fd = os.open(self.path, os.O_RDONLY)
        return self

    def __exit__(self, *_: object) -> None:
        import os

        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __getitem__(self, row: int) -> np.ndarray:
        import os

        k = int(np.searchsorted(self.rows, row))
        start, stop = int(self.offsets[k]), int(self.offsets[k + 1])
        data = os.pread(self.fd, (stop - start) * 8, start * 8)
        return np.frombuffer(data, dtype=np.uint64)


def _second_pass(
    units: list[Unit], spill: Path, starts: list[int], candidates: np.ndarray,
    needed: np.ndarray, read: Callable[[Unit], pl.DataFrame], *, on: str, ngram: int,
    unit: str, punctuation: bool, want_sets: bool, progress: Callable,
) -> tuple[pl.Series, _Sets | None]:
    """The ids of the ``needed`` rows and, with ``want_sets``, the candidates' shingle sets."""
    if needed.size == 0:
        return pl.Series("id", [], dtype=pl.String), None
    ids: list[pl.Series] = []
    counts = np.zeros(candidates.size, dtype=np.int64)
    path = spill / "sets.u64"
    with open(path, "wb") as out:
        for u, start in progress(list(zip(units, starts, strict=True)), desc="dedup: verify"):
            frame = _read(u, read)
            stop = start + frame.height
            here = needed[(needed >= start) & (needed < stop)] - start
            ids.append(compact(frame["id"].cast(pl.String).gather(here)))
            if not want_sets:
                continue
            lo, hi = np.searchsorted(candidates, [start, stop])
            local = candidates[lo:hi] - start
            sets = op._shingle_sets(frame, on, local, ngram, unit, punctuation)
            for k, row in enumerate(local.tolist()):
                out.write(sets[row].tobytes())
                counts[lo + k] = sets[row].size
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return pl.concat(ids), (_Sets(candidates, offsets, path) if want_sets else None)


# --------------------------------------------------------------------------- 4 output


def _output(units: list[Unit], f: _Features, outcome: op.Outcome, needed: np.ndarray,
            ids: pl.Series, read: Callable[[Unit], pl.DataFrame], progress: Callable,
            ) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    def ids_of(rows: np.ndarray) -> pl.Series:
        return ids.gather(np.searchsorted(needed, rows))

    for u, start in progress(list(zip(units, f.starts, strict=True)), desc="dedup: write"):
        frame = aligned(_read(u, read), f.columns)
        kept, dupes = outcome.part(frame, start, ids_of)
        del frame
        yield kept, compact(dupes)


def compact(data):
    """A copy of a few rows that no longer holds the buffers of the frame they were taken from
    (a Polars gather shares its source's string buffers: the dupes of every unit, waiting in the
    writer for a part to fill, would otherwise keep every unit's frame alive)."""
    return pl.from_arrow(data.to_arrow())
