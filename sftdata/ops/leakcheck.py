"""Which training records contain which reference items (benchmarks, val/test/gold), and the proof.

Texts are compared on one view (``on``, the same for training records and reference items): the
prompt (every non-assistant turn), the response (every assistant turn) or the whole conversation
(every turn's content, no role names). Words
are normalized (NFKC, lower case; punctuation and whitespace ignored, see sftdata.ngrams).
Evidence for a (training record, reference item) pair comes in four kinds:

  exact  the same word sequence.
  ngram  shared word n-grams (``ngram`` words, 13 as in GPT-3 and lm-eval) for items of at least
         ``ngram`` words. An n-gram found in more than ``frequent_cutoff`` distinct training
         texts, or in more than ``frequent_cutoff`` distinct reference items, is boilerplate and
         ignored (as NeMo Curator does). The words such n-grams cover in an item are its
         *boilerplate words* (a shared prompt template, a benchmark's own instructions); the
         rest are its *content words*. Only *content n-grams*, more than half of whose words are
         content words, count as evidence, so "template + first word of the story" is not a
         match. ``overlap`` = share of the item's content words covered by shared content
         n-grams.
  short  an item shorter than ``ngram`` words found whole (as a run of words) in the record.
  near   a MinHash near-duplicate (word 5-gram shingles, LSH for ``near_threshold``), kept only
         when the exact Jaccard similarity of the shingle sets reaches ``near_threshold``.

Confidence: generic short prompts ("Who are you?" is a TruthfulQA item and a chat opener) collide
by chance. An item is *generic* when it has fewer than ``min_ngram`` words, or fewer than
``ngram`` words and matches more than ``frequent_cutoff`` distinct training texts. A pair is
*high* confidence when its item is not generic and it has exact, short or near evidence, or
n-grams covering at least ``min_overlap`` of the item (one stray 13-gram is not enough); every
other pair is *low*. High-confidence records are the contaminated ones; low-confidence ones are
reported apart, never counted as contaminated (unless the caller asks) and never silently ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..errors import UsageProblem
from ..ngrams import Corpus
from ..text import view_expr

ON_CHOICES = ("prompt", "response", "whole")
KINDS = ("exact", "ngram", "short", "near")  # also the priority when a pair has several
NEAR_SHINGLE = 5  # word 5-grams for MinHash, as datatrove
EVIDENCE_NGRAMS = 5  # matching n-grams quoted per pair in the evidence
CHUNK_BYTES = 32 * 1024 * 1024  # training text per scan chunk: bounds the word arrays (~1 GB)

MATCH_SCHEMA = {
    "train_id": pl.String,
    "ref_set": pl.String,
    "ref_id": pl.String,
    "kind": pl.String,
    "confidence": pl.String,
    "overlap": pl.Float64,
    "evidence": pl.String,
}


@dataclass
class LeakResult:
    matches: pl.DataFrame  # one row per (training record, reference item) pair, see MATCH_SCHEMA
    contaminated_ids: list[str]  # training ids with a high-confidence match, sorted
    low_confidence_ids: list[str]  # training ids with only low-confidence matches, sorted
    summary: dict[str, Any] = field(default_factory=dict)


def view_text_expr(on: str) -> pl.Expr:
    """The text a record is compared on: prompt, response or whole (contents only, no roles)."""
    if on == "whole":
        content = pl.element().struct.field("content").fill_null("")
        return pl.col("messages").list.eval(content).list.join("\n")
    if on in ("prompt", "response"):
        return view_expr(on)
    raise UsageProblem(f"--on must be one of {', '.join(ON_CHOICES)}, got {on!r}")


def check_params(
    *, on: str, ngram: int, min_ngram: int, frequent_cutoff: int, near_threshold: float,
    num_perm: int, min_overlap: float,
) -> None:
    """Every problem with the parameters at once, as one UsageProblem."""
    problems = []
    if on not in ON_CHOICES:
        problems.append(f"--on must be one of {', '.join(ON_CHOICES)}, got {on!r}")
    if ngram < 1:
        problems.append(f"--ngram must be at least 1, got {ngram}")
    if min_ngram < 1:
        problems.append(f"--min-ngram must be at least 1, got {min_ngram}")
    if frequent_cutoff < 1:
        problems.append(f"--frequent-cutoff must be at least 1, got {frequent_cutoff}")
    if not 0.0 < near_threshold <= 1.0:
        problems.append(f"--near-threshold must be in (0, 1], got {near_threshold}")
    if num_perm < 2:
        problems.append(f"--num-perm must be at least 2, got {num_perm}")
    if not 0.0 < min_overlap <= 1.0:
        problems.append(f"--min-overlap must be in (0, 1], got {min_overlap}")
    if problems:
        raise UsageProblem("; ".join(problems))


def leakcheck(
    train: pl.DataFrame,
    references: dict[str, pl.DataFrame],
    *,
    on: str = "prompt",
    ngram: int = 13,
    min_ngram: int = 8,
    frequent_cutoff: int = 10,
    near_threshold: float = 0.8,
    num_perm: int = 128,
    min_overlap: float = 0.4,
    near: bool = True,
    seed: int = 1,
    chunk_rows: int = 20_000,
    workers: int | None = None,
) -> LeakResult:
    """Evidence of every reference item found in the training records (see the module doc)."""
    index = reference_index(
        references, on=on, ngram=ngram, min_ngram=min_ngram, frequent_cutoff=frequent_cutoff,
        near_threshold=near_threshold, num_perm=num_perm, min_overlap=min_overlap, near=near,
    )
    train_text = train.select(index.view.alias("text"))["text"]
    found = scan(train_text, index, chunk_rows)
    return finish(train, train_text, found, index, seed=seed, workers=workers)


@dataclass
class ReferenceIndex:
    """What the training side is scanned against, built from the (small) reference side once:
    an engine hands it to every worker that scans a part of the training records."""

    view: pl.Expr
    items: pl.DataFrame
    refs: Corpus
    ref_windows: pl.DataFrame
    boiler_ref: pl.DataFrame
    wanted_windows: pl.DataFrame
    shingle_index: tuple[pl.DataFrame, pl.DataFrame] | None
    params: dict[str, Any]


def reference_index(references: dict[str, pl.DataFrame], **params: Any) -> ReferenceIndex:
    check_params(**{k: v for k, v in params.items() if k != "near"})
    params["min_ngram"] = min(params["min_ngram"], params["ngram"])  # never generic at ngram words
    view = view_text_expr(params["on"])
    ref_items = _reference_items(references, view)
    refs = Corpus.from_texts(ref_items["text"])
    ref_items = ref_items.with_columns(
        pl.Series("words", refs.lengths, dtype=pl.Int64),
        pl.Series("whole", refs.whole(), dtype=pl.UInt64),
    )
    ref_windows, boiler_ref = _reference_windows(refs, ref_items, params["ngram"],
                                                 params["frequent_cutoff"])
    wanted_windows = ref_windows.join(boiler_ref, on="hash", how="anti")
    shingle_index = (_shingle_index(refs, ref_items, params["frequent_cutoff"])
                     if params["near"] else None)
    return ReferenceIndex(view, ref_items, refs, ref_windows, boiler_ref, wanted_windows,
                          shingle_index, params)


def scan(train_text: pl.Series, index: ReferenceIndex, chunk_rows: int = 20_000
         ) -> dict[str, pl.DataFrame]:
    """The training texts scanned against the index: row-local (rows from 0 for these texts),
    so parts of the training set can be scanned apart and their findings concatenated."""
    return _scan_train(train_text, index.items, index.wanted_windows, index.params["ngram"],
                       chunk_rows, index.shingle_index, index.params["near_threshold"])


def finish(train: pl.DataFrame, train_text: pl.Series, found: dict[str, pl.DataFrame],
           index: ReferenceIndex, *, seed: int = 1, workers: int | None = None) -> LeakResult:
    """Pairs, verdicts and the summary from the findings of :func:`scan` over all of ``train``.

    Reads ``train`` only for its height and the ids of matched rows, and ``train_text`` only at
    near-duplicate candidate rows, so an engine may pass frames holding just those."""
    p = index.params
    ngram, frequent_cutoff = p["ngram"], p["frequent_cutoff"]
    ngram_pairs, boiler_train, content, boiler_windows = _ngram_pairs(
        found, index.refs, index.ref_windows, index.boiler_ref, ngram, frequent_cutoff
    )
    ref_items = index.items.with_columns(pl.Series("content", content, dtype=pl.Int64))
    short_pairs = found["contained"].with_columns(pl.lit(True).alias("contained"))
    near_pairs = (
        _near_pairs(train_text, ref_items, found["near_candidates"], p["near_threshold"],
                    p["num_perm"], seed, workers)
        if p["near"]
        else _empty_near()
    )
    pairs = _combine(found["exact"], ngram_pairs, short_pairs, near_pairs)
    pairs = _judge(pairs, ref_items, found["wholes"], ngram, p["min_ngram"], frequent_cutoff,
                   p["min_overlap"])
    matches = _matches_frame(pairs, train, ref_items, index.refs, ngram)

    high = matches.filter(pl.col("confidence") == "high")["train_id"].unique().sort().to_list()
    high_set = set(high)
    low = sorted(
        {i for i in matches.filter(pl.col("confidence") == "low")["train_id"].to_list()}
        - high_set
    )
    summary = _summary(
        train, ref_items, matches, high, low, **p,
        frequent_ngrams_ignored=int(index.boiler_ref.height + boiler_train),
        boilerplate_windows_ignored=boiler_windows,
    )
    return LeakResult(matches, high, low, summary)


def decontaminate(
    train: pl.DataFrame, result: LeakResult, *, include_low: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, dropped): training records without / with a match; dropped gets a `reason` column.

    Records are matched by id (every row with a flagged id goes). The reason names the strongest
    match: confidence, kind, reference set and item, overlap.
    """
    ids = set(result.contaminated_ids) | (set(result.low_confidence_ids) if include_low else set())
    best = (
        result.matches.filter(pl.col("train_id").is_in(list(ids)))
        .with_columns(
            pl.col("confidence").replace_strict({"high": 0, "low": 1}).alias("_c"),
            pl.col("kind").replace_strict({k: i for i, k in enumerate(KINDS)}).alias("_k"),
        )
        .sort(["train_id", "_c", "_k", "overlap", "ref_set", "ref_id"],
              descending=[False, False, False, True, False, False])
        .unique("train_id", keep="first", maintain_order=True)
        .select(
            "train_id",
            pl.format(
                "leak: {} {} match with {} item {} (overlap {})",
                "confidence", "kind", "ref_set", "ref_id", pl.col("overlap").round(3),
            ).alias("reason"),
        )
    )
    flagged = train["id"].is_in(list(ids))
    kept = train.filter(~flagged)
    dropped = train.filter(flagged).join(
        best, left_on="id", right_on="train_id", how="left", maintain_order="left"
    )
    return kept, dropped


