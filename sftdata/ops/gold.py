"""Frozen gold sets: sample and lock them (freeze), then prove they are intact and unseen (verify).

A lock file holds a sha256 per record over its canonical content (the record columns of
sftdata/schema.py as sorted-key JSON; extra columns such as ``text`` or ``input_ids`` are not
part of a gold record) and a sha256 over all of them, so any edit, addition or removal is caught
and named. The creation time lives only in the lock, never in data outputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ..errors import DataError, UsageProblem
from ..schema import RECORD_COLUMNS, SCHEMA_VERSION
from ..scorers import BUILTIN, auto_scorer, group_name, score_one
from ..stats import mean_of
from ..text import normalize, view_text
from .gold_stats import task_statistics
from .split import NULL_LABEL, allocate, unit_hash

LOCK_FORMAT = "sftdata-gold-lock"
LOCK_VERSION = 1
GOLD_SPLIT = "gold"


# --------------------------------------------------------------------------- hashing


def record_hashes(df: pl.DataFrame) -> dict[str, str]:
    """id -> sha256 of the record's canonical JSON (record columns only, keys sorted)."""
    cols = [c for c in RECORD_COLUMNS if c in df.columns]
    out: dict[str, str] = {}
    for row in df.select(cols).iter_rows(named=True):
        canon = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        out[row["id"]] = hashlib.sha256(canon.encode("utf-8")).hexdigest()
    return out


def content_sha256(hashes: Mapping[str, str]) -> str:
    """One digest over every (id, record hash) pair in id order."""
    lines = "".join(f"{i}\t{hashes[i]}\n" for i in sorted(hashes))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def duplicate_ids(df: pl.DataFrame) -> list[str]:
    counts = df.group_by("id").len().filter(pl.col("len") > 1).sort("id")
    return counts["id"].to_list()


# --------------------------------------------------------------------------- freeze


@dataclass
class FreezeResult:
    gold: pl.DataFrame  # the sampled records, split = "gold", input order
    remainder: pl.DataFrame  # everything else, input order
    lock: dict[str, Any]
    per_label: dict[str, int]  # gold records per stratum (empty when not stratified)
    warnings: list[str] = field(default_factory=list)


def freeze(
    df: pl.DataFrame,
    n: int,
    *,
    seed: int = 0,
    stratify: str | None = "label",
    source: str = "<stdin>",
    source_sha256: str | None = None,
    created_at: str | None = None,
) -> FreezeResult:
    """Sample ``n`` records into a gold set (stratified by ``stratify`` when it has values).

    Records are ranked by a seeded hash of their id, so the same input and seed always give the
    same gold set. Within each stratum the quota is proportional to the stratum's size.
    """
    if n <= 0:
        raise UsageProblem(f"-n must be at least 1 (got {n})")
    if n > df.height:
        raise UsageProblem(f"-n {n} asks for more records than {source} has ({df.height})")
    if df["id"].null_count():
        raise DataError(
            "id is null", file=source, row=int(df["id"].is_null().arg_max()) + 1, field="id",
            fix="every record needs an id; `sftdata convert` derives one from the content",
        )
    dupes = duplicate_ids(df)
    if dupes:
        raise DataError(
            f"{len(dupes)} id(s) occur more than once (first: {', '.join(dupes[:5])})",
            file=source, field="id",
            fix="a gold set needs unique ids; run `sftdata dedup` or give the records unique ids",
        )
    warnings = []
    if "split" in df.columns:
        trained = int((df["split"] == "train").sum())
        if trained:
            warnings.append(
                f"{trained} input record(s) have split=train; gold should come from a held-out "
                "split (e.g. splits/test.parquet)"
            )
    use_strata = stratify is not None and stratify in df.columns and df[stratify].null_count() < df.height
    work = df.with_columns(
        pl.Series("_u", [unit_hash(seed, i) for i in df["id"]], dtype=pl.Float64),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
        (pl.col(stratify).cast(pl.String).fill_null(NULL_LABEL) if use_strata else pl.lit(NULL_LABEL))
        .alias("_stratum"),
    )
    sizes = work.group_by("_stratum").len().sort("_stratum")
    quotas = allocate([n, df.height - n], dict(zip(sizes["_stratum"], sizes["len"], strict=True)))
    ranked = work.sort(["_u", "id"]).with_columns(
        pl.int_range(pl.len()).over("_stratum").alias("_rank")
    )
    quota = pl.DataFrame(
        {"_stratum": list(quotas), "_quota": [q[0] for q in quotas.values()]},
        schema={"_stratum": pl.String, "_quota": pl.Int64},
    )
    ranked = ranked.join(quota, on="_stratum")
    chosen = ranked.filter(pl.col("_rank") < pl.col("_quota"))["_row"]
    picked = work["_row"].is_in(chosen.implode())
    gold = work.filter(picked).sort("_row").with_columns(pl.lit(GOLD_SPLIT).alias("split"))
    gold = gold.drop("_u", "_row", "_stratum")
    remainder = work.filter(~picked).sort("_row").drop("_u", "_row", "_stratum")
    hashes = record_hashes(gold)
    lock = {
        "format": LOCK_FORMAT,
        "version": LOCK_VERSION,
        "schema_version": SCHEMA_VERSION,
        "sha256": content_sha256(hashes),
        "count": gold.height,
        "ids": sorted(hashes),
        "records": dict(sorted(hashes.items())),
        "created_at": created_at,
        "input": {"file": source, "sha256": source_sha256, "records": df.height},
        "seed": seed,
        "stratified_by": stratify if use_strata else None,
    }
    per_label = {s: q[0] for s, q in quotas.items()} if use_strata else {}
    return FreezeResult(gold, remainder, lock, per_label, warnings)


