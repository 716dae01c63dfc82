"""Uncertainty for gold scores: bootstrap intervals, paired differences and paired tests.

Every metric `gold score` reports is written as a function of column sums over examples
(accuracy = sum(correct) / n, macro-F1 from per-label tp / predicted / true counts, micro-F1 from
tp / predicted / reference counts, ...). A :class:`Statistic` holds the per-example columns and
that function, so one resample is a vector of example counts ``w`` and the metric on it is
``fn(w @ columns)``: every metric, the paired difference of two models and the permutation test
are the same matrix product, vectorized over resamples with numpy.

- Intervals: percentile bootstrap over gold examples (resampling examples with replacement).
- Paired difference: both models scored on the *same* resample (the examples are shared), so
  the interval of ``model - base`` reflects only disagreement between them, not which questions
  happened to be drawn.
- Paired test: McNemar's exact test (two-sided binomial test on the discordant pairs) for 0/1
  per-example scores such as accuracy or exact match; otherwise a paired permutation test
  (approximate randomization: each example's two outputs are swapped with probability 1/2).

Everything is seeded: the same inputs and seed give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from math import comb

import numpy as np

# resamples per matrix product: bounds memory at CHUNK x n float64 (14k MMLU items: 11 MB)
CHUNK = 100


@dataclass
class Statistic:
    """A metric as ``fn(column sums)``; ``columns`` is (n examples, k columns).

    ``fn`` takes sums of shape (..., k) and returns the metric of shape (...,); NaN where the
    metric is undefined on a resample (e.g. no judged example)."""

    columns: np.ndarray
    fn: Callable[[np.ndarray], np.ndarray]

    @property
    def n(self) -> int:
        return int(self.columns.shape[0])

    def value(self) -> float:
        return float(self.fn(self.columns.sum(axis=0)))

    def binary(self) -> np.ndarray | None:
        """The per-example 0/1 scores when the metric is their mean, else None."""
        if self.columns.shape[1] != 2:
            return None
        scores, ones = self.columns[:, 0], self.columns[:, 1]
        if not (np.all(ones == 1) and np.all((scores == 0) | (scores == 1))):
            return None
        return scores


def mean_of(values) -> Statistic:
    """The mean of per-example values (accuracy, exact match, token F1, ROUGE-L, a scorer)."""
    values = np.asarray(values, dtype=np.float64)
    columns = np.column_stack([values, np.ones_like(values)])
    return Statistic(columns, _ratio)


def ratio_of(numerator, denominator) -> Statistic:
    """sum(numerator) / sum(denominator) (a rate over a subset, a length ratio)."""
    columns = np.column_stack([np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)])
    return Statistic(columns, _ratio)


def _ratio(sums: np.ndarray) -> np.ndarray:
    num, den = sums[..., 0], sums[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(size, n) counts: how often each example is drawn in each bootstrap resample."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


def _chunks(total: int):
    done = 0
    while done < total:
        size = min(CHUNK, total - done)
        yield size
        done += size


def bootstrap(stats: list[Statistic], resamples: int, seed: int) -> list[np.ndarray]:
    """Bootstrap replicates of each statistic, all on the same resamples of the shared examples
    (so replicates of two models' statistics are paired)."""
    n = stats[0].n
    if any(s.n != n for s in stats):
        raise ValueError("paired statistics need the same examples")
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in stats]
    for size in _chunks(resamples):
        counts = _resample_counts(rng, n, size)
        for i, s in enumerate(stats):
            out[i].append(s.fn(counts @ s.columns))
    return [np.concatenate(parts) if parts else np.empty(0) for parts in out]


def interval(replicates: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """Percentile interval; None when the metric is undefined on too many resamples."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0 or finite.size < 0.9 * replicates.size:
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def mcnemar_exact(base: np.ndarray, model: np.ndarray) -> tuple[float, int, int]:
    """Two-sided exact McNemar test on paired 0/1 scores: (p-value, b, c) where b counts examples
    only the base got right and c those only the model got right. Under the null hypothesis
    (equal accuracy) each discordant pair goes either way with probability 1/2."""
    b = int(np.sum((base == 1) & (model == 0)))
    c = int(np.sum((base == 0) & (model == 1)))
    n = b + c
    if n == 0:
        return 1.0, b, c
    tail = sum(comb(n, k) for k in range(min(b, c) + 1))  # exact integers, no overflow
    p = Fraction(2 * tail, 2**n)
    return float(min(p, Fraction(1))), b, c


def permutation_test(base: Statistic, model: Statistic, resamples: int, seed: int) -> float:
    """Two-sided paired permutation test of ``model - base``: under the null hypothesis the two
    outputs of each example are exchangeable, so each is swapped with probability 1/2 and the
    difference recomputed. p = (1 + #{|permuted| >= |observed|}) / (1 + resamples)."""
    if base.columns.shape != model.columns.shape:
        raise ValueError("paired statistics need the same examples and columns")
    observed = abs(model.value() - base.value())
    total_a, total_b = base.columns.sum(axis=0), model.columns.sum(axis=0)
    delta = model.columns - base.columns
    rng = np.random.default_rng(seed)
    extreme = 0
    # a tiny tolerance so that float noise in recomputing the observed value does not count
    tolerance = 1e-12 * max(1.0, observed)
    for size in _chunks(resamples):
        flips = rng.integers(0, 2, size=(size, base.n)).astype(np.float64)
        moved = flips @ delta  # what swapping moves from the base's sums to the model's
        diff = model.fn(total_b - moved) - base.fn(total_a + moved)
        extreme += int(np.sum(np.abs(diff) >= observed - tolerance))
    return (1 + extreme) / (1 + resamples)