@dataclass
class DropResult:
    kept: pl.DataFrame
    dropped: pl.DataFrame  # with a `reason` column
    rounds: list[LeakResult]  # the first is the check of the whole input
    clean: bool  # a check of `kept` found nothing (False only when max_rounds ran out)
    first_dropped: int  # rows dropped by the first check alone


def drop_until_clean(
    train: pl.DataFrame,
    references: dict[str, pl.DataFrame],
    *,
    include_low: bool = False,
    max_rounds: int = 5,
    first: LeakResult | None = None,
    **params: Any,
) -> DropResult:
    """decontaminate, then check the kept records again until a check finds nothing.

    One pass is not enough: an n-gram in more than ``frequent_cutoff`` training texts is
    boilerplate, and dropping contaminated records can bring it under the cutoff, where it is
    evidence again. Without the re-check, ``leakcheck --drop`` output would fail a second
    ``leakcheck``. Records dropped in a later round say so in their reason.
    """
    rounds = [first if first is not None else leakcheck(train, references, **params)]
    kept, dropped = decontaminate(train, rounds[0], include_low=include_low)
    parts = [dropped]
    while len(rounds) < max_rounds and parts[-1].height:
        check = leakcheck(kept, references, **params)
        rounds.append(check)
        kept, more = decontaminate(kept, check, include_low=include_low)
        parts.append(later_round(more, len(rounds)))
    clean = parts[-1].height == 0
    return DropResult(kept, pl.concat(parts, how="vertical_relaxed"), rounds, clean,
                      parts[0].height)


