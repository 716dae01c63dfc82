"""Each `gold score` task metric as a :class:`sftdata.stats.Statistic`: per-example columns and a
function of their sums that gives back exactly the reported metric (tests check they agree).

With these, bootstrap intervals and paired tests work for every metric the same way, including
the ones that are not a plain mean (macro-F1, micro-F1 of extraction, rates over a subset).
Quantiles (median, p90, max characters of chat answers) have no such form; they get no interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import metrics as m
from ..stats import Statistic, mean_of, ratio_of


def _macro_f1(labels: int):
    def fn(sums: np.ndarray) -> np.ndarray:
        tp, n_pred, n_true = sums[..., 0::3], sums[..., 1::3], sums[..., 2::3]
        den = n_pred + n_true
        f1 = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)
        return f1.sum(axis=-1) / labels

    return fn


def _prf(which: int):
    def fn(sums: np.ndarray) -> np.ndarray:
        tp, n_pred, n_ref = sums[..., 0], sums[..., 1], sums[..., 2]
        safe = lambda x: np.where(x > 0, x, 1)  # noqa: E731
        precision = np.where(n_pred > 0, tp / safe(n_pred), 0.0)
        recall = np.where(n_ref > 0, tp / safe(n_ref), 0.0)
        pr = precision + recall
        f1 = np.where(pr > 0, 2 * precision * recall / np.where(pr > 0, pr, 1), 0.0)
        value = (precision, recall, f1)[which]
        return np.where((n_pred == 0) & (n_ref == 0), 1.0, value)  # nothing expected, none given

    return fn


def task_statistics(
    task: str, refs: Sequence[str], preds: Sequence[str], per_example: Sequence[float | None]
) -> dict[str, Statistic]:
    """metric -> Statistic for the metrics of ``metrics.task_scores`` (same names)."""
    task = m.TASK_ALIASES.get(task, task)
    if task == "classification":
        labels = sorted(set(refs))
        known = set(labels)
        mapped = [p if p in known else m.OTHER_LABEL for p in (x.strip() for x in preds)]
        columns = []
        for label in labels:
            columns += [[r == label and p == label for r, p in zip(refs, mapped, strict=True)],
                        [p == label for p in mapped], [r == label for r in refs]]
        matrix = np.asarray(columns, dtype=np.float64).T.reshape(len(refs), 3 * len(labels))
        return {
            "accuracy": mean_of([r == p for r, p in zip(refs, mapped, strict=True)]),
            "macro_f1": Statistic(matrix, _macro_f1(max(len(labels), 1))),
            "invalid_label_rate": mean_of([p == m.OTHER_LABEL for p in mapped]),
        }
    if task == "qa":
        return {
            "exact_match": mean_of([m.exact_match(r, p) for r, p in zip(refs, preds, strict=True)]),
            "f1": mean_of(per_example),
        }
    if task == "extraction":
        counts = [m.extraction_counts(r, p) for r, p in zip(refs, preds, strict=True)]
        matrix = np.asarray([[c["tp"], c["n_pred"], c["n_ref"]] for c in counts], np.float64)
        matrix = matrix.reshape(len(counts), 3)
        out = {name: Statistic(matrix, _prf(i)) for i, name in enumerate(("precision", "recall", "f1"))}
        if any(c["json"] for c in counts):
            out["json_valid_rate"] = ratio_of([bool(c["valid"]) for c in counts],
                                              [bool(c["json"]) for c in counts])
        return out
    if task == "summarization":
        return {"rougeL": mean_of(per_example)}
    if task == "chat":
        if not preds:
            return {}
        return {
            "mean_chars": mean_of([len(p) for p in preds]),
            "mean_words": mean_of([len(p.split()) for p in preds]),
            "empty_rate": mean_of([not p.strip() for p in preds]),
            "length_ratio": ratio_of([len(p) for p in preds], [len(r) for r in refs]),
        }
    raise ValueError(f"no metrics for task {task!r}")
