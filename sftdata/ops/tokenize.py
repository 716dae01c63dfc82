"""Tokenize rendered records: adds `input_ids`, `labels`, `n_tokens`, `n_supervised`, `tokenizer`.

Labels come from the spans render-template wrote (character offsets mapped to tokens), never from
searching marker strings in token ids. Which spans are trained is a policy:

  all   every assistant turn whose `train` flag is not false (default)
  last  only the last assistant turn (unless its flag is false)
  flag  only turns flagged train = true
A turn with weight 0 is never trained. The end-of-turn marker of a trained turn is trained unless
``train_eot=False``; ``train_prompt`` trains every token.

Truncation to ``max_len``: right (keep the start), left (keep the end of the conversation), drop,
or fail. Rows left with no supervised token are never passed on: they go to the rejects with a
reason, or the op raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..errors import DataError
from ..tokenizers import Tokenizer

LABEL_PAD = -100
POLICIES = ("all", "last", "flag")
TRUNCATIONS = ("right", "left", "drop", "fail")
OUTPUT_COLUMNS = ("input_ids", "labels", "n_tokens", "n_supervised", "tokenizer")
BATCH_ROWS = 2048


@dataclass
class TokenizeResult:
    records: pl.DataFrame
    rejects: pl.DataFrame  # rows dropped, with a `reason`
    report: dict[str, Any]
    lengths: np.ndarray = field(repr=False)  # token count of every row before truncation


def trained_spans(spans: list[dict[str, Any]], policy: str) -> list[dict[str, Any]]:
    """The spans a policy trains (see the module docstring)."""
    usable = [s for s in spans if s.get("weight") is None or s["weight"] > 0]
    if policy == "flag":
        return [s for s in usable if s.get("train") is True]
    usable = [s for s in usable if s.get("train") is not False]
    if policy == "last":
        last_turn = max((s["turn"] for s in spans), default=None)
        return [s for s in usable if s["turn"] == last_turn]
    return usable


def tokenize(
    df: pl.DataFrame,
    tokenizer: Tokenizer,
    *,
    train_on: str = "all",
    train_eot: bool = True,
    train_prompt: bool = False,
    max_len: int | None = None,
    truncation: str = "right",
    source: str | None = None,
) -> TokenizeResult:
    if train_on not in POLICIES:
        raise ValueError(f"train_on must be one of {', '.join(POLICIES)}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}")
    missing = [c for c in ("text", "spans") if c not in df.columns]
    if missing:
        raise DataError(
            f"no {' or '.join(repr(c) for c in missing)} column", file=source,
            fix="run the records through `sftdata render-template` first",
        )
    texts = df["text"].to_list()
    all_spans = df["spans"].to_list()
    ids_out: list[np.ndarray] = []
    labels_out: list[np.ndarray] = []
    kept: list[int] = []
    dropped: list[int] = []
    reasons: list[str] = []
    lengths = np.zeros(df.height, dtype=np.int64)
    truncated = lost = 0
    for lo in range(0, df.height, BATCH_ROWS):
        batch_texts = [t or "" for t in texts[lo : lo + BATCH_ROWS]]
        char_spans = []
        for spans in all_spans[lo : lo + BATCH_ROWS]:
            chosen = trained_spans(spans or [], train_on)
            char_spans.append(
                [(s["start"], s["end"] if train_eot else s["eot_start"]) for s in chosen]
            )
        encoded = tokenizer.encode(batch_texts, [[] if train_prompt else c for c in char_spans])
        for k, ids in enumerate(encoded.ids):
            row = lo + k
            labels = ids.copy() if train_prompt else _labels(ids, encoded.ranges[k])
            lengths[row] = ids.size
            supervised = int((labels != LABEL_PAD).sum())
            if supervised == 0:
                dropped.append(row)
                reasons.append(f"no supervised token (train-on {train_on})")
                continue
            if max_len is not None and ids.size > max_len:
                if truncation == "fail":
                    raise DataError(
                        f"{ids.size} tokens, longer than --max-len {max_len}", file=source,
                        row=row, field="text",
                        fix="raise --max-len or choose --truncation right, left or drop",
                    )
                if truncation == "drop":
                    dropped.append(row)
                    reasons.append(f"{ids.size} tokens, longer than --max-len {max_len}")
                    continue
                cut = slice(0, max_len) if truncation == "right" else slice(ids.size - max_len, None)
                ids, labels = ids[cut], labels[cut]
                truncated += 1
                left = int((labels != LABEL_PAD).sum())
                lost += supervised - left
                if left == 0:
                    dropped.append(row)
                    reasons.append(
                        f"no supervised token left after {truncation} truncation to {max_len}"
                    )
                    continue
            kept.append(row)
            ids_out.append(ids)
            labels_out.append(labels)
    records = df.drop([c for c in OUTPUT_COLUMNS if c in df.columns])[kept].with_columns(
        _list_series("input_ids", ids_out),
        _list_series("labels", labels_out),
        pl.Series("n_tokens", [a.size for a in ids_out], dtype=pl.Int32),
        pl.Series("n_supervised", [int((a != LABEL_PAD).sum()) for a in labels_out], dtype=pl.Int32),
        pl.lit(tokenizer.info_json(), dtype=pl.String).alias("tokenizer"),
    )
    rejects = df[dropped].with_columns(pl.Series("reason", reasons, dtype=pl.String))
    report = _report(df.height, records, rejects, lengths, truncated, lost, max_len, truncation)
    report["tokenizer"] = tokenizer.info()
    return TokenizeResult(records, rejects, report, lengths)


def _labels(ids: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    labels = np.full(ids.size, LABEL_PAD, dtype=np.int32)
    for first, stop in ranges:
        labels[first:stop] = ids[first:stop]
    return labels


def _list_series(name: str, arrays: list[np.ndarray]) -> pl.Series:
    import pyarrow as pa

    sizes = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    values = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
    column = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))
    return pl.Series(name, pl.from_arrow(column), dtype=pl.List(pl.Int32))


def _stats(values: np.ndarray) -> dict[str, int]:
    if values.size == 0:
        return {"min": 0, "median": 0, "p95": 0, "max": 0}
    return {
        "min": int(values.min()),
        "median": int(np.median(values)),
        "p95": int(np.percentile(values, 95)),
        "max": int(values.max()),
    }


def _report(
    rows_in: int, records: pl.DataFrame, rejects: pl.DataFrame, lengths: np.ndarray,
    truncated: int, lost: int, max_len: int | None, truncation: str,
) -> dict[str, Any]:
    reasons = rejects["reason"].to_list() if rejects.height else []
    return {
        "rows_in": rows_in,
        "rows_out": records.height,
        "rows_dropped": rejects.height,
        "rows_no_supervised": sum("no supervised token" in r for r in reasons),
        "rows_too_long_dropped": sum("longer than --max-len" in r for r in reasons),
        "rows_truncated": truncated,
        "supervised_tokens_lost": lost,
        "max_len": max_len,
        "truncation": truncation if max_len is not None else None,
        "tokens": int(records["n_tokens"].sum() or 0),
        "supervised_tokens": int(records["n_supervised"].sum() or 0),
        "length_before_truncation": _stats(lengths),
        "length_out": _stats(records["n_tokens"].to_numpy()),
    }


def plot_lengths(lengths: np.ndarray, path: str, max_len: int | None = None) -> None:
    """Histogram of token counts per row (before truncation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lengths, bins=min(60, max(5, int(np.sqrt(max(lengths.size, 1))))), color="#4477aa")
    if max_len is not None:
        ax.axvline(max_len, color="#cc3311", linestyle="--", label=f"--max-len {max_len}")
        ax.legend()
    ax.set_xlabel("tokens per record")
    ax.set_ylabel("records")
    ax.set_title(f"{lengths.size} records")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