def later_round(dropped: pl.DataFrame, check: int) -> pl.DataFrame:
    """The reasons of records dropped by check number ``check`` (2 and later) say why the
    earlier checks kept them."""
    return dropped.with_columns(
        pl.format("{} (round {}: boilerplate no longer once the records of round {} were "
                  "dropped)", "reason", pl.lit(check), pl.lit(check - 1)).alias("reason"))


# --------------------------------------------------------------------------- references


def _reference_items(references: dict[str, pl.DataFrame], view: pl.Expr) -> pl.DataFrame:
    """All reference sets as one frame: ref (global index), ref_set, ref_id, text."""
    parts = [
        frame.select(
            pl.lit(name, dtype=pl.String).alias("ref_set"),
            pl.col("id").cast(pl.String).alias("ref_id"),
            view.alias("text"),
        )
        for name, frame in references.items()
    ]
    items = (
        pl.concat(parts)
        if parts
        else pl.DataFrame(schema={"ref_set": pl.String, "ref_id": pl.String, "text": pl.String})
    )
    return items.with_row_index("ref").with_columns(pl.col("ref").cast(pl.Int64))


def _reference_windows(
    refs: Corpus, items: pl.DataFrame, n: int, cutoff: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(windows, boiler): every n-gram window of the long items (hash, ref, start), and the
    hashes of n-grams in more than ``cutoff`` distinct item texts (one column, hash).

    An n-gram that many different items share is the benchmark's own template, not an item.
    Distinct texts are counted, so an item repeated in the benchmark keeps its n-grams.
    """
    long_rows = items.filter(pl.col("words") >= n)["ref"].to_numpy()
    windows = refs.windows(n, rows=long_rows).rename({"row": "ref"})
    spread = windows.join(items.select("ref", "whole"), on="ref").group_by("hash").agg(
        pl.col("whole").n_unique().alias("items")
    )
    boiler = spread.filter(pl.col("items") > cutoff).select("hash")
    return windows, boiler


# --------------------------------------------------------------------------- training scan


def _scan_train(
    texts: pl.Series, items: pl.DataFrame, ref_windows: pl.DataFrame, n: int, chunk_rows: int,
    shingle_index: tuple[pl.DataFrame, pl.DataFrame] | None, near_threshold: float,
) -> dict[str, pl.DataFrame]:
    """One pass over the training texts in chunks (memory stays bounded by the chunk size).

    Returns exact pairs (row, ref), n-gram hits (hash, row), whole-item hits of short items
    (row, ref), near-duplicate candidates (row, ref) and each training text's whole hash (for
    counting distinct texts).
    """
    wanted = ref_windows.select("hash").unique()
    nonempty = items.filter(pl.col("words") > 0)
    by_whole = nonempty.select("whole", "ref")
    short = nonempty.filter(pl.col("words") < n)
    short_lengths = sorted(short["words"].unique().to_list())
    exact, hits, contained, wholes, near = [], [], [], [], []
    for lo, hi in _chunks(texts, chunk_rows):
        chunk = Corpus.from_texts(texts.slice(lo, hi - lo))
        lengths = chunk.lengths
        rows = pl.DataFrame(
            {"row": np.arange(lo, lo + len(chunk), dtype=np.int64), "whole": chunk.whole(),
             "words": lengths},
            schema={"row": pl.Int64, "whole": pl.UInt64, "words": pl.Int64},
        )
        wholes.append(rows)
        exact.append(
            rows.filter(pl.col("words") > 0).join(by_whole, on="whole").select("row", "ref")
        )
        found = chunk.windows(n).join(wanted, on="hash", how="semi")
        hits.append(found.select("hash", (pl.col("row") + lo).alias("row")).unique())
        for length in short_lengths:
            if length > lengths.max(initial=0):
                break
            candidates = short.filter(pl.col("words") == length).select("whole", "ref")
            found = chunk.windows(length).join(candidates, left_on="hash", right_on="whole")
            contained.append(found.select((pl.col("row") + lo).alias("row"), "ref").unique())
        if shingle_index is not None:
            found = _near_candidates(chunk, shingle_index, near_threshold)
            near.append(found.select((pl.col("row") + lo).alias("row"), "ref"))
    return {
        "exact": _concat(exact, {"row": pl.Int64, "ref": pl.Int64}),
        "hits": _concat(hits, {"hash": pl.UInt64, "row": pl.Int64}),
        "contained": _concat(contained, {"row": pl.Int64, "ref": pl.Int64}),
        "wholes": _concat(wholes, {"row": pl.Int64, "whole": pl.UInt64, "words": pl.Int64}),
        "near_candidates": _concat(near, {"row": pl.Int64, "ref": pl.Int64}),
    }


def _chunks(texts: pl.Series, max_rows: int) -> list[tuple[int, int]]:
    """[lo, hi) row ranges of at most max_rows rows and about CHUNK_BYTES of text each."""
    ends = texts.str.len_bytes().fill_null(0).cast(pl.Int64).cum_sum().to_numpy()
    bounds, lo = [], 0
    while lo < len(texts):
        # rows whose text ends within the byte budget of this chunk (at least one row)
        budget = (ends[lo - 1] if lo else 0) + CHUNK_BYTES
        hi = min(max(int(np.searchsorted(ends, budget, side="right")), lo + 1), lo + max_rows)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _concat(frames: list[pl.DataFrame], schema: dict[str, Any]) -> pl.DataFrame:
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def _ngram_pairs(
    found: dict[str, pl.DataFrame], refs: Corpus, ref_windows: pl.DataFrame,
    boiler_ref: pl.DataFrame, n: int, cutoff: int,
) -> tuple[pl.DataFrame, int, np.ndarray, int]:
    """Shared content n-grams per pair, and what was left out as boilerplate.

    Returns (pairs, frequent, content, ignored): pairs = (row, ref, ngrams, covered, starts)
    with ``covered`` the item's content words under shared content n-grams; frequent = n-grams
    in more than ``cutoff`` distinct training texts (not counted in the references already);
    content = per item its content words; ignored = shared windows left out for being mostly
    boilerplate.

    Frequency counts distinct training *texts*, so one benchmark item copied 50 times into the
    training data is still caught, while a phrase that 50 different records use is not evidence.
    """
    hits = found["hits"].join(found["wholes"].select("row", "whole"), on="row")
    spread = hits.group_by("hash").agg(pl.col("whole").n_unique().alias("texts"))
    frequent = spread.filter(pl.col("texts") > cutoff).select("hash")
    boiler = pl.concat([boiler_ref, frequent]).unique()
    # boilerplate words of each item: those under a window whose n-gram is frequent on either side
    starts = refs.offsets[ref_windows["ref"].to_numpy()] + ref_windows["start"].to_numpy()
    is_boiler = ref_windows.select(pl.col("hash").is_in(boiler["hash"].implode())).to_series()
    boiler_starts = starts[is_boiler.to_numpy()]
    total = int(refs.offsets[-1])
    depth = np.zeros(total + 1, dtype=np.int64)
    np.add.at(depth, boiler_starts, 1)
    np.add.at(depth, boiler_starts + n, -1)
    mask = np.cumsum(depth[:-1]) > 0
    prefix = np.zeros(total + 1, dtype=np.int64)  # boilerplate words before each position
    np.cumsum(mask, out=prefix[1:])
    content = refs.lengths - (prefix[refs.offsets[1:]] - prefix[refs.offsets[:-1]])
    # a content n-gram: not boilerplate itself, and more than half of its words are content
    window_boiler = prefix[starts + n] - prefix[starts]
    evidence = ref_windows.with_columns(
        pl.Series("absolute", starts, dtype=pl.Int64),
        pl.Series("ok", (2 * (n - window_boiler) > n) & ~is_boiler.to_numpy()),
    )
    hits = hits.join(frequent, on="hash", how="anti")
    per_window = hits.select("hash", "row").join(evidence, on="hash")
    ignored = per_window.filter(~pl.col("ok")).select("hash").n_unique()
    per_window = per_window.filter(pl.col("ok")).unique(["row", "ref", "start"])
    per_window = per_window.sort(["row", "ref", "start"])
    # content words of the item covered by the union of the matched windows [start, start + n)
    next_start = pl.col("start").shift(-1).over(["row", "ref"])
    cover = pl.min_horizontal(next_start - pl.col("start"), pl.lit(n)).fill_null(n)
    per_window = per_window.with_columns(cover.alias("cover"))
    begin = per_window["absolute"].to_numpy()
    end = begin + per_window["cover"].to_numpy()
    content_cover = per_window["cover"].to_numpy() - (prefix[end] - prefix[begin])
    pairs = per_window.with_columns(
        pl.Series("cover", content_cover, dtype=pl.Int64)
    ).group_by(["row", "ref"], maintain_order=True).agg(
        pl.len().alias("ngrams"),
        pl.col("cover").sum().alias("covered"),
        pl.col("start").head(EVIDENCE_NGRAMS).alias("starts"),
    )
    new_frequent = frequent.join(boiler_ref, on="hash", how="anti").height
    return pairs, new_frequent, content, ignored


# --------------------------------------------------------------------------- near-duplicates


def _empty_near() -> pl.DataFrame:
    return pl.DataFrame(schema={"row": pl.Int64, "ref": pl.Int64, "jaccard": pl.Float64})


def _shingle_index(
    refs: Corpus, items: pl.DataFrame, cutoff: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The items' word 5-gram shingles for finding near-duplicate candidates cheaply.

    Returns (rare, sizes): rare = (hash, ref) for shingles in at most ``cutoff`` items (a common
    one would pair every record using it with many items); sizes = per item its distinct
    shingles and how many of them are common. Items under 5 words have one shingle, the whole
    text, which the exact evidence already covers.
    """
    rows = items.filter(pl.col("words") >= NEAR_SHINGLE)["ref"].to_numpy()
    shingles = refs.windows(NEAR_SHINGLE, rows=rows).select("hash", pl.col("row").alias("ref"))
    shingles = shingles.unique()
    spread = shingles.join(items.select("ref", "whole"), on="ref").group_by("hash").agg(
        pl.col("whole").n_unique().alias("items")  # distinct item texts, as for n-grams
    )
    rare = shingles.join(spread.filter(pl.col("items") <= cutoff), on="hash", how="semi")
    sizes = (
        shingles.join(spread, on="hash")
        .group_by("ref")
        .agg(pl.len().alias("ref_shingles"), (pl.col("items") > cutoff).sum().alias("ref_common"))
    )
    return rare, sizes


