"""Tokenize rendered records: adds `input_ids`, `labels`, `n_tokens`, `n_supervised`, `tokenizer`.

Labels come from the spans render-template wrote (character offsets mapped to tokens), never from
searching marker strings in token ids. Which spans are trained is a policy:

  all   every assistant turn whose `train` flag is not false (default)
  last  only the last assistant turn (unless its flag is false)
  flag  only turns flagged train = true
A turn with weight 0 is never trained. The end-of-turn marker of a trained turn is trained unless
``train_eot=False``; ``train_prompt`` trains every token.

Truncation to ``max_len``: right (keep the start), left (keep the end of the conversation), drop,
or fail. Raw text records (task ``text``, continued pretraining) are never cut: ``pack --strategy
wrap`` splits them into seq_len chunks without losing a token, so --max-len caps the chat rows of
a mixed input only (the report counts the longer text rows kept whole). Only the first (left: last) :func:`char_cap` characters of a row are encoded, so a huge
row costs what max_len does, not what its length does (M12); the report counts such rows. Rows left with no supervised token are never passed on: they go to ``rejects`` with a
reason (the command fails on them unless --rejects is given).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..errors import DataError
from ..tokenizers import Encoded, Tokenizer

LABEL_PAD = -100
POLICIES = ("all", "last", "flag")
TRUNCATIONS = ("right", "left", "drop", "fail")
OUTPUT_COLUMNS = ("input_ids", "labels", "n_tokens", "n_supervised", "tokenizer")
CHUNK_ROWS = 8192


@dataclass
class TokenizeResult:
    records: pl.DataFrame
    rejects: pl.DataFrame  # rows dropped, with a `reason`
    report: dict[str, Any]
    lengths: np.ndarray = field(repr=False)  # token count of every row before truncation
    reject_rows: list[int] = field(default_factory=list)  # input row (0-based) of each reject


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


def chosen_char_spans(
    spans: pl.Series, policy: str, train_eot: bool = True
) -> list[list[tuple[int, int]]]:
    """Per row, the character ranges a policy trains: :func:`trained_spans` computed by Polars
    on the exploded column (turning list<struct> into Python dicts was the slowest step)."""
    out: list[list[tuple[int, int]]] = [[] for _ in range(spans.len())]
    inner = spans.dtype.inner if isinstance(spans.dtype, pl.List) else None
    if not isinstance(inner, pl.Struct):
        # no row has an assistant span: JSONL gives List(Null), an empty file String (M10)
        if spans.null_count() == spans.len() or (
            isinstance(spans.dtype, pl.List) and (spans.list.len().fill_null(0) == 0).all()
        ):
            return out
        raise DataError(
            f"the spans column is {spans.dtype}, not a list of spans", field="spans",
            fix="run the records through `sftdata render-template` first",
        )
    flat = (
        pl.DataFrame({"s": spans}).with_row_index("row").explode("s").drop_nulls("s").unnest("s")
    )
    if flat.height == 0:
        return out
    keep = pl.col("weight").is_null() | (pl.col("weight") > 0)
    if policy == "flag":
        keep &= pl.col("train").fill_null(False)
    else:
        keep &= pl.col("train").fill_null(True)
    if policy == "last":
        keep &= pl.col("turn") == pl.col("turn").max().over("row")
    chosen = flat.filter(keep).select("row", "start", "end" if train_eot else "eot_start")
    rows, starts, ends = (chosen.to_series(i).to_list() for i in range(3))
    for row, start, end in zip(rows, starts, ends, strict=True):
        out[row].append((start, end))
    return out


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
    allow_split_tokens: bool = False,
) -> TokenizeResult:
    if train_on not in POLICIES:
        raise ValueError(f"train_on must be one of {', '.join(POLICIES)}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}")
    missing = [c for c in ("text", "spans") if c not in df.columns]
    if missing and df.height == 0:  # L23: empty input is 0 rows, from JSONL as from Parquet
        from .render_template import SPANS_TYPE

        df = df.with_columns(pl.Series("text", [], dtype=pl.String), pl.Series("spans", [], dtype=SPANS_TYPE))
        missing = []
    if missing:
        raise DataError(
            f"no {' or '.join(repr(c) for c in missing)} column", file=source,
            fix="run the records through `sftdata render-template` first",
        )
    if not allow_split_tokens:
        check_control_tokens(df, tokenizer, source)
    texts = [t or "" for t in df["text"].to_list()]
    char_spans = (
        [[] for _ in texts] if train_prompt else chosen_char_spans(df["spans"], train_on, train_eot)
    )
    uncapped = _text_rows(df)  # raw text: no length cap (docs/cpt.md)
    cap = char_cap(tokenizer, max_len)
    capped = _cap_texts(texts, char_spans, cap, truncation, uncapped) if cap is not None else []
    # encoded in chunks (bounded Python lists), then labels and counts are whole-array numpy
    encoded = _merge([
        tokenizer.encode(texts[i : i + CHUNK_ROWS], char_spans[i : i + CHUNK_ROWS])
        for i in range(0, len(texts), CHUNK_ROWS)
    ])
    ids, offsets = encoded.ids, encoded.offsets
    trained = np.ones(ids.size, dtype=bool) if train_prompt else _trained_mask(encoded, char_spans)
    ids, offsets, trained, eos_added = _end_text_rows(df, uncapped, ids, offsets, trained,
                                                      tokenizer.eos_id)
    labels = np.where(trained, ids, LABEL_PAD).astype(np.int32)
    supervised_before = _count(trained, offsets[:-1], offsets[1:])
    lengths = np.diff(offsets)

    lo, hi = offsets[:-1].copy(), offsets[1:].copy()
    reasons: dict[int, str] = {}
    no_spans = (
        np.zeros(len(texts), dtype=bool) if train_prompt or df.height == 0
        else _span_counts(df["spans"]) == 0
    )
    is_capped = np.zeros(len(texts), dtype=bool)
    is_capped[capped] = True  # longer than max_len whatever the rest holds: truncation decides
    for row in np.flatnonzero((supervised_before == 0) & ~is_capped):
        reasons[int(row)] = (
            "no supervised token (no assistant turn to train)" if no_spans[row]
            else f"no supervised token (train-on {train_on})"
        )
    over = (lengths > max_len) if max_len is not None else np.zeros(len(texts), dtype=bool)
    long_text_rows = int((over & uncapped).sum())
    too_long = np.flatnonzero(over & ~uncapped)
    too_long = np.array([r for r in too_long if int(r) not in reasons], dtype=np.int64)
    if too_long.size and truncation == "fail":
        row = int(too_long[0])
        raise DataError(
            f"{_count_text(lengths[row], is_capped[row])} tokens, longer than --max-len {max_len}",
            file=source, row=row + 1,
            field="text", fix="raise --max-len or choose --truncation right, left or drop",
        )
    if too_long.size and truncation == "drop":
        for row in too_long:
            reasons[int(row)] = (f"{_count_text(lengths[row], is_capped[row])} tokens, longer "
                                 f"than --max-len {max_len}")
    elif too_long.size:
        if truncation == "right":
            hi[too_long] = lo[too_long] + max_len
        else:
            lo[too_long] = hi[too_long] - max_len
    supervised = _count(trained, lo, hi)
    truncated = int(too_long.size) if truncation in ("right", "left") else 0
    lost = int((supervised_before - supervised)[too_long].sum()) if truncated else 0
    if truncated:
        for row in too_long[supervised[too_long] == 0]:
            reasons[int(row)] = f"no supervised token left after {truncation} truncation to {max_len}"

    dropped = sorted(reasons)
    keep = np.ones(df.height, dtype=bool)
    keep[dropped] = False
    kept = np.flatnonzero(keep)
    take = _ranges_index(lo[kept], hi[kept])
    out_offsets = np.zeros(kept.size + 1, dtype=np.int64)
    np.cumsum(hi[kept] - lo[kept], out=out_offsets[1:])
    records = df.drop([c for c in OUTPUT_COLUMNS if c in df.columns])[kept.tolist()].with_columns(
        _list_series("input_ids", ids[take], out_offsets),
        _list_series("labels", labels[take], out_offsets),
        pl.Series("n_tokens", np.diff(out_offsets), dtype=pl.Int32),
        pl.Series("n_supervised", supervised[kept], dtype=pl.Int32),
        pl.lit(tokenizer.info_json(), dtype=pl.String).alias("tokenizer"),
    )
    rejects = df[dropped].with_columns(
        pl.Series("reason", [reasons[r] for r in dropped], dtype=pl.String)
    )
    report = _report(df.height, records, rejects, lengths, truncated, lost, max_len, truncation)
    report["rows_capped"] = len(capped)
    report["text_rows_kept_whole"] = long_text_rows
    report["text_rows_eos_added"] = eos_added
    report["char_cap"] = cap
    report["tokenizer"] = tokenizer.info()
    return TokenizeResult(records, rejects, report, lengths, dropped)


# What a template's control tokens look like: <|im_start|>, <｜Assistant｜>, <s>, </s>, <SOT>
_CONTROL_TOKEN = re.compile(r"<\|[^\s<>|]{1,64}\|>|<｜[^\s<>｜]{1,64}｜>|</?s>|<[A-Z][A-Z0-9_]{1,31}>")
_TOKEN_SHAPE = re.compile(r"</?[^\s<>]{1,64}>")
EOT_SAMPLE_ROWS = 256


def control_tokens(df: pl.DataFrame) -> list[str]:
    """The control tokens rendered records were made with: those written in their template
    (and its special-token variables) and the end-of-turn markers their spans train."""
    from ..templates import SPECIAL_TOKEN_NAMES, TemplateError, load_template

    found: list[str] = []
    if "template" in df.columns:
        for spec in df["template"].drop_nulls().unique().head(4).to_list():
            try:
                template = load_template(spec)
            except (TemplateError, OSError, ValueError, KeyError):
                continue  # moved or changed: the spans below still show its markers
            found += _CONTROL_TOKEN.findall(template.text)
            found += [template.variables[k] for k in SPECIAL_TOKEN_NAMES if template.variables.get(k)]
            found.append(template.eos_token)
    sample = df.head(EOT_SAMPLE_ROWS)
    if isinstance(sample["spans"].dtype, pl.List) and isinstance(sample["spans"].dtype.inner, pl.Struct):
        flat = sample.select("text", "spans").with_row_index("row").explode("spans").drop_nulls("spans")
        for text, span in zip(flat["text"].to_list(), flat["spans"].to_list(), strict=True):
            marker = (text or "")[span["eot_start"]:span["end"]].strip()
            if _TOKEN_SHAPE.fullmatch(marker):
                found.append(marker)
    return [t for t in dict.fromkeys(found) if t and _TOKEN_SHAPE.fullmatch(t)]


def check_control_tokens(df: pl.DataFrame, tokenizer: Tokenizer, source: str | None) -> None:
    """Refuse text whose template control tokens this tokenizer would split into ordinary
    pieces (M11): the trained end-of-turn would be a string of pieces, never one token."""
    if df.height == 0 or df["text"].dtype != pl.String:
        return
    split: list[tuple[str, int, int]] = []  # token, pieces, first row (0-based)
    for token in control_tokens(df):
        pieces = tokenizer.encode_plain([token])[0].size
        if pieces == 1:
            continue
        hits = df["text"].str.contains(token, literal=True).fill_null(False)
        if hits.any():
            split.append((token, pieces, int(hits.arg_max())))
    if not split:
        return
    first_row = min(row for _, _, row in split)
    listed = ", ".join(f"{t!r} ({n} pieces)" for t, n, _ in split)
    if tokenizer.backend == "tiktoken":
        ids = ",".join(f"{t}=ID" for t, _, _ in split)
        fix = (f"give them ids with --special '{ids}' (ids above the vocabulary), render with a "
               "template this tokenizer has tokens for, or pass --allow-split-tokens to tokenize "
               "them as plain text")
    else:
        fix = ("tokenize with the tokenizer the template was made for, render with this "
               f"tokenizer's own template (sftdata render-template -t {getattr(tokenizer, 'spec', '') or tokenizer.name}), "
               "or pass --allow-split-tokens to tokenize them as plain text")
    raise DataError(
        f"control token(s) of the template are not single tokens of {tokenizer.name}: {listed}",
        file=source or "<stdin>", row=first_row + 1, field="text", fix=fix,
    )


CAP_SAFETY = 4  # normalizers may drop characters (accents, controls): room for that


def char_cap(tokenizer: Tokenizer, max_len: int | None) -> int | None:
    """How many characters of a row are encoded under ``max_len`` (M12): enough for max_len +
    8 tokens of the tokenizer's longest entry, times CAP_SAFETY. A row cut to it still has more
    than max_len tokens, so truncation, drop and fail decide as on the whole text."""
    if max_len is None:
        return None
    return CAP_SAFETY * tokenizer.max_token_chars() * (max_len + 8)


def _count_text(count: int, capped: bool) -> str:
    return f"more than {count}" if capped else str(count)


def _text_rows(df: pl.DataFrame) -> np.ndarray:
    """Rows of task ``text`` (raw text for continued pretraining), which no length cap cuts."""
    if "task" not in df.columns or df.height == 0:
        return np.zeros(df.height, dtype=bool)
    return (df["task"].cast(pl.String) == "text").fill_null(False).to_numpy()


def _end_text_rows(
    df: pl.DataFrame, text_rows: np.ndarray, ids: np.ndarray, offsets: np.ndarray,
    trained: np.ndarray, eos_id: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Raw text rows end with a trained end-of-text token, so documents wrapped into one stream
    stay apart: render-template appends the template's end-of-text marker; where a template has
    none (its span has no marker: eot_start == end), the tokenizer's EOS is appended here."""
    if eos_id is None or not text_rows.any() or not isinstance(df["spans"].dtype, pl.List):
        return ids, offsets, trained, 0
    last = df["spans"].list.last()
    if not isinstance(last.dtype, pl.Struct):
        return ids, offsets, trained, 0
    no_marker = (last.struct.field("eot_start") >= last.struct.field("end")).fill_null(True)
    lens = np.diff(offsets)
    ends_with_eos = np.zeros(lens.size, dtype=bool)
    nonempty = lens > 0
    ends_with_eos[nonempty] = ids[offsets[1:][nonempty] - 1] == eos_id
    needs = text_rows & no_marker.to_numpy() & ~ends_with_eos
    if not needs.any():
        return ids, offsets, trained, 0
    at = offsets[1:][needs]
    ids = np.insert(ids, at, np.asarray(eos_id, dtype=ids.dtype))
    trained = np.insert(trained, at, True)
    offsets = offsets + np.concatenate([[0], np.cumsum(needs)])
    return ids, offsets, trained, int(needs.sum())


