"""MinHash signatures and LSH banding, vectorized with numpy; shared by dedup and leakcheck.

Signatures are bit-for-bit those of ``datasketch.MinHash(num_perm, seed)`` (its default
"affine32" scheme) updated with each shingle's UTF-8 bytes: the same SHA-1 based 32-bit hash,
the same MurmurHash3 pre-mix, the same seeded permutations ``a * h + b mod 2**32``. What
differs is how the work is done: every shingle of a chunk of documents is hashed in one pass,
the permutations are applied to a whole block of shingles as one matrix operation, each
document's minimum is a segmented ``minimum.reduceat``, and large inputs are spread over
processes. Memory stays bounded: only one chunk of shingles lives at a time.

LSH banding (:func:`candidate_pairs`, :func:`cross_pairs`) sorts 64-bit band keys instead of
filling Python dicts; a pair is reported only when its band values are really equal, so a key
collision never invents a candidate.
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from hashlib import blake2b, sha1
from typing import Any, TypeVar

import numpy as np

from .text import normalize, words

T = TypeVar("T")
UNITS = ("word", "char")
MAX_HASH = np.uint32(0xFFFFFFFF)  # an empty MinHash: datasketch's initial value

CHUNK_DOCS = 1024  # documents per unit of work (one pickle to a worker process)
BLOCK_SHINGLES = 8192  # shingles per permutation block: keeps the (num_perm, block) matrix in cache
PARALLEL_MIN_DOCS = 16384  # below this, starting processes (~0.7 s CPU each) costs more than it saves

# MurmurHash3 fmix32 constants, as datasketch's _fmix(hv, 32)
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))


# --------------------------------------------------------------------------- shingles


def shingles(text: str, n: int = 5, unit: str = "word") -> list[str]:
    """Word n-grams (of normalized words) or character n-grams of the normalized text.

    A text shorter than ``n`` gives one shingle, the whole (normalized) text, so the result is
    empty only for an empty text. Repeated n-grams are kept; callers compare them as sets.
    """
    _check_shingle_args(n, unit)
    return [g.decode("utf-8") for g in shingle_bytes(normalize(text), n, unit)]


def _check_shingle_args(n: int, unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if n < 1:
        raise ValueError(f"n-gram size must be at least 1, got {n}")


def shingle_bytes(norm: str, n: int = 5, unit: str = "word") -> list[bytes]:
    """The shingles of already-normalized text as UTF-8 bytes (the hot path of signatures)."""
    if unit == "char":
        if len(norm) <= n:
            return [norm.encode("utf-8")] if norm else []
        return [norm[i : i + n].encode("utf-8") for i in range(len(norm) - n + 1)]
    ws = words(norm)
    if not ws:
        return [norm.encode("utf-8")] if norm else []
    # Words hold no spaces, so one encode + split is much faster than encoding each word.
    wb = " ".join(ws).encode("utf-8").split(b" ")
    if len(wb) <= n:
        return [b" ".join(wb)]
    return list(map(b" ".join, zip(*(wb[k:] for k in range(n)), strict=False)))


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Exact Jaccard similarity of two shingle collections, compared as sets (1.0 when both empty)."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Share of equal signature values: the MinHash estimate of Jaccard similarity."""
    if sig_a.shape != sig_b.shape:
        raise ValueError(f"signatures differ in shape: {sig_a.shape} vs {sig_b.shape}")
    return float(np.count_nonzero(sig_a == sig_b)) / float(sig_a.shape[-1])


# --------------------------------------------------------------------------- signatures


@functools.lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) as datasketch's affine32 scheme draws them: a odd, both uint32, from RandomState(seed)."""
    if num_perm < 1:
        raise ValueError(f"num_perm must be positive, got {num_perm}")
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


def _fmix32(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2 = _FMIX32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s1)


def _hash32(grams: list[bytes]) -> np.ndarray:
    """datasketch's sha1_hash32 of every shingle: the first 4 digest bytes, little-endian."""
    digests = b"".join([sha1(g).digest() for g in grams])
    return np.frombuffer(digests, dtype="<u4")[::5].astype(np.uint32)