# --------------------------------------------------------------------------- verify


@dataclass
class LockCheck:
    changed: list[str]
    added: list[str]
    removed: list[str]
    duplicated: list[str]
    expected_sha256: str
    actual_sha256: str

    @property
    def ok(self) -> bool:
        return not (self.changed or self.added or self.removed or self.duplicated) and (
            self.expected_sha256 == self.actual_sha256
        )


def check_lock(gold: pl.DataFrame, lock: Mapping[str, Any], lock_name: str = "lock") -> LockCheck:
    """Compare a gold table with its lock; names every changed, added and removed id."""
    if lock.get("format") != LOCK_FORMAT or not isinstance(lock.get("records"), dict):
        raise DataError(
            "not a gold lock file", file=lock_name,
            fix="pass the .lock.json that `sftdata gold freeze` wrote (--lock FILE)",
        )
    expected: dict[str, str] = lock["records"]
    actual = record_hashes(gold)
    return LockCheck(
        changed=sorted(i for i in actual if i in expected and actual[i] != expected[i]),
        added=sorted(i for i in actual if i not in expected),
        removed=sorted(i for i in expected if i not in actual),
        duplicated=duplicate_ids(gold),
        expected_sha256=str(lock.get("sha256")),
        actual_sha256=content_sha256(actual),
    )


OVERLAP_SCHEMA = {
    "gold_id": pl.String,
    "against": pl.String,
    "train_id": pl.String,
    "train_row": pl.Int64,
    "kind": pl.String,
    "confidence": pl.String,
    "evidence": pl.String,
}


def _keys(df: pl.DataFrame) -> pl.DataFrame:
    """Normalized prompt and conversation per record: the exact-match keys."""
    prompts, convs = [], []
    for messages in df["messages"].to_list():
        messages = messages or []
        prompts.append(normalize(view_text(messages, "prompt")))
        convs.append(normalize(view_text(messages, "conversation")))
    return pl.DataFrame(
        {"id": df["id"], "_prompt": prompts, "_conv": convs},
        schema={"id": pl.String, "_prompt": pl.String, "_conv": pl.String},
    ).with_row_index("_row")