def _cap_texts(
    texts: list[str], spans: list[list[tuple[int, int]]], cap: int, truncation: str,
    exempt: np.ndarray,
) -> list[int]:
    """Cut rows longer than ``cap`` characters in place (the end kept for left truncation, the
    start otherwise), spans moved and clipped with them; the rows cut. ``exempt`` rows (raw
    text) are never cut."""
    cut = []
    for i, text in enumerate(texts):
        if len(text) <= cap or exempt[i]:
            continue
        cut.append(i)
        if truncation == "left":
            shift = len(text) - cap
            texts[i] = text[shift:]
            spans[i] = [(max(a - shift, 0), b - shift) for a, b in spans[i] if b - shift > 0]
        else:
            texts[i] = text[:cap]
            spans[i] = [(a, min(b, cap)) for a, b in spans[i] if a < cap]
    return cut


def _span_counts(spans: pl.Series) -> np.ndarray:
    if not isinstance(spans.dtype, pl.List):
        return np.zeros(spans.len(), dtype=np.int64)
    return spans.list.len().fill_null(0).to_numpy().astype(np.int64)


def _merge(parts: list[Encoded]) -> Encoded:
    if not parts:
        return Encoded(np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros((0, 2), np.int64))
    if len(parts) == 1:
        return parts[0]
    shifts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
    offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + k for p, k in zip(parts, shifts, strict=True)])
    return Encoded(
        np.concatenate([p.ids for p in parts]), offsets, np.concatenate([p.ranges for p in parts])
    )