def _near_candidates(
    chunk: Corpus, shingle_index: tuple[pl.DataFrame, pl.DataFrame], threshold: float
) -> pl.DataFrame:
    """(row, ref) pairs that can reach Jaccard >= threshold; every other pair provably cannot.

    J(A, B) >= t needs |A & B| >= t * |B| (B = the item's shingles); the rare shared shingles
    counted here miss at most the item's common ones, so a pair is kept when rare shared >= that
    bound minus them. MinHash then runs only on the records and items of these pairs. The one
    loss, by design: a pair must share at least one rare shingle, so an item made only of
    boilerplate (shingles of more than ``frequent_cutoff`` items) has no near-duplicate evidence.
    """
    rare, sizes = shingle_index
    shingles = chunk.windows(NEAR_SHINGLE).select("hash", "row")
    shared = shingles.join(rare, on="hash").group_by(["row", "ref"]).agg(
        pl.col("hash").n_unique().alias("shared")
    )
    bound = threshold * pl.col("ref_shingles") - pl.col("ref_common")
    return shared.join(sizes, on="ref").filter(pl.col("shared") >= bound - 1e-9).select("row", "ref")


def _near_pairs(
    texts: pl.Series, items: pl.DataFrame, candidates: pl.DataFrame, threshold: float,
    num_perm: int, seed: int, workers: int | None,
) -> pl.DataFrame:
    """MinHash LSH pairs among the candidates, kept when the exact Jaccard reaches threshold."""
    if candidates.height == 0:
        return _empty_near()
    from .. import minhash

    train_rows = candidates["row"].unique().sort().to_numpy()
    ref_rows = candidates["ref"].unique().sort().to_numpy()
    train_list = texts.gather(train_rows).to_list()
    ref_list = items["text"].gather(ref_rows).to_list()
    bands, rows = minhash.optimal_bands(threshold, num_perm)
    kw = {"num_perm": num_perm, "ngram": NEAR_SHINGLE, "seed": seed, "workers": workers}
    sig_train = minhash.signatures(train_list, **kw)
    sig_ref = minhash.signatures(ref_list, **kw)
    lsh = minhash.cross_pairs(sig_train, sig_ref, bands, rows)
    found = pl.DataFrame(
        {"row": train_rows[lsh[:, 0]], "ref": ref_rows[lsh[:, 1]], "t": lsh[:, 0], "r": lsh[:, 1]},
        schema={"row": pl.Int64, "ref": pl.Int64, "t": pl.Int64, "r": pl.Int64},
    ).join(candidates, on=["row", "ref"], how="semi")
    out = []
    for row, ref, t, r in found.iter_rows():
        score = minhash.jaccard(
            minhash.shingles(train_list[t], NEAR_SHINGLE), minhash.shingles(ref_list[r], NEAR_SHINGLE)
        )
        if score >= threshold:
            out.append((row, ref, score))
    if not out:
        return _empty_near()
    return pl.DataFrame(out, schema=_empty_near().schema, orient="row")