def exact_overlap(gold: pl.DataFrame, train: pl.DataFrame, against: str) -> pl.DataFrame:
    """Gold records found in ``train``: same id, same whole conversation or same prompt
    (after NFKC, case folding and whitespace collapsing). One row per (gold, train, kind)."""
    g, t = _keys(gold), _keys(train)
    found = []
    for kind, key in (("same-id", "id"), ("same-conversation", "_conv"), ("same-prompt", "_prompt")):
        left = g.select(pl.col("id").alias("gold_id"), pl.col(key).alias("_k"), pl.col("_prompt"))
        right = t.select(
            pl.col("id").alias("train_id"), pl.col("_row").cast(pl.Int64).alias("train_row"),
            pl.col(key).alias("_k"),
        )
        hits = left.filter(pl.col("_k") != "").join(right, on="_k", how="inner")
        found.append(
            hits.select(
                "gold_id",
                pl.lit(against).alias("against"),
                "train_id",
                "train_row",
                pl.lit(kind).alias("kind"),
                pl.lit("high").alias("confidence"),
                pl.col("_prompt").alias("evidence"),
            )
        )
    out = pl.concat(found).cast(OVERLAP_SCHEMA) if found else pl.DataFrame(schema=OVERLAP_SCHEMA)
    return out.sort(["gold_id", "against", "train_row", "kind"])


def near_duplicates(
    gold: pl.DataFrame, train: pl.DataFrame, against: str, *, ngram: int = 13,
    frequent_cutoff: int = 10,
) -> pl.DataFrame | None:
    """Near-duplicate evidence from the leakcheck library; None when it is not installed.

    The one place gold verify touches leakcheck, so its API can change without touching the rest.
    An n-gram in more than ``frequent_cutoff`` distinct training prompts or gold prompts (a
    shared prompt template) is boilerplate, and so is most of any n-gram overlapping it: such
    n-grams are never evidence (see sftdata.ops.leakcheck).
    """
    try:
        from .leakcheck import leakcheck
    except ImportError:
        return None
    result = leakcheck(train, {GOLD_SPLIT: gold}, on="prompt", ngram=ngram,
                       frequent_cutoff=frequent_cutoff)
    matches = result.matches
    if matches.height == 0:
        return pl.DataFrame(schema=OVERLAP_SCHEMA)
    # the first row of each training id locates it (ids are unique after dedup, not before)
    rows = (
        train.select(pl.col("id").cast(pl.String).alias("train_id"))
        .with_row_index("train_row")
        .unique("train_id", keep="first", maintain_order=True)
    )
    return (
        matches.join(rows.with_columns(pl.col("train_row").cast(pl.Int64)), on="train_id", how="left")
        .select(
            pl.col("ref_id").cast(pl.String).alias("gold_id"),
            pl.lit(against).alias("against"),
            pl.col("train_id").cast(pl.String),
            "train_row",
            pl.concat_str([pl.lit("leakcheck:"), pl.col("kind").cast(pl.String)]).alias("kind"),
            pl.col("confidence").cast(pl.String),
            pl.col("evidence").cast(pl.String),
        )
        .cast(OVERLAP_SCHEMA)
        .sort(["gold_id", "against", "train_row", "kind"])
    )


def _one_row_per_pair(found: pl.DataFrame) -> pl.DataFrame:
    """Collapse the kinds of evidence for one (gold record, training row) pair into one row:
    kinds joined, high confidence if any evidence is, our exact-match text before leakcheck's."""
    keys = ["gold_id", "against", "train_id", "train_row"]
    return (
        found.sort([*keys, "kind"], nulls_last=True)
        .group_by(keys, maintain_order=True)
        .agg(
            pl.col("kind").unique(maintain_order=True).str.join(","),
            pl.when((pl.col("confidence") == "high").any()).then(pl.lit("high"))
            .otherwise(pl.lit("low")).alias("confidence"),
            pl.col("evidence").sort_by(pl.col("kind").str.starts_with("leakcheck:")).first(),
        )
        .select(list(OVERLAP_SCHEMA))
        .cast(OVERLAP_SCHEMA)
        .sort(keys, nulls_last=True)
    )