def _chunk_signatures(
    texts: Sequence[str], num_perm: int, ngram: int, unit: str, seed: int,
    strip_punctuation: bool = False,
) -> np.ndarray:
    norms = [normalize(t, strip_punctuation=strip_punctuation) for t in texts]
    return normalized_signatures(norms, num_perm, ngram, unit, seed)


def normalized_signatures(
    norms: Sequence[str], num_perm: int, ngram: int, unit: str, seed: int
) -> np.ndarray:
    """uint32 signatures (len(norms), num_perm) of already-normalized texts; empty ones get MAX_HASH.

    For callers that normalize once for several purposes (dedup also hashes the normalized text).
    """
    a, b = permutations(num_perm, seed)
    grams: list[bytes] = []
    counts = np.empty(len(norms), dtype=np.int64)
    for i, norm in enumerate(norms):
        doc = shingle_bytes(norm, ngram, unit)
        counts[i] = len(doc)
        grams.extend(doc)
    out = np.full((len(norms), num_perm), MAX_HASH, dtype=np.uint32)
    if not grams:
        return out
    hashed = _fmix32(_hash32(grams))
    ends = np.cumsum(counts)
    starts = ends - counts
    # Blocks of whole documents, each about BLOCK_SHINGLES shingles, so the permuted matrix
    # stays small; a document longer than a block is a block of its own.
    doc = 0
    while doc < len(norms):
        last = int(np.searchsorted(ends, starts[doc] + BLOCK_SHINGLES, side="right"))
        last = max(last, doc + 1)
        lo, hi = int(starts[doc]), int(ends[last - 1])
        if hi > lo:
            # (num_perm, shingles): each document is a contiguous run along the last axis,
            # which makes the segmented minimum several times faster than the transpose.
            block = np.multiply.outer(a, hashed[lo:hi])
            block += b[:, None]
            present = np.flatnonzero(counts[doc:last]) + doc  # reduceat needs non-empty segments
            out[present] = np.minimum.reduceat(block, starts[present] - lo, axis=1).T
        doc = last
    return out


# --------------------------------------------------------------------------- bulk word shingles
#
# The hot path of `sftdata dedup`: words found and hashed by Polars in Rust (xxhash64 from
# polars-hash, stable across versions), each word n-gram's 64-bit hash combined from its
# words' hashes with numpy, and the permutations applied to whole blocks of shingles. No
# Python object is made per shingle, which is where the byte-joining and sha1 path spends its
# time (about 70% of it on the labelled set). The hashes differ from datasketch's, so these
# signatures are not datasketch's; `signatures` above still is.

_MIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
# Python's str \w (letters, numbers, underscore) in Rust's regex syntax; Rust's own \w also
# takes combining marks and joiners, e.g. a lone emoji variation selector would become a word.
WORD_PATTERN = r"[\p{L}\p{N}_]+"
_NO_WORDS = np.uint64(0x5BD1E9955BD1E995)  # separates a word-less text's hash from n-gram hashes


def _fmix64(h: np.ndarray) -> np.ndarray:
    s, m1, m2 = _MIX64
    h = h ^ (h >> s)
    h = h * m1
    h = h ^ (h >> s)
    h = h * m2
    return h ^ (h >> s)