# --------------------------------------------------------------------------- verdicts


def _combine(
    exact: pl.DataFrame, ngram: pl.DataFrame, short: pl.DataFrame, near: pl.DataFrame
) -> pl.DataFrame:
    """One row per (row, ref) with every kind's evidence in its own columns (null = absent)."""
    keys = pl.concat([f.select("row", "ref") for f in (exact, ngram, short, near)]).unique()
    return (
        keys.join(exact.unique().with_columns(pl.lit(True).alias("exact")), on=["row", "ref"],
                  how="left")
        .join(ngram, on=["row", "ref"], how="left")
        .join(short.unique(["row", "ref"]), on=["row", "ref"], how="left")
        .join(near.unique(["row", "ref"]), on=["row", "ref"], how="left")
        .with_columns(pl.col("exact").fill_null(False))
        .sort(["row", "ref"])
    )


def _judge(
    pairs: pl.DataFrame, items: pl.DataFrame, wholes: pl.DataFrame, n: int, min_ngram: int,
    cutoff: int, min_overlap: float,
) -> pl.DataFrame:
    """Kind (strongest evidence), confidence and overlap of each pair (rules in the module doc)."""
    # how many distinct training texts match each item: a short item in many is generic
    spread = (
        pairs.select("row", "ref")
        .join(wholes.select("row", "whole"), on="row")
        .group_by("ref")
        .agg(pl.col("whole").n_unique().alias("texts_with_item"))
    )
    pairs = pairs.join(items.select("ref", "words", "content"), on="ref", how="left").join(
        spread, on="ref", how="left"
    )
    # share of the item's content words (boilerplate left out) under shared content n-grams
    coverage = (pl.col("covered") / pl.col("content")).fill_nan(0.0).fill_null(0.0)
    has_ngram = pl.col("ngrams").is_not_null()
    has_short = pl.col("contained").fill_null(False)
    has_near = pl.col("jaccard").is_not_null()
    generic = (pl.col("words") < min_ngram) | (
        (pl.col("words") < n) & (pl.col("texts_with_item") > cutoff)
    )
    high = ~generic & (
        pl.col("exact") | has_short | has_near | (has_ngram & (coverage >= min_overlap))
    )
    kind = (
        pl.when(pl.col("exact")).then(pl.lit("exact"))
        .when(has_ngram).then(pl.lit("ngram"))
        .when(has_short).then(pl.lit("short"))
        .otherwise(pl.lit("near"))
    )
    overlap = pl.max_horizontal(
        pl.when(pl.col("exact") | has_short).then(1.0).otherwise(0.0),
        coverage,
        pl.col("jaccard").fill_null(0.0),
    )
    return pairs.with_columns(
        kind.alias("kind"),
        pl.when(high).then(pl.lit("high")).otherwise(pl.lit("low")).alias("confidence"),
        overlap.round(4).alias("overlap"),
        coverage.alias("coverage"),
        (pl.col("words") < n).alias("short_item"),
    )