@dataclass
class VerifyResult:
    lock: LockCheck
    overlap: pl.DataFrame  # exact and near-duplicate evidence (OVERLAP_SCHEMA)
    near_duplicate_check: bool  # False when the leakcheck library was not available
    warnings: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> pl.DataFrame:
        """Evidence that fails verification (low-confidence leakcheck hits only warn)."""
        return self.overlap.filter(pl.col("confidence") != "low")

    @property
    def ok(self) -> bool:
        return self.lock.ok and self.blocking.height == 0


def verify(
    gold: pl.DataFrame,
    lock: Mapping[str, Any],
    against: Mapping[str, pl.DataFrame] | Iterable[tuple[str, pl.DataFrame]],
    *,
    lock_name: str = "lock",
    near: bool = True,
    ngram: int = 13,
    frequent_cutoff: int = 10,
) -> VerifyResult:
    """The lock still matches and no gold record (or near-duplicate of one) is in ``against``.

    ``against`` may be a generator of (name, frame) pairs, so that only one training file is
    in memory at a time.
    """
    lock_check = check_lock(gold, lock, lock_name)
    frames = [pl.DataFrame(schema=OVERLAP_SCHEMA)]
    near_ran = near
    pairs = against.items() if isinstance(against, Mapping) else against
    for name, train in pairs:
        frames.append(exact_overlap(gold, train, name))
        if near:
            found = near_duplicates(gold, train, name, ngram=ngram,
                                    frequent_cutoff=frequent_cutoff)
            if found is None:
                near_ran = False
            else:
                frames.append(found)
    overlap = _one_row_per_pair(pl.concat(frames))
    warnings = []
    if near and not near_ran:
        warnings.append(
            "near-duplicate check skipped: sftdata.ops.leakcheck is not available; "
            "only exact matches were checked"
        )
    return VerifyResult(lock_check, overlap, near_ran, warnings)


# --------------------------------------------------------------------------- score

Scorer = Callable[[str, str, dict], float]


@dataclass
class ScoreResult:
    report: dict[str, Any]
    examples: pl.DataFrame  # id, task, score, reference, prediction (one row per gold record)
    # group -> metric -> Statistic (per-example columns, for bootstrap intervals and paired
    # tests; see sftdata/stats.py); a metric without one (a median) has no interval
    statistics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        """A metric by 'task.metric', or by 'metric' when exactly one task has it."""
        task, _, metric = name.rpartition(".")
        tasks = self.report["tasks"]
        if task:
            return tasks.get(task, {}).get("metrics", {}).get(metric)
        having = [t for t in tasks.values() if metric in t["metrics"]]
        return having[0]["metrics"][metric] if len(having) == 1 else None

    def metric_names(self) -> list[str]:
        names = []
        for task, entry in self.report["tasks"].items():
            names += [f"{task}.{m}" for m in entry["metrics"]]
        return names

    def worst(self, k: int) -> pl.DataFrame:
        ranked = self.examples.filter(pl.col("score").is_not_null())
        return ranked.sort(["score", "id"]).head(k)


def reference_of(messages: list[dict] | None, label: str | None, task: str) -> str | None:
    """The answer a prediction is compared with: the label for classification (when set),
    else the last assistant turn."""
    if task == "classification" and label is not None:
        return label
    for m in reversed(messages or []):
        if m.get("role") == "assistant":
            return m.get("content") or ""
    return None


def input_of(messages: list[dict] | None) -> str:
    """What a copy-the-input baseline answers: the last user (or tool) turn."""
    for m in reversed(messages or []):
        if m.get("role") in ("user", "tool"):
            return m.get("content") or ""
    return ""