def _position_terms(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per position in an n-gram: a rotation and an odd multiplier, so word order matters."""
    k = np.arange(n, dtype=np.uint64)
    mult = _fmix64(k + np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    return (k * np.uint64(21)) % np.uint64(64), mult


def _rotl(h: np.ndarray, r) -> np.ndarray:
    r = np.asarray(r, dtype=np.uint64)
    return (h << r) | (h >> ((np.uint64(64) - r) % np.uint64(64)))


def shingle_hash_batch(norms, n: int = 3, unit: str = "word") -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every shingle of every normalized text: (flat hashes, count per text).

    ``norms`` is a Polars string Series (or a list) of normalized texts. Word shingles follow
    :func:`shingle_bytes`: the word n-grams, or for a text of fewer than ``n`` words one
    shingle of all its words, or for a text with no word at all one shingle of the whole text;
    an empty text has none. Repeated shingles are kept (compare them as sets).
    """
    import polars as pl

    _check_shingle_args(n, unit)
    norms = pl.Series("t", norms, dtype=pl.String).fill_null("")
    if unit == "char":  # rare: per shingle in Python, hashed like shingle_hashes
        docs = [shingle_bytes(t, n, unit) for t in norms.to_list()]
        counts = np.array([len(d) for d in docs], dtype=np.int64)
        flat = b"".join([blake2b(g, digest_size=8).digest() for d in docs for g in d])
        return np.frombuffer(flat, dtype=np.uint64).copy(), counts
    import polars_hash as plh

    found = norms.str.extract_all(WORD_PATTERN)
    n_words = found.list.len().fill_null(0).to_numpy().astype(np.int64)
    word_hash = (
        pl.DataFrame({"w": found.explode().drop_nulls()})
        .select(plh.col("w").nchash.xxhash64())
        .to_series()
        .to_numpy()
        .astype(np.uint64)
    )
    rot, mult = _position_terms(n)
    ends = np.cumsum(n_words)
    long_counts = np.maximum(n_words - n + 1, 0)
    if word_hash.size >= n:  # every n-word window, then those crossing a text boundary out
        width = word_hash.size - n + 1
        acc = word_hash[:width] * mult[0]
        term = np.empty_like(acc)
        for k in range(1, n):  # in place: 10M-element temporaries cost more than the math
            if rot[k]:
                np.left_shift(word_hash[k : k + width], rot[k], out=term)
                term |= word_hash[k : k + width] >> (np.uint64(64) - rot[k])
            else:
                term[:] = word_hash[k : k + width]
            term *= mult[k]
            acc += term
        inside = np.ones(width, dtype=bool)
        for k in range(1, n):  # a window starting k words before a text's end crosses it
            cut = ends[:-1] - k
            inside[cut[(cut >= 0) & (cut < width)]] = False
        acc = acc[inside] if not inside.all() else acc
    else:
        acc = np.empty(0, dtype=np.uint64)
    short = (n_words > 0) & (n_words < n)
    wordless = (n_words == 0) & (norms.str.len_bytes().to_numpy() > 0)
    singles = np.flatnonzero(short | wordless)
    if singles.size == 0:
        return _fmix64(acc), long_counts
    # texts of fewer than n words: one shingle of all their words; no words: the whole text
    single_hash = np.empty(singles.size, dtype=np.uint64)
    is_short = short[singles]
    if is_short.any():
        starts = ends - n_words
        sel = np.repeat(short, n_words)
        pos = (np.arange(word_hash.size) - np.repeat(starts, n_words))[sel]
        terms = _rotl(word_hash[sel], rot[pos]) * mult[pos]
        single_hash[is_short] = np.add.reduceat(terms, np.flatnonzero(np.r_[True, pos[1:] == 0]))
    if (~is_short).any():
        whole = (
            pl.DataFrame({"w": norms.gather(singles[~is_short])})
            .select(plh.col("w").nchash.xxhash64())
            .to_series()
            .to_numpy()
            .astype(np.uint64)
        )
        single_hash[~is_short] = whole ^ _NO_WORDS
    counts = long_counts + (short | wordless)
    out = np.empty(int(counts.sum()), dtype=np.uint64)
    at_single = np.zeros(out.size, dtype=bool)
    at_single[(np.cumsum(counts) - counts)[singles]] = True
    out[at_single] = single_hash
    out[~at_single] = acc
    return _fmix64(out), counts.astype(np.int64)


def hashed_signatures(
    hashes: np.ndarray, counts: np.ndarray, num_perm: int, seed: int, threads: int = 1
) -> np.ndarray:
    """uint32 MinHash signatures (len(counts), num_perm) from :func:`shingle_hash_batch`.

    The same affine permutations as :func:`normalized_signatures`, applied to the low 32 bits
    of each (already mixed) 64-bit shingle hash; texts without shingles get MAX_HASH. Blocks
    run on ``threads`` threads: numpy releases the GIL inside the ufuncs.
    """
    a, b = permutations(num_perm, seed)
    out = np.full((len(counts), num_perm), MAX_HASH, dtype=np.uint32)
    if hashes.size == 0:
        return out
    low = hashes.astype(np.uint32)
    ends = np.cumsum(counts)
    starts = ends - counts
    blocks = []
    doc = 0
    while doc < len(counts):
        last = max(int(np.searchsorted(ends, starts[doc] + BLOCK_SHINGLES, side="right")), doc + 1)
        blocks.append((doc, last))
        doc = last

    def run(block: tuple[int, int]) -> None:
        first, last = block
        lo, hi = int(starts[first]), int(ends[last - 1])
        if hi > lo:
            perm = np.multiply.outer(a, low[lo:hi])
            perm += b[:, None]
            present = np.flatnonzero(counts[first:last]) + first
            out[present] = np.minimum.reduceat(perm, starts[present] - lo, axis=1).T

    if threads > 1 and len(blocks) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, blocks))
    else:
        for block in blocks:
            run(block)
    return out