def _matches_frame(
    pairs: pl.DataFrame, train: pl.DataFrame, items: pl.DataFrame, refs: Corpus, n: int
) -> pl.DataFrame:
    if pairs.height == 0:
        return pl.DataFrame(schema=MATCH_SCHEMA)
    evidence = [_evidence(p, refs, n) for p in pairs.iter_rows(named=True)]
    train_ids = train["id"].cast(pl.String)
    out = pairs.with_columns(
        pl.Series("train_id", train_ids.gather(pairs["row"]).to_list(), dtype=pl.String),
        pl.Series("evidence", evidence, dtype=pl.String),
    ).join(items.select("ref", "ref_set", "ref_id"), on="ref", how="left")
    return out.sort(["train_id", "ref_set", "ref_id", "row"]).select(list(MATCH_SCHEMA))


def _evidence(pair: dict[str, Any], refs: Corpus, n: int) -> str:
    """JSON text: the kinds found, the item's length and each kind's proof."""
    kinds = [
        k for k, present in (
            ("exact", pair["exact"]),
            ("ngram", pair["ngrams"] is not None),
            ("short", bool(pair["contained"])),
            ("near", pair["jaccard"] is not None),
        ) if present
    ]
    ev: dict[str, Any] = {"kinds": kinds, "item_words": pair["words"], "ratio": pair["overlap"]}
    if pair["ngrams"] is not None:
        ev["ngram"] = {
            "n": n,
            "shared": pair["ngrams"],
            "coverage": round(pair["coverage"], 4),
            "matching": [refs.text(pair["ref"], s, n) for s in pair["starts"]],
        }
    if pair["jaccard"] is not None:
        ev["near"] = {"jaccard": round(pair["jaccard"], 4), "shingle": f"word {NEAR_SHINGLE}-grams"}
    if pair["contained"]:
        ev["short"] = {"item": refs.text(pair["ref"])}
    if pair["short_item"]:
        ev["train_texts_with_item"] = pair["texts_with_item"]
    return json.dumps(ev, ensure_ascii=False, separators=(",", ":"))