def score(
    gold: pl.DataFrame,
    predictions: pl.DataFrame,
    *,
    task: str | None = None,
    scorer: Scorer | None = None,
    allow_missing: bool = False,
    gold_name: str = "gold",
    predictions_name: str = "predictions",
    answer: str = "auto",
) -> ScoreResult:
    """Task-matched metrics of ``predictions`` (id, prediction) against a gold set, with
    baselines. Missing predictions count as empty answers when ``allow_missing``.

    ``answer`` picks the answer scorer: "auto" (from each record's metadata or shape, see
    sftdata/scorers.py), "task" (the task's own metrics), or a built-in one ("choice",
    "number") for every record. Records scored by a built-in scorer are reported under their
    benchmark (mmlu, gsm8k) or the scorer's name."""
    from .. import metrics as m

    missing_cols = [c for c in ("id", "prediction") if c not in predictions.columns]
    if missing_cols:
        raise DataError(
            f"missing column(s) {', '.join(missing_cols)}", file=predictions_name,
            fix="predictions are JSONL with `id` and `prediction` (what `sfttrain generate` writes)",
        )
    preds = predictions.select(pl.col("id").cast(pl.String), pl.col("prediction").cast(pl.String))
    dupes = duplicate_ids(preds)
    if dupes:
        raise DataError(
            f"{len(dupes)} id(s) have more than one prediction (first: {', '.join(dupes[:5])})",
            file=predictions_name, field="id", fix="keep one prediction per gold id",
        )
    gold_ids = gold["id"].to_list()
    by_id = dict(zip(preds["id"].to_list(), preds["prediction"].to_list(), strict=True))
    known = set(gold_ids)
    missing = [i for i in gold_ids if i not in by_id]
    unknown = sorted(i for i in by_id if i not in known)
    if (missing or unknown) and not allow_missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} gold id(s) have no prediction (first: {', '.join(missing[:5])})")
        if unknown:
            parts.append(f"{len(unknown)} prediction id(s) are not in the gold set (first: {', '.join(unknown[:5])})")
        fixes = []  # each problem its own fix (L21: extra ids were told to predict more)
        if missing:
            fixes.append("predict every gold record")
        if unknown:
            fixes.append("drop the predictions whose ids are not gold ids (are they for another "
                         "gold set?)")
        allow = ("missing ones then score as empty answers" if missing and not unknown else
                 "unknown ids are then ignored" if unknown and not missing else
                 "missing ones then score as empty answers, unknown ids are ignored")
        raise DataError(
            "; ".join(parts), file=predictions_name,
            fix=f"{', and '.join(fixes)}, or pass --allow-missing ({allow})",
        )
    tasks = _tasks(gold, task, gold_name)
    records = gold.to_dicts()
    rows = []
    for i, (rid, t, record) in enumerate(zip(gold_ids, tasks, records, strict=True)):
        messages, label = record.get("messages"), record.get("label")
        reference = reference_of(messages, label, t)
        if reference is None:
            raise DataError(
                "no reference answer (no assistant turn and no label)", file=gold_name, row=i + 1,
                field="messages", fix="gold records need a final assistant turn (or a label)",
            )
        kind = _answer_scorer(answer, record, t, reference)
        prediction = by_id.get(rid)
        rows.append((rid, t, reference, "" if prediction is None else prediction,
                     input_of(messages), kind, group_name(record, t, kind), i))
    report_tasks: dict[str, Any] = {}
    statistics: dict[str, dict[str, Any]] = {}
    examples = []
    for key in sorted({r[6] for r in rows}):
        group = [r for r in rows if r[6] == key]
        t, kind = group[0][1], group[0][5]
        refs, outs, inputs = [r[2] for r in group], [r[3] for r in group], [r[4] for r in group]
        recs = [records[r[7]] for r in group]
        if kind is None:
            metrics, per_example, extras = m.task_scores(t, refs, outs)
            stats = task_statistics(t, refs, outs, per_example)
        else:
            metrics, per_example, extras, stats = _builtin_scores(
                kind, refs, outs, recs, [r[7] for r in group], gold_name)
        if scorer is not None:
            values = [float(scorer(p, r, rec)) for p, r, rec in zip(outs, refs, recs, strict=True)]
            metrics["scorer"] = sum(values) / len(values) if values else 0.0
            per_example = values
            stats["scorer"] = mean_of(values)
        baselines = {}
        for name in m.BASELINES[m.TASK_ALIASES.get(t, t)] if kind is None else BUILTIN_BASELINES:
            base = m.baseline_predictions(name, refs, inputs)
            if kind is None:
                baselines[name] = m.task_scores(t, refs, base)[0]
            else:
                if name == "majority":
                    base = _majority_answer(kind, refs, recs)
                baselines[name] = _builtin_scores(kind, refs, base, recs, [r[7] for r in group],
                                                  gold_name)[0]
            if scorer is not None:
                vals = [float(scorer(p, r, {})) for p, r in zip(base, refs, strict=True)]
                baselines[name]["scorer"] = sum(vals) / len(vals) if vals else 0.0
        entry = {"records": len(group), "metrics": metrics, "baselines": baselines, **extras}
        if kind is not None:
            entry = {"task": t, "scorer": kind, **entry}
        report_tasks[key] = entry
        statistics[key] = stats
        examples += [
            (r[0], key, s, r[2], r[3]) for r, s in zip(group, per_example, strict=True)
        ]
    report = {
        "gold": gold_name,
        "predictions": predictions_name,
        "records": gold.height,
        "missing": missing,
        "unknown": unknown,
        "tasks": report_tasks,
    }
    frame = pl.DataFrame(
        examples,
        schema={"id": pl.String, "task": pl.String, "score": pl.Float64, "reference": pl.String,
                "prediction": pl.String},
        orient="row",
    )
    return ScoreResult(report, frame, statistics)