def distinct_per_text(hashes: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Split flat shingle hashes by text into sorted distinct arrays (for exact Jaccard)."""
    if len(counts) == 0:
        return []
    bounds = np.cumsum(counts)[:-1]
    return [np.unique(part) for part in np.split(hashes, bounds)]


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def signature_chunks(
    texts: Iterable[Sequence[str]],
    *,
    num_perm: int = 128,
    ngram: int = 5,
    unit: str = "word",
    seed: int = 1,
    workers: int | None = None,
    strip_punctuation: bool = False,
) -> Iterator[np.ndarray]:
    """Signatures (uint32) for a stream of text chunks, in order, one array per chunk.

    The streaming form of :func:`signatures` for inputs too large to hold as Python strings:
    at most two chunks per worker are in flight. ``workers > 1`` uses that many processes.
    """
    _check_shingle_args(ngram, unit)
    permutations(num_perm, seed)  # validate num_perm before any process starts
    workers = default_workers() if workers is None else workers
    yield from map_chunks(
        _chunk_signatures, texts, num_perm, ngram, unit, seed, strip_punctuation, workers=workers
    )


def map_chunks(
    func: Callable[..., T], chunks: Iterable[Sequence[str]], *args: Any, workers: int = 1
) -> Iterator[T]:
    """``func(chunk, *args)`` for every chunk, in order, over ``workers`` processes.

    At most two chunks per worker are in flight, so a long stream never piles up in memory.
    ``func`` must be a module-level function (it is pickled to the workers).
    """
    if workers <= 1:
        for chunk in chunks:
            yield func(chunk, *args)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    # spawn, not fork: the parent may hold Polars' thread pool, which fork would copy locked.
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        pending: collections.deque[cf.Future] = collections.deque()
        for chunk in chunks:
            pending.append(pool.submit(func, list(chunk), *args))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def signatures(
    texts: Sequence[str],
    *,
    num_perm: int = 128,
    ngram: int = 5,
    unit: str = "word",
    seed: int = 1,
    workers: int | None = None,
) -> np.ndarray:
    """MinHash signatures, shape (len(texts), num_perm), uint64, equal to datasketch's values.

    Each row equals ``datasketch.MinHash(num_perm=num_perm, seed=seed)`` updated with
    ``s.encode("utf-8")`` for every ``s`` in ``shingles(text, ngram, unit)``. Work is spread
    over ``workers`` processes (default: all cores) when there are enough texts to pay for it.
    """
    if workers is None:
        workers = default_workers()
    if len(texts) < PARALLEL_MIN_DOCS:
        workers = 1
    chunks = (texts[i : i + CHUNK_DOCS] for i in range(0, len(texts), CHUNK_DOCS))
    parts = list(
        signature_chunks(chunks, num_perm=num_perm, ngram=ngram, unit=unit, seed=seed,
                         workers=workers)
    )
    if not parts:
        return np.empty((0, num_perm), dtype=np.uint64)
    return np.concatenate(parts).astype(np.uint64)


# --------------------------------------------------------------------------- LSH


@functools.lru_cache(maxsize=64)
def optimal_bands(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted false-positive and false-negative areas.

    The same search and integrals as datasketch's ``MinHashLSH._optimal_param``, so an index
    built here and one built by datasketch for the same threshold use the same banding.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be positive, got {num_perm}")
    from scipy.integrate import quad

    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp, _ = quad(lambda s, b=b, r=r: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)
            fn, _ = quad(lambda s, b=b, r=r: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)
            error = fp * fp_weight + fn * fn_weight
            if error < best:
                best, opt = error, (b, r)
    return opt


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """P(a pair at this Jaccard shares at least one band): the S-curve 1 - (1 - s**r)**b."""
    return 1.0 - (1.0 - similarity ** rows) ** bands


def recall_target(threshold: float, margin: float = 0.05) -> float:
    """The Jaccard at which :func:`recall_bands` guarantees recall: ``threshold + margin``,
    or halfway to 1 when that is nearer (at 0.95 and above every banding finds Jaccard 1)."""
    return min(threshold + margin, (threshold + 1.0) / 2)


@functools.lru_cache(maxsize=64)
def recall_bands(
    threshold: float, num_perm: int, margin: float = 0.05, recall: float = 0.99
) -> tuple[int, int]:
    """(bands, rows) that make a pair at Jaccard :func:`recall_target` a candidate with
    probability at least ``recall``, using at most ``num_perm`` signature values.

    Among the bandings that reach ``recall`` this picks the one with the fewest expected
    candidates below the threshold (the smallest area under the S-curve on [0, threshold]),
    since every candidate costs an exact check. When none reaches it (too few permutations),
    the banding with the highest probability at ``threshold + margin`` is returned; callers
    report :func:`candidate_probability` so that shortfall is visible.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be positive, got {num_perm}")
    target = recall_target(threshold, margin)
    grid = np.linspace(0.0, threshold, 201)
    best_key, best = None, (1, 1)
    for r in range(1, num_perm + 1):
        for b in range(1, num_perm // r + 1):
            p = candidate_probability(target, b, r)
            if p >= recall:
                below = float(np.trapezoid(1.0 - (1.0 - grid**r) ** b, grid))
                key = (0, below, b * r)
                if best_key is None or key < best_key:
                    best_key, best = key, (b, r)
                break  # more bands at this r only add candidates
            key = (1, -p, b * r)
            if best_key is None or key < best_key:
                best_key, best = key, (b, r)
    return best


def shingle_hashes(norm: str, n: int = 5, unit: str = "word") -> np.ndarray:
    """The distinct shingles of normalized text as sorted 64-bit BLAKE2b hashes.

    Compact (8 bytes a shingle) for exact Jaccard of candidate pairs; with 64-bit hashes a
    collision among a pair's few thousand shingles has a probability below 1e-12.
    """
    grams = shingle_bytes(norm, n, unit)
    digests = b"".join([blake2b(g, digest_size=8).digest() for g in grams])
    return np.unique(np.frombuffer(digests, dtype=np.uint64))


def hashed_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two sorted, distinct hash arrays (1.0 when both are empty)."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def _check_banding(sigs: np.ndarray, bands: int, rows: int) -> None:
    if sigs.ndim != 2:
        raise ValueError(f"signatures must be a 2-D array, got shape {sigs.shape}")
    if bands < 1 or rows < 1 or bands * rows > sigs.shape[1]:
        raise ValueError(
            f"{bands} bands x {rows} rows needs {bands * rows} signature values, "
            f"the signatures have {sigs.shape[1]}"
        )


def _band_keys(band: np.ndarray) -> np.ndarray:
    """A 64-bit key per row of a band (values < 2**32): a multiply-xorshift mix of the columns."""
    key = np.zeros(band.shape[0], dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    for col in range(band.shape[1]):
        key ^= band[:, col].astype(np.uint64)
        key *= mult
        key ^= key >> np.uint64(29)
    return key


def _pairs_within_groups(order: np.ndarray, sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (earlier, later) pair of positions in ``order`` whose keys are equal."""
    n = sorted_keys.shape[0]
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new_group[1:])
    group_start = np.flatnonzero(new_group)
    group_end = np.append(group_start[1:], n)
    end_of = np.repeat(group_end, group_end - group_start)  # group end for every position
    later = end_of - np.arange(n) - 1  # how many later members each position pairs with
    total = int(later.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    left_pos = np.repeat(np.arange(n), later)
    first_out = np.cumsum(later) - later
    right_pos = left_pos + 1 + (np.arange(total) - np.repeat(first_out, later))
    return order[left_pos], order[right_pos]


def unique_pairs(parts: list[tuple[np.ndarray, np.ndarray]], n_right: int) -> np.ndarray:
    if not parts:
        return np.empty((0, 2), dtype=np.int64)
    left = np.concatenate([p[0] for p in parts]).astype(np.int64)
    right = np.concatenate([p[1] for p in parts]).astype(np.int64)
    codes = np.unique(left * max(n_right, 1) + right)  # sorted by (left, right)
    return np.stack([codes // max(n_right, 1), codes % max(n_right, 1)], axis=1)


def candidate_pairs(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Pairs (i, j), i < j, that share a bucket in at least one band: unique, sorted, int64 (k, 2).

    A group of m documents with an identical band gives all m*(m-1)/2 pairs.
    """
    _check_banding(sigs, bands, rows)
    parts = [band_pairs(np.ascontiguousarray(sigs[:, band * rows : (band + 1) * rows]))
             for band in range(bands)]
    return unique_pairs(parts, sigs.shape[0])


def band_pairs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) row positions, lo < hi, of the rows whose values in one band (an (n, rows)
    array) are equal; not yet unique over bands."""
    keys = _band_keys(values)
    order = np.argsort(keys, kind="stable")
    left, right = _pairs_within_groups(order, keys[order])
    same = np.all(values[left] == values[right], axis=1)  # drop 64-bit key collisions
    return np.minimum(left, right)[same], np.maximum(left, right)[same]


def cross_pairs(sigs_a: np.ndarray, sigs_b: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Pairs (index in a, index in b) sharing a bucket in at least one band: unique, sorted (k, 2)."""
    _check_banding(sigs_a, bands, rows)
    _check_banding(sigs_b, bands, rows)
    if sigs_a.shape[1] != sigs_b.shape[1]:
        raise ValueError(
            f"signatures differ in num_perm: {sigs_a.shape[1]} vs {sigs_b.shape[1]}"
        )
    parts = []
    for band in range(bands):
        cols = slice(band * rows, (band + 1) * rows)
        va = np.ascontiguousarray(sigs_a[:, cols])
        vb = np.ascontiguousarray(sigs_b[:, cols])
        ka, kb = _band_keys(va), _band_keys(vb)
        order_b = np.argsort(kb, kind="stable")
        sorted_b = kb[order_b]
        lo = np.searchsorted(sorted_b, ka, side="left")
        hi = np.searchsorted(sorted_b, ka, side="right")
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            continue
        left = np.repeat(np.arange(len(ka)), counts)
        first_out = np.cumsum(counts) - counts
        right = order_b[np.repeat(lo, counts) + (np.arange(total) - np.repeat(first_out, counts))]
        same = np.all(va[left] == vb[right], axis=1)
        parts.append((left[same], right[same]))
    return unique_pairs(parts, sigs_b.shape[0])
