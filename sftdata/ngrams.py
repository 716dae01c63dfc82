"""Word n-grams of whole corpora as uint64 hashes, with numpy and Polars (no Python set per text).

Texts are normalized (NFKC, lower case) and cut into words (runs of letters, digits and ``_``,
as :func:`sftdata.text.words`); punctuation and whitespace never matter. Each word gets a 64-bit
hash from Polars, and the hash of the word window ``[p, p + n)`` is the polynomial
``sum(h[p + k] * B**k)`` mod 2**64, read off one prefix-sum array:
``(P[p + n] - P[p]) * B**-p``. So windows of any length cost O(1) each, and equal windows have
equal hashes wherever they sit. Two different windows collide with odds near 2**-64, so hash
equality stands in for n-gram equality; evidence text is always rebuilt from the words.

Hashes are only compared within one process (Polars' string hash is not stable across versions),
never written out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

# An odd multiplier is invertible mod 2**64, which is what lets windows be read off prefix sums.
_BASE = 0x9E3779B97F4A7C15
_BASE_INV = pow(_BASE, -1, 2**64)
_WORD_SEED = 0x5F3759DF
_WORD = r"\w+"


def words_expr(expr: pl.Expr) -> pl.Expr:
    """The list of normalized words of a text column (null text -> no words)."""
    return expr.fill_null("").str.normalize("NFKC").str.to_lowercase().str.extract_all(_WORD)


@dataclass
class Corpus:
    """The words of many texts laid end to end, with per-text offsets and window hashing."""

    words: pl.Series  # flat normalized words, text after text (String)
    offsets: np.ndarray  # int64, len(texts) + 1: text i holds words[offsets[i]:offsets[i + 1]]
    prefix: np.ndarray  # uint64, len(words) + 1: prefix[i] = sum(h[k] * B**k for k < i)
    inv_pow: np.ndarray  # uint64, len(words) + 1: B**-k

    @classmethod
    def from_texts(cls, texts: pl.Series | list[str]) -> Corpus:
        texts = texts if isinstance(texts, pl.Series) else pl.Series(texts, dtype=pl.String)
        lists = pl.select(words_expr(pl.lit(texts))).to_series()
        lengths = lists.list.len().cast(pl.Int64).to_numpy()
        flat = lists.explode().drop_nulls()
        if flat.len() != int(lengths.sum()):  # an empty list must not become a null word
            raise AssertionError("word flattening lost or invented words")
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        hashes = flat.hash(seed=_WORD_SEED).to_numpy().astype(np.uint64, copy=False)
        n = len(hashes)
        pow_ = np.full(n, _BASE, dtype=np.uint64)
        if n:
            pow_[0] = 1
            np.cumprod(pow_, out=pow_)  # wraps mod 2**64, which is the arithmetic we want
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(hashes * pow_, out=prefix[1:])
        del pow_
        inv_pow = np.full(n + 1, _BASE_INV, dtype=np.uint64)  # + 1: an empty last text starts at n
        inv_pow[0] = 1
        np.cumprod(inv_pow, out=inv_pow)
        return cls(flat, offsets, prefix, inv_pow)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Word count of each text."""
        return np.diff(self.offsets)

    def span_hash(self, starts: np.ndarray, n: int | np.ndarray) -> np.ndarray:
        """Hashes of the windows ``[start, start + n)`` (absolute word positions)."""
        starts = np.asarray(starts, dtype=np.int64)
        return (self.prefix[starts + n] - self.prefix[starts]) * self.inv_pow[starts]

    def whole(self) -> np.ndarray:
        """One hash per text of its entire word sequence (an empty text hashes to 0)."""
        starts = self.offsets[:-1]
        return self.span_hash(starts, self.lengths)

    def windows(self, n: int, rows: np.ndarray | None = None) -> pl.DataFrame:
        """Every window of ``n`` words inside one text: columns hash (u64), row (i64), start (i64).

        ``start`` is the word position inside its text. ``rows`` restricts it to some texts.
        """
        lengths = self.lengths
        rows = np.arange(len(lengths), dtype=np.int64) if rows is None else np.asarray(rows)
        counts = np.maximum(lengths[rows] - n + 1, 0)
        total = int(counts.sum())
        row = np.repeat(rows, counts)
        # position inside the text: 0..count-1 for each text, built without a Python loop
        first = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        start = np.arange(total, dtype=np.int64) - np.repeat(first, counts)
        absolute = self.offsets[row] + start
        return pl.DataFrame(
            {"hash": self.span_hash(absolute, n), "row": row, "start": start},
            schema={"hash": pl.UInt64, "row": pl.Int64, "start": pl.Int64},
        )

    def text(self, row: int, start: int = 0, n: int | None = None) -> str:
        """The words ``[start, start + n)`` of text ``row`` joined by spaces (evidence text)."""
        begin = int(self.offsets[row]) + start
        end = int(self.offsets[row + 1]) if n is None else begin + n
        return " ".join(self.words.slice(begin, end - begin).to_list())
