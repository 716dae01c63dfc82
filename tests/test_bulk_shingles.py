"""The bulk path of dedup: normalize_series equals normalize, bulk shingle hashes are the shingles.

`sftdata dedup` normalizes and hashes its texts in bulk (Polars + numpy) instead of one shingle
at a time in Python. These tests pin that the bulk path means the same thing: the same
normalized strings, the same shingles (so the same exact Jaccard), and signatures whose banding
finds what the per-shingle path finds.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftdata import minhash as mh
from sftdata.text import normalize, normalize_series

REALDATA = Path(os.environ.get("SFT_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
HARD = [
    "Straße STRASSE", "ΣΊΣΥΦΟΣ σίσυφος", "a\u00a0b\tc\n\nd", "", "ﬁ Ⅻ ①", "Hello,  World!! ",
    "\x1c\x1d\x1e\x1f", "tab\x0bvt\x0cff\rcr", "A\u2028B\u3000C", "İstanbul", "x\u0301y", "😀️ ok",
    "naïve café", "Ǆemal", "  lead and trail  ", "under_score snake_case", "½ ² 3rd", "0\x850",
    "é\u3000É\u2028x", "İ¨ ¨x",
]
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@pytest.mark.parametrize("punctuation", [False, True])
def test_normalize_series_equals_normalize_on_hard_cases(punctuation):
    got = normalize_series(pl.Series(HARD + [None]), strip_punctuation=punctuation).to_list()
    assert got == [normalize(t, strip_punctuation=punctuation) for t in HARD + [""]]


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXT, max_size=6), st.booleans())
def test_normalize_series_equals_normalize(texts, punctuation):
    got = normalize_series(pl.Series(texts, dtype=pl.String), strip_punctuation=punctuation)
    assert got.to_list() == [normalize(t, strip_punctuation=punctuation) for t in texts]


def python_shingle_sets(texts, n):
    return [set(mh.shingle_bytes(normalize(t), n)) for t in texts]


def bulk_shingle_sets(texts, n):
    hashes, counts = mh.shingle_hash_batch(normalize_series(pl.Series(texts, dtype=pl.String)), n)
    return mh.distinct_per_text(hashes, counts), counts


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_bulk_shingles_are_the_shingles(n):
    """Same count of distinct shingles per text and the same Jaccard for every pair."""
    rng = random.Random(n)
    vocab = "the cat sat on a mat dog ran far away quick brown fox".split()
    texts = ["", "!!!", "one", "one two", "Hello, world!"] + [
        " ".join(rng.choice(vocab) for _ in range(rng.choice([1, 2, 4, 9, 30]))) for _ in range(40)
    ]
    py = python_shingle_sets(texts, n)
    bulk, counts = bulk_shingle_sets(texts, n)
    assert [len(s) for s in bulk] == [len(s) for s in py]
    assert counts.tolist() == [len(mh.shingle_bytes(normalize(t), n)) for t in texts]
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if py[i] or py[j]:
                assert mh.hashed_jaccard(bulk[i], bulk[j]) == pytest.approx(mh.jaccard(py[i], py[j]))


def test_word_order_matters_and_positions_differ():
    bulk, _ = bulk_shingle_sets(["a b c", "c b a", "a b", "b a", "a a b", "a b a"], 3)
    assert len({tuple(s) for s in bulk}) == 6


def test_char_shingles_match_the_per_shingle_path():
    texts = ["abcdef", "abcdxf", "ab", ""]
    bulk, counts = mh.shingle_hash_batch(pl.Series([normalize(t) for t in texts]), 3, "char")
    assert counts.tolist() == [4, 4, 1, 0]
    sets = mh.distinct_per_text(bulk, counts)
    assert sets[0].tolist() == mh.shingle_hashes("abcdef", 3, "char").tolist()


def test_signature_estimates_track_exact_jaccard():
    """Signatures from the bulk hashes are MinHash: the estimate is near the exact Jaccard."""
    rng = random.Random(3)
    base = [f"w{rng.randrange(5000)}" for _ in range(400)]
    texts = []
    for k in (0, 20, 60, 120):
        other = list(base)
        for p in rng.sample(range(400), k):
            other[p] = f"x{rng.randrange(5000)}"
        texts.append(" ".join(other))
    hashes, counts = mh.shingle_hash_batch(normalize_series(pl.Series(texts)), 3)
    sets = mh.distinct_per_text(hashes, counts)
    sigs = mh.hashed_signatures(hashes, counts, 256, 1, threads=2)
    assert np.array_equal(sigs, mh.hashed_signatures(hashes, counts, 256, 1, threads=1))
    for j in range(1, 4):
        exact = mh.hashed_jaccard(sets[0], sets[j])
        assert abs(mh.estimate_jaccard(sigs[0], sigs[j]) - exact) < 0.1  # 3.3 sigma at 256


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="realdata absent")
def test_bulk_path_on_real_text():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from neardup_set import real_texts

    texts = [t for _, t in real_texts(REALDATA)][:3000]
    assert normalize_series(pl.Series(texts)).to_list() == [normalize(t) for t in texts]
    py = python_shingle_sets(texts, 3)
    bulk, _ = bulk_shingle_sets(texts, 3)
    same = sum(len(a) == len(b) for a, b in zip(py, bulk, strict=True))
    assert same == len(texts)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text("ab c,é\n", max_size=14), max_size=9), st.integers(1, 4))
def test_bulk_shingle_counts_any_mix_of_texts(texts, n):
    """Any mix of empty, word-less, short and long texts, in any order: every text gets its own
    shingles (count and distinct count as the per-shingle path), none leaks into a neighbour."""
    py = python_shingle_sets(texts, n)
    bulk, counts = bulk_shingle_sets(texts, n)
    assert counts.tolist() == [len(mh.shingle_bytes(normalize(t), n)) for t in texts]
    assert [len(s) for s in bulk] == [len(s) for s in py]
    for i in range(len(texts)):
        for j in range(len(texts)):
            same = py[i] == py[j]
            assert (bulk[i].tolist() == bulk[j].tolist()) == same