def _trained_mask(encoded: Encoded, char_spans: list[list[tuple[int, int]]]) -> np.ndarray:
    """True on every token inside a trained span: +1 at each range start, -1 at its stop."""
    counts = np.fromiter((len(c) for c in char_spans), dtype=np.int64, count=len(char_spans))
    rows = np.repeat(np.arange(len(char_spans)), counts)
    base = encoded.offsets[rows]
    first, stop = encoded.ranges[:, 0] + base, encoded.ranges[:, 1] + base
    real = stop > first
    delta = np.zeros(encoded.ids.size + 1, dtype=np.int64)
    np.add.at(delta, first[real], 1)
    np.add.at(delta, stop[real], -1)
    return np.cumsum(delta[:-1]) > 0


def _count(mask: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Number of True in mask[lo:hi] for every row (lo/hi are flat positions)."""
    cumulative = np.zeros(mask.size + 1, dtype=np.int64)
    np.cumsum(mask, out=cumulative[1:])
    return cumulative[hi] - cumulative[lo]


def _ranges_index(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of arange(lo[i], hi[i]) for all i, without a Python loop."""
    sizes = hi - lo
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    return starts + np.arange(total, dtype=np.int64)


def _list_series(name: str, values: np.ndarray, offsets: np.ndarray) -> pl.Series:
    """list<i32> straight from one values buffer and its offsets (no Python list per row;
    Arrow buffers directly, as pa.array would import pandas on first use)."""
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.int32)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    column = pa.LargeListArray.from_arrays(
        pa.Array.from_buffers(pa.int64(), offsets.size, [None, pa.py_buffer(offsets)]),
        pa.Array.from_buffers(pa.int32(), values.size, [None, pa.py_buffer(values)]),
    )
    return pl.Series(name, column).cast(pl.List(pl.Int32))


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