def _summary(
    train: pl.DataFrame, items: pl.DataFrame, matches: pl.DataFrame, high: list[str],
    low: list[str], **params: Any,
) -> dict[str, Any]:
    frequent = params.pop("frequent_ngrams_ignored")
    boiler_windows = params.pop("boilerplate_windows_ignored")
    per_set: dict[str, Any] = {}
    for name in items["ref_set"].unique(maintain_order=True).to_list():
        set_items = items.filter(pl.col("ref_set") == name)
        set_matches = matches.filter(pl.col("ref_set") == name)
        set_high = set_matches.filter(pl.col("confidence") == "high")["train_id"].unique()
        set_low = set(set_matches.filter(pl.col("confidence") == "low")["train_id"].to_list())
        per_set[name] = {
            "items": set_items.height,
            "empty_items": int((set_items["words"] == 0).sum()),
            "short_items": int(
                ((set_items["words"] > 0) & (set_items["words"] < params["ngram"])).sum()
            ),
            "contaminated_records": set_high.len(),
            "low_confidence_records": len(set_low - set(set_high.to_list())),
            "items_found": set_matches.filter(pl.col("confidence") == "high")["ref_id"].n_unique(),
            "matches_by_kind": {
                k: int((set_matches["kind"] == k).sum()) for k in KINDS
            },
        }
    return {
        "train_records": train.height,
        "contaminated_records": len(high),
        "low_confidence_records": len(low),
        "references": per_set,
        "frequent_ngrams_ignored": frequent,
        "boilerplate_windows_ignored": boiler_windows,
        "parameters": params,
    }
