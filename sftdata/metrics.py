"""Task metrics for `sftdata gold score`: pure functions over strings, no third-party scorers.

Each metric matches a reference implementation (checked in tests/test_metrics.py):
  classification  accuracy, macro-F1 and confusion matrix as scikit-learn computes them
  qa              exact match and token F1 with SQuAD v2's answer normalization
  summarization   ROUGE-L F-measure as rouge-score's RougeScorer(["rougeL"]) without stemming;
                  tokens are lower-cased runs of letters and digits. On ASCII text this equals
                  rouge-score; on other scripts we keep the letters (rouge-score drops them).
  extraction      micro precision/recall/F1 over entities (a JSON list) or fields (a JSON object,
                  flattened to path=value pairs), plus the rate of predictions that are valid JSON
  chat            length statistics of the predictions, and any pluggable scorer
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .text import normalize

# --------------------------------------------------------------------------- classification


def accuracy(refs: Sequence[str], preds: Sequence[str]) -> float:
    if not refs:
        return 0.0
    return sum(r == p for r, p in zip(refs, preds, strict=True)) / len(refs)


def per_label_f1(refs: Sequence[str], preds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """F1 per label; a label never predicted nor present scores 0 (scikit-learn's zero_division=0)."""
    out = {}
    for label in labels:
        tp = sum(r == label and p == label for r, p in zip(refs, preds, strict=True))
        n_pred = sum(p == label for p in preds)
        n_true = sum(r == label for r in refs)
        out[label] = 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0
    return out


def macro_f1(refs: Sequence[str], preds: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """Unweighted mean F1 over ``labels`` (default: every label in refs or preds, as sklearn)."""
    labels = sorted(set(refs) | set(preds)) if labels is None else list(labels)
    if not labels:
        return 0.0
    scores = per_label_f1(refs, preds, labels)
    return sum(scores.values()) / len(labels)


def confusion_matrix(
    refs: Sequence[str], preds: Sequence[str], labels: Sequence[str] | None = None
) -> tuple[list[str], list[list[int]]]:
    """(labels, matrix) with matrix[i][j] = count of reference labels[i] predicted as labels[j]."""
    labels = sorted(set(refs) | set(preds)) if labels is None else list(labels)
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for r, p in zip(refs, preds, strict=True):
        if r in index and p in index:
            matrix[index[r]][index[p]] += 1
    return labels, matrix


# --------------------------------------------------------------------------- qa (SQuAD)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(ref: str, pred: str) -> float:
    return float(normalize_answer(ref) == normalize_answer(pred))


def token_f1(ref: str, pred: str) -> float:
    ref_tokens = normalize_answer(ref).split()
    pred_tokens = normalize_answer(pred).split()
    if not ref_tokens or not pred_tokens:
        return float(ref_tokens == pred_tokens)  # SQuAD v2: both empty is a match
    same = sum((Counter(ref_tokens) & Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- summarization

_ROUGE_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def rouge_tokens(text: str) -> list[str]:
    return _ROUGE_TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, O(len(a) * len(b)) time, O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(ref: str, pred: str) -> float:
    """ROUGE-L F-measure (beta = 1), as rouge-score reports ``fmeasure``."""
    ref_tokens, pred_tokens = rouge_tokens(ref), rouge_tokens(pred)
    if not ref_tokens or not pred_tokens:
        return 0.0
    lcs = lcs_length(ref_tokens, pred_tokens)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred_tokens), lcs / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- extraction

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def parse_json(text: str) -> tuple[bool, Any]:
    """(valid, value); a Markdown code fence around the JSON is allowed."""
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return False, None


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return normalize(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _flatten(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(value[key], f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        for item in value:
            _flatten(item, f"{path}[]", out)
    else:
        out.append(f"{path}={_value_text(value)}")


def extraction_items(value: Any) -> Counter:
    """Comparable items: entities of a JSON list (each a canonical string), fields of a JSON
    object (path=value), or non-empty lines of plain text; strings are normalized."""
    items: list[str] = []
    if isinstance(value, dict):
        _flatten(value, "", items)
    elif isinstance(value, list):
        for element in value:
            if isinstance(element, dict):
                fields: list[str] = []
                _flatten(element, "", fields)
                items.append("{" + ",".join(sorted(fields)) + "}")
            else:
                items.append(_value_text(element))
    elif isinstance(value, str):
        items = [normalize(line) for line in re.split(r"[\n;]", value) if line.strip()]
    elif value is not None:
        items = [_value_text(value)]
    return Counter(items)


def extraction_counts(ref: str, pred: str) -> dict[str, Any]:
    """True positives and item counts of one example; JSON references need JSON predictions."""
    ref_is_json, ref_value = parse_json(ref)
    if ref_is_json:
        pred_valid, pred_value = parse_json(pred)
        ref_items = extraction_items(ref_value)
        pred_items = extraction_items(pred_value) if pred_valid else Counter()
    else:
        pred_valid = None
        ref_items, pred_items = extraction_items(ref), extraction_items(pred)
    tp = sum((ref_items & pred_items).values())
    return {
        "tp": tp,
        "n_pred": sum(pred_items.values()),
        "n_ref": sum(ref_items.values()),
        "json": ref_is_json,
        "valid": pred_valid,
    }


def prf(tp: int, n_pred: int, n_ref: int) -> tuple[float, float, float]:
    """Precision, recall, F1; nothing expected and nothing predicted is a perfect score."""
    if n_pred == 0 and n_ref == 0:
        return 1.0, 1.0, 1.0
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# --------------------------------------------------------------------------- chat


def length_stats(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Character and word lengths of the predictions, and their ratio to the references'."""
    if not preds:
        return {}
    chars = sorted(len(p) for p in preds)
    words = [len(p.split()) for p in preds]
    ref_chars = sum(len(r) for r in refs)
    return {
        "mean_chars": sum(chars) / len(chars),
        "median_chars": float(_quantile(chars, 0.5)),
        "p90_chars": float(_quantile(chars, 0.9)),
        "max_chars": float(chars[-1]),
        "mean_words": sum(words) / len(words),
        "empty_rate": sum(not p.strip() for p in preds) / len(preds),
        "length_ratio": sum(chars) / ref_chars if ref_chars else 0.0,
    }


def _quantile(sorted_values: Sequence[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


# --------------------------------------------------------------------------- one task, all metrics

SCORED_TASKS = ("classification", "qa", "extraction", "summarization", "chat")
# tasks without a metric of their own are scored like chat (length statistics + scorer)
TASK_ALIASES = {"completion": "chat", "text": "chat"}
TASK_METRICS = {
    "classification": ("accuracy", "macro_f1", "invalid_label_rate"),
    "qa": ("exact_match", "f1"),
    "extraction": ("precision", "recall", "f1", "json_valid_rate"),
    "summarization": ("rougeL",),
    "chat": ("mean_chars", "median_chars", "p90_chars", "max_chars", "mean_words", "empty_rate",
             "length_ratio"),
}
BASELINES = {
    "classification": ("majority", "copy_input"),
    "qa": ("majority", "copy_input", "empty"),
    "extraction": ("majority", "copy_input", "empty"),
    "summarization": ("majority", "copy_input"),
    "chat": ("copy_input",),
}
OTHER_LABEL = "(other)"


def metric_names(task: str, with_scorer: bool = False) -> tuple[str, ...]:
    names = TASK_METRICS[TASK_ALIASES.get(task, task)]
    return (*names, "scorer") if with_scorer else names


def task_scores(
    task: str, refs: Sequence[str], preds: Sequence[str]
) -> tuple[dict[str, Any], list[float | None], dict[str, Any]]:
    """(metrics, per-example score for ranking the worst, extras such as the confusion matrix)."""
    task = TASK_ALIASES.get(task, task)
    n = len(refs)
    extras: dict[str, Any] = {}
    if task == "classification":
        labels = sorted(set(refs))
        known = set(labels)
        mapped = [p if p in known else OTHER_LABEL for p in (x.strip() for x in preds)]
        metrics = {
            "accuracy": accuracy(refs, mapped),
            "macro_f1": macro_f1(refs, mapped, labels),
            "invalid_label_rate": sum(p == OTHER_LABEL for p in mapped) / n if n else 0.0,
        }
        columns = labels + ([OTHER_LABEL] if OTHER_LABEL in mapped else [])
        _, matrix = confusion_matrix(refs, mapped, columns)
        extras["confusion_matrix"] = {"labels": labels, "predicted": columns, "matrix": matrix[: len(labels)]}
        return metrics, [float(r == p) for r, p in zip(refs, mapped, strict=True)], extras
    if task == "qa":
        em = [exact_match(r, p) for r, p in zip(refs, preds, strict=True)]
        f1 = [token_f1(r, p) for r, p in zip(refs, preds, strict=True)]
        return {"exact_match": _mean(em), "f1": _mean(f1)}, f1, extras
    if task == "extraction":
        counts = [extraction_counts(r, p) for r, p in zip(refs, preds, strict=True)]
        precision, recall, f1 = prf(*(sum(c[k] for c in counts) for k in ("tp", "n_pred", "n_ref")))
        judged = [c["valid"] for c in counts if c["json"]]
        metrics = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "json_valid_rate": sum(judged) / len(judged) if judged else None,
        }
        return metrics, [prf(c["tp"], c["n_pred"], c["n_ref"])[2] for c in counts], extras
    if task == "summarization":
        scores = [rouge_l(r, p) for r, p in zip(refs, preds, strict=True)]
        return {"rougeL": _mean(scores)}, scores, extras
    if task == "chat":
        return length_stats(preds, refs), [None] * n, extras
    raise ValueError(f"no metrics for task {task!r}")


def baseline_predictions(name: str, refs: Sequence[str], inputs: Sequence[str]) -> list[str]:
    if name == "majority":
        # the most common reference (ties: the smallest); it is read from the gold set itself,
        # so it is an upper bound on what a constant answer learned from training could score
        counts = Counter(refs)
        top = min(counts, key=lambda r: (-counts[r], r)) if counts else ""
        return [top] * len(refs)
    if name == "copy_input":
        return list(inputs)
    if name == "empty":
        return [""] * len(refs)
    raise ValueError(f"unknown baseline {name!r}")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
