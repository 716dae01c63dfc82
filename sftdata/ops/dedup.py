"""Drop exact and near-duplicate records; every dropped row says which record it duplicates.

Two stages, each optional (``mode``):
  exact  records whose chosen view is identical after normalization (NFKC, case folding,
         whitespace; punctuation optionally) are one cluster;
  near   MinHash LSH over the survivors of the exact stage, then union-find over the pairs that
         reach the threshold (so similarity is transitive inside a cluster). By default the
         banding is chosen for recall (:func:`sftdata.minhash.recall_bands`: a pair at Jaccard
         threshold + 0.05 becomes a candidate with probability >= 0.99) and every candidate is
         checked by its exact Jaccard (64-bit hashes of its shingles), so the threshold means
         what it says: no pair below it is merged, and pairs above it are found.
         ``approx=True`` is the cheap approximate mode: datasketch's banding for the threshold
         and the Jaccard estimated from the signatures (misses pairs near the threshold and may
         merge pairs somewhat below it).
One record per cluster is kept by the ``keep`` policy (first, longest, or the highest value of a
numeric column; ties go to the earliest row). Kept rows leave in input order with their columns
unchanged, so running dedup on its own output drops nothing.

Records whose view is empty (e.g. ``on="prompt"`` for records without a prompt) are never
compared: they are kept and counted in ``DedupResult.not_compared``.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b

import numpy as np
import polars as pl

from .. import minhash
from ..errors import UsageProblem
from ..text import VIEWS, normalize_series, view_expr

MODES = ("exact", "near", "both")
KEEP_POLICIES = ("first", "longest")
DUPE_COLUMNS = {
    "cluster_id": pl.Int64(),
    "kept_id": pl.String(),
    "similarity": pl.Float64(),
    "reason": pl.String(),
}
CHUNK_ROWS = 16384  # views per bulk pass: big enough for Polars' threads, small in memory
KEEP_SHINGLES = 1 << 25  # shingle hashes (256 MiB) kept from the first pass for the exact check


@dataclass
class DedupResult:
    kept: pl.DataFrame  # the input's kept rows, input order, columns unchanged
    dupes: pl.DataFrame  # dropped rows + cluster_id, kept_id, similarity, reason
    rows_in: int
    dropped_exact: int
    dropped_near: int
    clusters: int  # clusters that lost at least one row
    not_compared: int  # rows with an empty view, kept without comparison
    bands: int = 0
    rows_per_band: int = 0
    candidate_pairs: int = 0
    rejected_pairs: int = 0  # candidates below the threshold (exact Jaccard; estimated with approx)
    recall_at: float = 0.0  # the Jaccard for which the banding was chosen (recall_bands)
    candidate_probability: float = 0.0  # P(candidate) of a pair at that Jaccard under the banding
    kept_rows: int = 0
    parts: object = None  # (kept, dupes) frames per piece, from engines that read in pieces

    @property
    def dropped(self) -> int:
        return self.dropped_exact + self.dropped_near


def dedup(
    df: pl.DataFrame,
    *,
    mode: str = "both",
    on: str = "conversation",
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 3,
    unit: str = "word",
    punctuation: bool = False,
    approx: bool = False,
    keep: str = "first",
    seed: int = 1,
    workers: int | None = None,
) -> DedupResult:
    """Drop exact and near-duplicate records (see the module docstring for the rules)."""
    _check_arguments(df, mode, on, threshold, num_perm, ngram, unit, keep)
    n = df.height
    near = mode in ("near", "both")
    if workers is None:
        workers = minhash.default_workers()

    f = _features(df, on, mode in ("exact", "both"), near, punctuation, num_perm, ngram, unit,
                  seed, workers)
    keys, empty, lengths, sigs = f.keys, f.empty, f.lengths, f.sigs
    rank = _keep_rank(df, lengths, keep)
    result = DedupResult(df, df.head(0), n, 0, 0, 0, int(empty.sum()))
    # exact_rep[i]: the row i is an exact copy of (i itself if none); near_rep likewise for the
    # near stage, which sees only exact representatives; similarity[i]: i versus near_rep[i].
    exact_rep = np.arange(n)
    near_rep = np.arange(n)
    similarity = np.ones(n)
    if mode in ("exact", "both"):
        exact_rep = _exact_stage(keys, empty, rank)
    if near:
        alive = np.flatnonzero((exact_rep == np.arange(n)) & ~empty)
        _near_stage(df, f, alive, rank, near_rep, similarity, result,
                    on=on, threshold=threshold, approx=approx, ngram=ngram, unit=unit,
                    punctuation=punctuation)
    del sigs, keys, f  # the largest arrays go before the output frames are built
    return _assemble(df, exact_rep, near_rep, similarity, result)


def _check_arguments(
    df: pl.DataFrame, mode: str, on: str, threshold: float, num_perm: int, ngram: int,
    unit: str, keep: str,
) -> None:
    problems = []
    missing = [c for c in ("id", "messages") if c not in df.columns]
    if missing:
        problems.append(
            f"not a record table: missing column(s) {', '.join(missing)}; "
            "run it through `sftdata convert` first"
        )
    if mode not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if on not in VIEWS:
        problems.append(f"on must be one of {', '.join(VIEWS)}, got {on!r}")
    if not 0.0 < threshold <= 1.0:
        problems.append(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1:
        problems.append(f"num_perm must be at least 1, got {num_perm}")
    if ngram < 1:
        problems.append(f"ngram must be at least 1, got {ngram}")
    if unit not in minhash.UNITS:
        problems.append(f"unit must be one of {', '.join(minhash.UNITS)}, got {unit!r}")
    if keep not in KEEP_POLICIES:
        if keep not in df.columns:
            problems.append(
                f"--keep {keep}: no such column; use first, longest or a numeric column "
                f"({', '.join(numeric_columns(df)) or 'the input has none'})"
            )
        elif not df.schema[keep].is_numeric():
            problems.append(
                f"--keep {keep}: column is {df.schema[keep]}, not numeric; use first, longest "
                f"or a numeric column ({', '.join(numeric_columns(df)) or 'the input has none'})"
            )
    if problems:
        raise UsageProblem("; ".join(problems))


def numeric_columns(df: pl.DataFrame) -> list[str]:
    return [name for name, dtype in df.schema.items() if dtype.is_numeric()]


# --------------------------------------------------------------------------- features


@dataclass
class Features:
    keys: np.ndarray  # (n, 2) uint64 exact keys (zeros when the exact stage is off)
    empty: np.ndarray  # normalized view is empty
    lengths: np.ndarray  # view length in characters
    sigs: np.ndarray | None  # (n, num_perm) uint32
    # every row's shingle hashes, kept for the exact check when they fit KEEP_SHINGLES
    hashes: np.ndarray | None = None
    offsets: np.ndarray | None = None  # row i's hashes: hashes[offsets[i]:offsets[i + 1]]


def chunk_features(
    texts: pl.Series, exact: bool, near: bool, punctuation: bool, num_perm: int, ngram: int,
    unit: str, seed: int, threads: int = 1,
) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """One pass over a chunk of view texts: 16-byte exact keys, empty flags, lengths, signatures
    and the shingle hashes behind them (flat, with a count per text).

    Normalizing once serves both stages; normalization, word finding and shingle hashing run
    in bulk (Polars and numpy), not per shingle in Python.
    """
    texts = texts.cast(pl.String).fill_null("")
    norms = normalize_series(texts, strip_punctuation=punctuation)
    keys = b""
    if exact:
        keys = b"".join([blake2b(s.encode("utf-8"), digest_size=16).digest() for s in norms])
    empty = (norms.str.len_bytes() == 0).to_numpy()
    lengths = texts.str.len_chars().to_numpy().astype(np.int64)
    sigs = hashes = counts = None
    if near:
        hashes, counts = minhash.shingle_hash_batch(norms, ngram, unit)
        sigs = minhash.hashed_signatures(hashes, counts, num_perm, seed, threads)
    return keys, empty, lengths, sigs, hashes, counts


def view_texts(df: pl.DataFrame, on: str) -> pl.Series:
    return df.select(view_expr(on)).to_series()


def _features(
    df: pl.DataFrame, on: str, exact: bool, near: bool, punctuation: bool, num_perm: int,
    ngram: int, unit: str, seed: int, workers: int,
) -> Features:
    """Exact keys, empty flags, view lengths, signatures, and the shingle hashes if they fit.

    Views are built a chunk at a time, so only one chunk's view strings exist at once (the
    whole view column of 1M documents would double the frame's memory). ``workers`` threads
    share the permutations; Polars uses its own thread pool for the rest.
    """
    n = df.height
    f = Features(np.zeros((n, 2), dtype=np.uint64), np.zeros(n, dtype=bool),
                 np.zeros(n, dtype=np.int64),
                 np.empty((n, num_perm), dtype=np.uint32) if near else None)
    kept: list[np.ndarray] | None = [] if near else None
    counts_all = np.zeros(n, dtype=np.int64)
    for start in range(0, n, CHUNK_ROWS):
        key_bytes, empty, lengths, sigs, hashes, counts = chunk_features(
            view_texts(df.slice(start, CHUNK_ROWS), on), exact, near, punctuation, num_perm,
            ngram, unit, seed, workers,
        )
        stop = start + empty.shape[0]
        if exact:
            f.keys[start:stop] = np.frombuffer(key_bytes, dtype=np.uint64).reshape(-1, 2)
        f.empty[start:stop] = empty
        f.lengths[start:stop] = lengths
        if near:
            f.sigs[start:stop] = sigs
            counts_all[start:stop] = counts
            if kept is not None:
                kept.append(hashes)
                if sum(map(len, kept)) > KEEP_SHINGLES:
                    kept = None  # too many to hold: the exact check re-derives its rows' shingles
    if kept is not None:
        f.hashes = np.concatenate(kept) if kept else np.empty(0, dtype=np.uint64)
        f.offsets = np.concatenate([[0], np.cumsum(counts_all)])
    return f


def _keep_rank(df: pl.DataFrame, lengths: np.ndarray, keep: str) -> np.ndarray:
    """rank[i] < rank[j] when row i is preferred; ties always go to the earlier row."""
    return rank_of(keep_scores(df, lengths, keep), df.height)


def keep_scores(df: pl.DataFrame, lengths: np.ndarray, keep: str) -> np.ndarray | None:
    """The value the keep policy maximizes for each row (None for ``first``)."""
    if keep == "first":
        return None
    if keep == "longest":
        return lengths.astype(np.float64)
    return df[keep].cast(pl.Float64).fill_nan(None).fill_null(-np.inf).to_numpy()


def rank_of(score: np.ndarray | None, n: int) -> np.ndarray:
    """Ranks from keep scores: highest score first, ties (and ``first``) in input order."""
    if score is None or n == 0:
        return np.arange(n)
    order = np.lexsort((np.arange(n), -score))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def _best_of_groups(labels: np.ndarray, members: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each member, the best-ranked member with the same label."""
    order = np.lexsort((rank[members], labels))
    sorted_labels = labels[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    group_of = np.cumsum(first) - 1
    winners = members[order][first]
    best = np.empty(len(members), dtype=np.int64)
    best[order] = winners[group_of]
    return best


# --------------------------------------------------------------------------- stages


def _exact_stage(keys: np.ndarray, empty: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each row, the preferred row with the same normalized view (itself when unique)."""
    rep = np.arange(keys.shape[0])
    members = np.flatnonzero(~empty)
    if members.size == 0:
        return rep
    k = keys[members]
    order = np.lexsort((k[:, 1], k[:, 0]))
    sorted_k = k[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = np.any(sorted_k[1:] != sorted_k[:-1], axis=1)
    labels = np.empty(len(order), dtype=np.int64)
    labels[order] = np.cumsum(new) - 1
    rep[members] = _best_of_groups(labels, members, rank)
    return rep


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def clusters_from_pairs(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over index pairs: a cluster label (a member's index) for each of 0..n-1."""
    uf = UnionFind(n)
    for a, b in pairs.tolist():
        uf.union(a, b)
    return np.array([uf.find(i) for i in range(n)], dtype=np.int64)


def _near_stage(
    df: pl.DataFrame, f: Features, alive: np.ndarray, rank: np.ndarray,
    near_rep: np.ndarray, similarity: np.ndarray, result: DedupResult, *, on: str, threshold: float,
    approx: bool, ngram: int, unit: str, punctuation: bool,
) -> None:
    """Cluster the ``alive`` rows by MinHash LSH; fill near_rep and similarity for them."""
    sigs = f.sigs
    bands, rows = banding(result, threshold, sigs.shape[1], approx)
    if alive.size < 2:
        return
    pairs = alive[minhash.candidate_pairs(sigs[alive], bands, rows)]  # global row indices
    result.candidate_pairs = len(pairs)
    sets: dict[int, np.ndarray] = {}
    if not approx and len(pairs):
        rows = np.unique(pairs)
        if f.hashes is not None:
            sets = {r: np.unique(f.hashes[f.offsets[r] : f.offsets[r + 1]]) for r in rows.tolist()}
        else:
            sets = _shingle_sets(df, on, rows, ngram, unit, punctuation)
        pairs = verified_pairs(pairs, sets, threshold, result)
    elif len(pairs):
        pairs = estimated_pairs(pairs, lambda r: sigs[r], threshold, result)
    moved = cluster_pairs(pairs, rank, near_rep)
    if not approx:
        similarity[moved] = exact_similarity(moved, near_rep, sets)
    else:
        similarity[moved] = (sigs[moved] == sigs[near_rep[moved]]).mean(axis=1)


def banding(result: DedupResult, threshold: float, num_perm: int, approx: bool) -> tuple[int, int]:
    """(bands, rows) of the LSH, recorded with the recall they give in ``result``."""
    if approx:
        bands, rows = minhash.optimal_bands(threshold, num_perm)
    else:
        bands, rows = minhash.recall_bands(threshold, num_perm)
    result.bands, result.rows_per_band = bands, rows
    result.recall_at = round(minhash.recall_target(threshold), 6)
    result.candidate_probability = minhash.candidate_probability(result.recall_at, bands, rows)
    return bands, rows


def verified_pairs(pairs: np.ndarray, sets, threshold: float, result: DedupResult) -> np.ndarray:
    """The candidate pairs whose exact Jaccard (``sets[row]``: sorted distinct shingle hashes)
    reaches the threshold; the others are counted in ``result.rejected_pairs``."""
    exact = np.array([minhash.hashed_jaccard(sets[i], sets[j]) for i, j in pairs.tolist()])
    result.rejected_pairs = int((exact < threshold).sum())
    return pairs[exact >= threshold]


def estimated_pairs(pairs: np.ndarray, sigs_of, threshold: float, result: DedupResult) -> np.ndarray:
    """The candidate pairs whose MinHash-estimated Jaccard reaches the threshold.

    Sharing a band only makes a pair a candidate (M13): its Jaccard estimated from the whole
    signatures (``sigs_of(rows)``) must reach the threshold too, as datasketch and text-dedup
    check.
    """
    estimate = estimated_jaccard_of(sigs_of, pairs)
    result.rejected_pairs = int((estimate < threshold).sum())
    return pairs[estimate >= threshold]


def cluster_pairs(pairs: np.ndarray, rank: np.ndarray, near_rep: np.ndarray) -> np.ndarray:
    """Union-find over the verified pairs; each member's near_rep becomes its cluster's best row.
    Returns the rows that moved (their near_rep is another row)."""
    if len(pairs) == 0:
        return np.empty(0, dtype=np.int64)
    members = np.unique(pairs)
    position = np.searchsorted(members, pairs)  # union-find over the rows that have a pair
    labels = clusters_from_pairs(members.size, position)
    best = _best_of_groups(labels, members, rank)
    near_rep[members] = best
    return members[best != members]


def exact_similarity(moved: np.ndarray, near_rep: np.ndarray, sets) -> list[float]:
    return [minhash.hashed_jaccard(sets[i], sets[near_rep[i]]) for i in moved.tolist()]


def estimated_jaccard(sigs: np.ndarray, pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """The MinHash estimate of each pair's Jaccard: the share of equal signature values."""
    return estimated_jaccard_of(lambda rows: sigs[rows], pairs, chunk)


def estimated_jaccard_of(sigs_of, pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """:func:`estimated_jaccard` with the signatures of given rows from ``sigs_of(rows)``."""
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), chunk):
        a, b = pairs[start : start + chunk, 0], pairs[start : start + chunk, 1]
        out[start : start + chunk] = (sigs_of(a) == sigs_of(b)).mean(axis=1)
    return out


def _shingle_sets(
    df: pl.DataFrame, on: str, rows: np.ndarray, ngram: int, unit: str, punctuation: bool
) -> dict[int, np.ndarray]:
    """Sorted distinct 64-bit shingle hashes of the given rows (those of :func:`chunk_features`)."""
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(rows), CHUNK_ROWS):
        part = rows[start : start + CHUNK_ROWS]
        norms = normalize_series(view_texts(df[part], on), strip_punctuation=punctuation)
        hashes, counts = minhash.shingle_hash_batch(norms, ngram, unit)
        out.update(zip(part.tolist(), minhash.distinct_per_text(hashes, counts), strict=True))
    return out


# --------------------------------------------------------------------------- result


def _assemble(
    df: pl.DataFrame, exact_rep: np.ndarray, near_rep: np.ndarray, similarity: np.ndarray,
    result: DedupResult,
) -> DedupResult:
    out = Outcome(exact_rep, near_rep, similarity)
    result.kept, result.dupes = out.part(df, 0, lambda rows: df["id"].gather(rows))
    out.count(result)
    return result


class Outcome:
    """Which row each row leaves for: the kept rows and dupes of any run of rows, so a whole
    frame and a frame read a unit at a time (engines/dedup_bounded.py) give the same output."""

    def __init__(self, exact_rep: np.ndarray, near_rep: np.ndarray, similarity: np.ndarray) -> None:
        rows = np.arange(exact_rep.shape[0])
        self.kept_row = near_rep[exact_rep]  # the row that stays in the output for each row
        self.is_exact = exact_rep != rows
        self.is_near = ~self.is_exact & (near_rep != rows)
        # exact copies share their representative's shingle set, hence its similarity
        self.similarity = similarity[exact_rep]
        self.dropped = np.flatnonzero(self.is_exact | self.is_near)
        # clusters are numbered by their kept row's position, so the numbering is input-ordered
        self.cluster_rows = np.unique(self.kept_row[self.dropped])

    def count(self, result) -> None:
        result.dropped_exact = int(self.is_exact.sum())
        result.dropped_near = int(self.is_near.sum())
        result.clusters = len(self.cluster_rows)
        result.kept_rows = int(self.kept_row.shape[0] - self.dropped.shape[0])

    def part(self, frame: pl.DataFrame, start: int, ids_of) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(kept rows, dupes) of ``frame``, the rows start.. of the input; ``ids_of(rows)``
        gives the ids of kept rows anywhere in the input."""
        stop = start + frame.height
        kept_row = self.kept_row[start:stop]
        here = np.arange(start, stop)
        dropped = np.flatnonzero(kept_row != here)
        keeper = kept_row[dropped]
        kept = frame.filter(pl.Series(kept_row == here))
        dupes = frame[dropped].with_columns(
            pl.Series("cluster_id", np.searchsorted(self.cluster_rows, keeper), dtype=pl.Int64),
            pl.Series("kept_id", ids_of(keeper), dtype=pl.String),
            pl.Series("similarity", self.similarity[start:stop][dropped], dtype=pl.Float64),
            pl.Series("reason", np.where(self.is_exact[start:stop][dropped], "exact", "near"),
                      dtype=pl.String),
        )
        return kept, dupes
