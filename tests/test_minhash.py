"""sftdata.minhash against datasketch itself: same signatures, same banding, same candidates."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata import minhash as mh

WORDS = "the cat sat on a mat dog ran far away quick brown fox jumps over lazy".split()


def random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        n = rng.choice([0, 1, 3, 5, 12, 40])
        body = " ".join(rng.choice(WORDS) for _ in range(n))
        texts.append(rng.choice(["", "Ünï ﬁ ", "  ", "Hello, "]) + body + rng.choice(["", "!", " ..."]))
    return texts


def datasketch_signature(text: str, num_perm: int, seed: int, ngram: int, unit: str) -> np.ndarray:
    m = MinHash(num_perm=num_perm, seed=seed)
    for shingle in mh.shingles(text, ngram, unit):
        m.update(shingle.encode("utf-8"))
    return m.hashvalues.astype(np.uint64)


@pytest.mark.parametrize(
    "num_perm,seed,ngram,unit",
    [(128, 1, 5, "word"), (64, 7, 3, "word"), (256, 42, 1, "word"), (32, 3, 4, "char"), (128, 1, 24, "char")],
)
def test_signatures_equal_datasketch(num_perm, seed, ngram, unit):
    texts = random_texts(60, seed)
    ours = mh.signatures(texts, num_perm=num_perm, ngram=ngram, unit=unit, seed=seed, workers=1)
    assert ours.dtype == np.uint64 and ours.shape == (len(texts), num_perm)
    expected = np.stack([datasketch_signature(t, num_perm, seed, ngram, unit) for t in texts])
    np.testing.assert_array_equal(ours, expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=8), st.integers(0, 2**31 - 1))
def test_signatures_equal_datasketch_any_unicode(texts, seed):
    ours = mh.signatures(texts, num_perm=16, seed=seed, ngram=2, workers=1)
    expected = np.stack([datasketch_signature(t, 16, seed, 2, "word") for t in texts])
    np.testing.assert_array_equal(ours, expected)


def test_long_document_spans_several_blocks():
    text = " ".join(f"w{i}" for i in range(mh.BLOCK_SHINGLES * 2 + 7))
    ours = mh.signatures([text, "short text", text[:50]], num_perm=16, workers=1)
    np.testing.assert_array_equal(ours[0], datasketch_signature(text, 16, 1, 5, "word"))
    np.testing.assert_array_equal(ours[2], datasketch_signature(text[:50], 16, 1, 5, "word"))


def test_processes_give_the_same_signatures():
    chunks = [random_texts(30, seed) for seed in range(5)]
    serial = list(mh.signature_chunks(chunks, num_perm=32, workers=1))
    parallel = list(mh.signature_chunks(chunks, num_perm=32, workers=2))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_empty_text_has_the_empty_minhash():
    sig = mh.signatures(["", "x"], num_perm=8, workers=1)
    assert (sig[0] == np.uint64(0xFFFFFFFF)).all()
    np.testing.assert_array_equal(sig[0], MinHash(num_perm=8).hashvalues)


def test_shingles_words_chars_and_short_texts():
    assert mh.shingles("A b  C d", n=2) == ["a b", "b c", "c d"]
    assert mh.shingles("Hello, World!", n=5) == ["hello world"]  # shorter than n: whole text
    assert mh.shingles("", n=5) == []
    assert mh.shingles("?!", n=5) == ["?!"]  # no words: the normalized text itself
    assert mh.shingles("abcd", n=3, unit="char") == ["abc", "bcd"]
    assert mh.shingles("ab", n=3, unit="char") == ["ab"]


def test_shingles_reject_bad_arguments():
    with pytest.raises(ValueError, match="unit must be one of word, char, got 'line'"):
        mh.shingles("x", unit="line")
    with pytest.raises(ValueError, match="n-gram size must be at least 1, got 0"):
        mh.shingles("x", n=0)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128])
def test_optimal_bands_equal_datasketch(threshold, num_perm):
    assert mh.optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_optimal_bands_weights_follow_datasketch():
    assert mh.optimal_bands(0.8, 128, 0.2, 0.8) == _optimal_param(0.8, 128, 0.2, 0.8)


def near_copies(seed: int) -> list[str]:
    """Base texts plus copies with a few words changed: a mix of near and far pairs."""
    rng = random.Random(seed)
    vocab = [f"v{i}" for i in range(300)]
    texts = []
    for _ in range(25):
        base = [rng.choice(vocab) for _ in range(60)]
        texts.append(" ".join(base))
        for edits in (1, 3, 12):
            copy = list(base)
            for _ in range(edits):
                copy[rng.randrange(len(copy))] = rng.choice(vocab)
            texts.append(" ".join(copy))
    return texts


def test_candidate_pairs_equal_datasketch_lsh_queries():
    texts = near_copies(1)
    sigs = mh.signatures(texts, num_perm=128, workers=1)
    bands, rows = mh.optimal_bands(0.8, 128)
    lsh = MinHashLSH(num_perm=128, params=(bands, rows))
    minhashes = []
    for i, sig in enumerate(sigs):
        m = MinHash(num_perm=128, hashvalues=sig.astype(np.uint32), scheme="affine32")
        lsh.insert(i, m)
        minhashes.append(m)
    expected = sorted({(min(i, j), max(i, j)) for i, m in enumerate(minhashes) for j in lsh.query(m) if i != j})
    ours = mh.candidate_pairs(sigs, bands, rows)
    assert ours.dtype == np.int64
    assert [tuple(p) for p in ours.tolist()] == expected
    assert len(expected) >= 15  # the one-edit copies were found: the test compares something


def test_candidate_pairs_all_pairs_of_a_bucket_and_no_key_collisions():
    sigs = np.array([[1, 2, 9], [1, 2, 8], [1, 2, 7], [5, 6, 7]], dtype=np.uint64)
    assert mh.candidate_pairs(sigs, 1, 2).tolist() == [[0, 1], [0, 2], [1, 2]]
    assert mh.candidate_pairs(sigs, 3, 1).tolist() == [[0, 1], [0, 2], [1, 2], [2, 3]]
    assert mh.candidate_pairs(sigs[:1], 3, 1).shape == (0, 2)


def test_candidate_pairs_checks_banding_fits():
    with pytest.raises(ValueError, match="4 bands x 2 rows needs 8 signature values, the signatures have 3"):
        mh.candidate_pairs(np.zeros((2, 3), dtype=np.uint64), 4, 2)


def brute_cross(a: np.ndarray, b: np.ndarray, bands: int, rows: int) -> list[tuple[int, int]]:
    out = set()
    for i in range(len(a)):
        for j in range(len(b)):
            for band in range(bands):
                cols = slice(band * rows, (band + 1) * rows)
                if np.array_equal(a[i, cols], b[j, cols]):
                    out.add((i, j))
    return sorted(out)


def test_cross_pairs_match_brute_force():
    texts = near_copies(2)
    sigs = mh.signatures(texts, num_perm=64, workers=1)
    a, b = sigs[::2], sigs[1::2]
    bands, rows = mh.optimal_bands(0.7, 64)
    got = [tuple(p) for p in mh.cross_pairs(a, b, bands, rows).tolist()]
    assert got == brute_cross(a, b, bands, rows)
    assert got  # near copies sit on both sides


def test_jaccard_exact_and_estimated():
    assert mh.jaccard(["a", "b", "c"], ["b", "c", "d"]) == pytest.approx(0.5)
    assert mh.jaccard([], []) == 1.0
    a = mh.signatures(["one two three four five six seven"], num_perm=64, ngram=2, workers=1)[0]
    assert mh.estimate_jaccard(a, a) == 1.0
    b = mh.signatures(["completely different words here now"], num_perm=64, ngram=2, workers=1)[0]
    assert mh.estimate_jaccard(a, b) < 0.2


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_recall_bands_reach_099_at_threshold_plus_005(threshold, num_perm):
    bands, rows = mh.recall_bands(threshold, num_perm)
    assert bands * rows <= num_perm
    target = mh.recall_target(threshold)
    assert target == pytest.approx(min(threshold + 0.05, (threshold + 1) / 2))
    assert mh.candidate_probability(target, bands, rows) >= 0.99


def test_recall_bands_default_and_shortfall():
    assert mh.recall_bands(0.8, 128) == (15, 8)
    assert mh.optimal_bands(0.8, 128) == (9, 13)
    assert mh.candidate_probability(0.85, 9, 13) == pytest.approx(0.686, abs=1e-3)
    bands, rows = mh.recall_bands(0.8, 2)  # too few permutations: the best it can do
    assert (bands, rows) == (2, 1) and mh.candidate_probability(0.85, 2, 1) < 0.99


def test_recall_bands_check_arguments():
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 0"):
        mh.recall_bands(0, 128)
    with pytest.raises(ValueError, match="num_perm must be positive, got 0"):
        mh.recall_bands(0.8, 0)


def test_shingle_hashes_give_exact_jaccard():
    a, b = "one two three four five six", "one two three four five seven"
    ha, hb = mh.shingle_hashes(a, 2), mh.shingle_hashes(b, 2)
    assert ha.dtype == np.uint64 and np.all(np.diff(ha.astype(np.float64)) > 0)
    assert mh.hashed_jaccard(ha, hb) == mh.jaccard(mh.shingles(a, 2), mh.shingles(b, 2)) == 4 / 6
    empty = mh.shingle_hashes("", 2)
    assert empty.size == 0 and mh.hashed_jaccard(empty, empty) == 1.0
    assert mh.hashed_jaccard(ha, empty) == 0.0