ANSWER_SCORERS = ("auto", "task", *BUILTIN)
BUILTIN_METRICS = ("accuracy", "unparsed_rate")
# majority: the most common reference answer; copy_input: the question itself, parsed (a prompt
# listing options "A. ..." parses to nothing or to a letter by chance)
BUILTIN_BASELINES = ("majority", "copy_input")


def _answer_scorer(answer: str, record: dict, task: str, reference: str) -> str | None:
    if answer == "task":
        return None
    if answer in BUILTIN:
        return answer
    return auto_scorer(record, task, reference)


def _majority_answer(kind: str, refs: list[str], recs: list[dict]) -> list[str]:
    """The most common expected answer (letter or number; ties: the smallest) for every record."""
    from collections import Counter

    expected = [score_one(kind, "", r, rec)["expected"] or "" for r, rec in zip(refs, recs, strict=True)]
    counts = Counter(expected)
    top = min(counts, key=lambda a: (-counts[a], a)) if counts else ""
    return [top] * len(refs)


def _builtin_scores(kind, refs, outs, recs, rows, gold_name):
    """(metrics, per-example scores, extras, statistics) of a built-in answer scorer."""
    scored = []
    for ref, out, rec, row in zip(refs, outs, recs, rows, strict=True):
        one = score_one(kind, out, ref, rec)
        if one["expected"] is None:
            what = ("a label letter among lettered options in the last user turn"
                    if kind == "choice" else "a number in the reference answer")
            raise DataError(
                f"the {kind} scorer finds no answer in this gold record", file=gold_name,
                row=row + 1, field="label" if kind == "choice" else "messages",
                fix=f"the {kind} scorer needs {what}; pass --scorer task to score it by its task",
            )
        scored.append(one)
    values = [o["score"] for o in scored]
    unparsed = [float(o["parsed"] is None) for o in scored]
    n = len(values)
    metrics = {"accuracy": sum(values) / n if n else 0.0,
               "unparsed_rate": sum(unparsed) / n if n else 0.0}
    stats = {"accuracy": mean_of(values), "unparsed_rate": mean_of(unparsed)}
    return metrics, values, {}, stats


def _tasks(gold: pl.DataFrame, task: str | None, gold_name: str) -> list[str]:
    from ..metrics import SCORED_TASKS, TASK_ALIASES

    if task is not None:
        return [task] * gold.height
    tasks = gold["task"].to_list()
    unset = [i for i, t in enumerate(tasks) if t is None]
    if unset:
        raise DataError(
            f"{len(unset)} gold record(s) have no task (first row {unset[0] + 1})", file=gold_name,
            field="task", fix=f"pass --task ({'|'.join(SCORED_TASKS)})",
        )
    unknown = sorted({t for t in tasks if t not in SCORED_TASKS and t not in TASK_ALIASES})
    if unknown:
        raise DataError(
            f"no metric for task(s) {', '.join(unknown)}", file=gold_name, field="task",
            fix=f"pass --task ({'|'.join(SCORED_TASKS)})",
        )
    return tasks
