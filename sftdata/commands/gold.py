"""`sftdata gold`: freeze a hashed gold set, verify it is intact and unseen, score predictions."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import polars as pl

from ..errors import CheckFailed, DataError
from ..io import STDIO, open_source, read_records, read_table, write_json, write_table
from ._common import (
    check_paths,
    file_option,
    handle_errors,
    input_argument,
    output_options,
    parse_key_values,
    report_option,
    say,
    seed_option,
    verdict,
    warn,
)

TASK_CHOICES = ("classification", "qa", "extraction", "summarization", "chat", "completion", "text")


def default_lock_path(gold_path: str) -> Path:
    """gold.parquet -> gold.lock.json, beside it."""
    path = Path(gold_path)
    return path.with_name(f"{path.stem}.lock.json")


@click.group()
def gold() -> None:
    """Frozen gold sets: freeze, verify and score."""


# --------------------------------------------------------------------------- freeze


@gold.command()
@input_argument
@click.option("-n", "count", type=int, required=True, help="How many records go into the gold set.")
@click.option("--gold-out", required=True, metavar="FILE",
              help="Where the gold set goes (.parquet, .jsonl or .arrow).")
@file_option("--lock", "lock_path", help="Lock file (default: beside --gold-out, NAME.lock.json).")
@click.option("--stratify", default="label", show_default=True,
              help="Column to sample proportionally from (ignored when it has no values).")
@click.option("--force", is_flag=True,
              help="Replace a gold set (or lock) that already exists at --gold-out/--lock.")
@output_options
@seed_option
@handle_errors
def freeze(input_path, count, gold_out, lock_path, stratify, force, output, to, seed):
    """Sample a held-out split into a hashed, locked gold set; the rest goes to the output.

    \b
    Example:
      sftdata gold freeze splits/test.parquet -n 200 --gold-out gold.parquet -o test_rest.parquet
    """
    from ..ops.gold import content_sha256, record_hashes
    from ..ops.gold import freeze as freeze_records

    if gold_out == STDIO:
        raise click.UsageError("--gold-out must be a file (stdout carries the remainder)")
    lock_target = Path(lock_path) if lock_path else default_lock_path(gold_out)
    check_paths([("INPUT", input_path)],
                [("--gold-out", gold_out), ("--lock", str(lock_target)), ("-o", output)])
    frozen = [f"{label} {path}" for label, path in (("--gold-out", gold_out), ("--lock", lock_target))
              if os.path.lexists(path)]
    if frozen and not force:
        raise click.UsageError(
            f"{' and '.join(frozen)} already exist: a frozen gold set is not replaced silently "
            "(scores on it would no longer compare). Pass --force to replace it, or give "
            "another --gold-out"
        )

    df = read_records(input_path)
    file_sha = _file_sha256(input_path)
    result = freeze_records(
        df, count, seed=seed, stratify=stratify, source=_display(input_path),
        source_sha256=file_sha, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    result.lock["input"]["content_sha256"] = content_sha256(record_hashes(df)) if df.height else None
    for message in result.warnings:
        warn(message)
    write_table(result.gold, gold_out, label="--gold-out")
    write_json(result.lock, lock_target, "--lock")
    write_table(result.remainder, output, to, "-o")
    say(f"gold: {result.gold.height} of {df.height} records -> {gold_out} (lock {lock_target}, "
        f"sha256 {result.lock['sha256'][:12]}); remainder: {result.remainder.height} records")
    if result.per_label:
        say("  per " + stratify + ": " + ", ".join(f"{k}={v}" for k, v in result.per_label.items()))


def _file_sha256(path: str) -> str | None:
    if path in (None, STDIO):
        return None  # stdin cannot be re-read; the lock keeps the content hash instead
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _display(path: str) -> str:
    return "<stdin>" if path in (None, STDIO) else str(path)


# --------------------------------------------------------------------------- verify


@gold.command()
@click.argument("gold_path", metavar="GOLD")
@click.option("--against", "against", multiple=True, type=click.Path(dir_okay=False),
              help="Training data that must not contain any gold record (repeatable).")
@click.option("--lock", "lock_path", metavar="FILE", default=None,
              help="Lock file (default: GOLD's NAME.lock.json).")
@click.option("--ngram", type=int, default=13, show_default=True,
              help="N-gram size for the near-duplicate check (leakcheck).")
@click.option("--frequent-cutoff", type=int, default=10, show_default=True,
              help="N-grams in more than this many training or gold prompts are boilerplate "
                   "(a shared template), never evidence.")
@click.option("--exact-only", is_flag=True, help="Skip the near-duplicate check.")
@report_option(help="Write the findings here as JSON.")
@handle_errors
def verify(gold_path, against, lock_path, ngram, frequent_cutoff, exact_only, report_path):
    """Check the gold set still matches its lock and that no training file contains it.

    \b
    Example:
      sftdata gold verify gold.parquet --against splits/train.parquet --against extra.jsonl
    """
    from ..ops.gold import verify as verify_gold

    if gold_path == STDIO:
        raise click.UsageError("GOLD must be a file (its lock lives beside it)")
    if ngram < 1:
        raise click.UsageError("--ngram must be at least 1")
    if frequent_cutoff < 1:
        raise click.UsageError(f"--frequent-cutoff must be at least 1, got {frequent_cutoff}")
    lock_file = Path(lock_path) if lock_path else default_lock_path(gold_path)
    check_paths([("GOLD", gold_path), ("--lock", str(lock_file)), ("--against", list(against))],
                [("--report", report_path)])
    if not lock_file.is_file():
        raise click.UsageError(f"no lock file {lock_file}; pass --lock FILE (written by gold freeze)")
    try:
        lock = json.loads(lock_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable lock ({exc})", file=str(lock_file),
                        fix="restore the lock file from version control") from None
    if not isinstance(lock, dict):
        raise DataError(f"not a lock file: a JSON {type(lock).__name__}, expected an object",
                        file=str(lock_file),
                        fix="restore the lock file from version control (gold freeze writes it)")
    if not against:
        warn("no --against files: only the lock is checked")
    gold_df = read_records(gold_path)
    trains = list(against)
    # one training file in memory at a time
    frames = ((path, read_records(path)) for path in trains)
    result = verify_gold(gold_df, lock, frames, lock_name=str(lock_file), near=not exact_only,
                         ngram=ngram, frequent_cutoff=frequent_cutoff)
    for message in result.warnings:
        warn(message)
    failure = verdict(None if result.ok else CheckFailed("gold verify failed"))
    _say_lock(result.lock, gold_path)
    _say_overlap(result, trains)
    if report_path:
        write_json(_verify_report(gold_path, lock_file, result, trains), report_path, "--report")
    if failure:
        raise failure
    say(f"gold verify: ok ({gold_df.height} records match the lock; none found in "
        f"{len(trains)} training file(s))")


def _say_lock(check, gold_path: str) -> None:
    if check.ok:
        say(f"lock: ok (sha256 {check.actual_sha256[:12]})")
        return
    say(f"lock: MISMATCH for {gold_path} (expected sha256 {check.expected_sha256[:12]}, "
        f"got {check.actual_sha256[:12]})")
    for label, ids in (("changed", check.changed), ("added", check.added),
                       ("removed", check.removed), ("duplicated", check.duplicated)):
        if ids:
            shown = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
            say(f"  {label}: {shown}")


def _say_overlap(result, trains: list) -> None:
    blocking, overlap = result.blocking, result.overlap
    low = overlap.filter(pl.col("confidence") == "low")
    if low.height:
        warn(f"{low.height} low-confidence near-duplicate hit(s) (short or generic prompts), "
             "not failing; check them:")
        _say_pairs(low, 5)
    if blocking.height == 0:
        say(f"training overlap: none in {len(trains)} file(s)")
        return
    gold_ids = blocking["gold_id"].n_unique()
    say(f"training overlap: {gold_ids} gold record(s) found in training data ({blocking.height} match(es)):")
    _say_pairs(blocking, 20)


def _say_pairs(pairs, limit: int) -> None:
    for row in pairs.head(limit).iter_rows(named=True):
        say(f"  gold {row['gold_id']} ~ {row['against']} row {row['train_row']} (id {row['train_id']}): "
            f"{row['kind']}: {_clip(row['evidence'] or '', 100)!r}")
    if pairs.height > limit:
        say(f"  ... {pairs.height - limit} more (see --report)")


def _verify_report(gold_path, lock_file, result, trains) -> dict[str, Any]:
    check = result.lock
    return {
        "gold": str(gold_path),
        "lock": str(lock_file),
        "ok": result.ok,
        "lock_ok": check.ok,
        "expected_sha256": check.expected_sha256,
        "actual_sha256": check.actual_sha256,
        "changed": check.changed,
        "added": check.added,
        "removed": check.removed,
        "duplicated": check.duplicated,
        "against": list(trains),
        "near_duplicate_check": result.near_duplicate_check,
        "overlap": result.overlap.to_dicts(),
    }


# --------------------------------------------------------------------------- score


@gold.command()
@click.argument("gold_path", metavar="GOLD")
@click.argument("predictions_paths", metavar="PREDICTIONS...", nargs=-1, required=True)
@click.option("--task", type=click.Choice(TASK_CHOICES), default=None,
              help="Score every record as this task (default: each record's `task`).")
@click.option("--scorer", default=None, metavar="auto|task|choice|number|MODULE:FUNCTION",
              help="Answer scorer: auto (default: from each record's metadata or shape), task "
                   "(the task's metrics), choice (option letter, MMLU), number (final number, "
                   "GSM8K); or an extra per-example scorer f(prediction, reference, record).")
@click.option("--min", "gates", multiple=True, metavar="METRIC=VALUE",
              help="Fail (exit 1) when METRIC is below VALUE, e.g. --min accuracy=0.8 (repeatable; "
                   "with several models: every model but the base).")
@click.option("--max-drop", "drops", multiple=True, metavar="METRIC=DROP",
              help="With several models: fail (exit 1) when a model lost more than DROP against "
                   "the base beyond noise (the low end of the drop's interval is above DROP), "
                   "e.g. --max-drop accuracy=0.02 (repeatable).")
@click.option("--bootstrap", "resamples", type=int, default=None, metavar="N",
              help="Bootstrap resamples (and permutations) for intervals and paired tests "
                   "[default: 1000 with several models; one model: intervals only when given].")
@click.option("--confidence", type=float, default=0.95, show_default=True,
              help="Confidence level of the intervals.")
@click.option("--names", default=None, metavar="BASE,A,B,...",
              help="Model names, one per predictions file (default: the file stems).")
@click.option("--show-worst", "show_worst", type=int, default=5, show_default=True,
              help="List the K lowest-scoring examples (one model only).")
@click.option("--allow-missing", is_flag=True,
              help="Score even when predictions are missing (as empty answers) or unknown (ignored).")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
@report_option(help="Write metrics, baselines, worst examples and gates here as JSON.")
@seed_option
@handle_errors
def score(gold_path, predictions_paths, task, scorer, gates, drops, resamples, confidence, names,
          show_worst, allow_missing, as_json, report_path, seed):
    """Score predictions against a gold set; several models: intervals and paired tests vs the first.

    \b
    Example:
      sfttrain generate runs/a --records gold.parquet > preds.jsonl
      sftdata gold score gold.parquet preds.jsonl --min accuracy=0.8 --show-worst 10
      sftdata gold score mmlu.parquet base.jsonl tuned.jsonl replay.jsonl --max-drop accuracy=0.02
    """
    from ..ops.gold import ANSWER_SCORERS

    thresholds: dict[str, float] = {}
    for gate in gates:
        thresholds.update(parse_key_values(gate, "--min", cast=float))
    max_drop: dict[str, float] = {}
    for gate in drops:
        max_drop.update(parse_key_values(gate, "--max-drop", cast=float))
    if any(v < 0 for v in max_drop.values()):
        raise click.UsageError("--max-drop values are allowed drops: 0 or more, e.g. accuracy=0.02")
    if show_worst < 0:
        raise click.UsageError("--show-worst must be 0 or more")
    if resamples is not None and resamples < 1:
        raise click.UsageError(f"--bootstrap must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise click.UsageError(f"--confidence must be between 0 and 1, got {confidence:g}")
    paths = list(predictions_paths)
    if sum(p == STDIO for p in [gold_path, *paths]) > 1:
        raise click.UsageError(
            "GOLD and PREDICTIONS cannot both read stdin; give one as a file" if len(paths) == 1
            else "only one of GOLD and the PREDICTIONS files can read stdin; give the others as "
                 "files")
    if max_drop and len(paths) < 2:
        raise click.UsageError("--max-drop compares models with the base: give the base's "
                               "predictions first, then the others")
    answer, scorer_fn = "auto", None
    if scorer in ANSWER_SCORERS:
        answer = scorer
    elif scorer:
        scorer_fn = _guarded(_load_scorer(scorer), scorer)
    if as_json and report_path == STDIO:
        raise click.UsageError("--json writes the report to stdout already; give --report a file")
    check_paths([("GOLD", gold_path), ("PREDICTIONS", paths)], [("--report", report_path)])
    name_list = [n.strip() for n in names.split(",")] if names else None
    if len(paths) == 1 and resamples is None:
        if name_list is not None and len(name_list) != 1:
            raise click.UsageError(f"--names gives {len(name_list)} names for 1 predictions file")
        _score_one(gold_path, paths[0], task, answer, scorer_fn, thresholds, show_worst,
                   allow_missing, as_json, report_path)
        return
    _score_many(gold_path, paths, name_list, task, answer, scorer_fn, thresholds, max_drop,
                resamples or 1000, confidence, seed, allow_missing, as_json, report_path)


def _score_one(gold_path, predictions_path, task, answer, scorer_fn, thresholds, show_worst,
               allow_missing, as_json, report_path):
    """One model, no intervals: the table, worst examples and --min gates (the original form)."""
    from ..ops.gold import score as score_gold

    gold_df = read_records(gold_path)
    predictions = read_table(open_source(predictions_path))
    result = score_gold(gold_df, predictions, task=task, scorer=scorer_fn,
                        allow_missing=allow_missing, gold_name=_display(gold_path),
                        predictions_name=_display(predictions_path), answer=answer)
    unknown = [name for name in thresholds if result.metric(name) is None]
    if unknown:
        raise click.UsageError(
            f"--min: no metric {', '.join(repr(n) for n in unknown)}; "
            f"available: {', '.join(result.metric_names())}"
        )
    failed = [name for name, minimum in thresholds.items() if result.metric(name) < minimum]
    failure = verdict(CheckFailed(f"gold score gate(s) failed: {', '.join(failed)}") if failed else None)
    _say_scores(result.report)
    worst = result.worst(show_worst)
    if show_worst:
        _say_worst(worst)
    gate_rows = []
    for name, threshold in thresholds.items():
        value = result.metric(name)
        passed = name not in failed
        gate_rows.append({"metric": name, "min": threshold, "value": value, "passed": passed})
        say(f"gate {name} >= {threshold:g}: {value:.4f} {'ok' if passed else 'FAILED'}")
    report = dict(result.report, worst=worst.to_dicts(), gates=gate_rows)
    if report_path:
        write_json(report, report_path, "--report")
    if as_json:
        write_json(report, STDIO, "--json")
    if failure:
        raise failure


def _score_many(gold_path, paths, name_list, task, answer, scorer_fn, thresholds, max_drop,
                resamples, confidence, seed, allow_missing, as_json, report_path):
    """Several models (or one with --bootstrap): intervals, paired differences, gates."""
    from ..ops.gold_score import compare, model_names

    names = model_names(paths, name_list)
    gold_df = read_records(gold_path)
    frames = [(n, _display(p), read_table(open_source(p))) for n, p in zip(names, paths, strict=True)]
    comparison = compare(
        gold_df, frames, resamples=resamples, confidence=confidence, seed=seed, task=task,
        scorer=scorer_fn, answer=answer, allow_missing=allow_missing,
        gold_name=_display(gold_path), max_drop=max_drop, minimum=thresholds,
    )
    failed = comparison.failed
    failure = verdict(CheckFailed(
        "gold score gate(s) failed: " + ", ".join(f"{g['model']} {g['metric']}" for g in failed)
    ) if failed else None)
    for model in comparison.report["models"]:
        if model["missing"]:
            warn(f"{model['name']}: {len(model['missing'])} gold record(s) had no prediction "
                 "(scored as empty answers)")
        if model["unknown"]:
            warn(f"{model['name']}: {len(model['unknown'])} prediction(s) for ids not in the gold "
                 "set were ignored")
    for line in format_comparison(comparison.report):
        say(line)
    if report_path:
        write_json(comparison.report, report_path, "--report")
    if as_json:
        write_json(comparison.report, STDIO, "--json")
    if failure:
        raise failure


def _signed(value) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _ci(pair) -> str:
    return "n/a" if not pair else f"[{pair[0]:.4f}, {pair[1]:.4f}]"


def _ci_signed(pair) -> str:
    return "n/a" if not pair else f"[{pair[0]:+.4f}, {pair[1]:+.4f}]"


def _p(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def format_comparison(report: dict) -> list[str]:
    """The comparison as text tables, one per group: each model's value and interval, its
    difference with the base, that difference's interval, the paired test's p-value."""
    level = f"{report['confidence'] * 100:g}%"
    lines = [f"scored {len(report['models'])} model(s) on {report['records']} gold records of "
             f"{report['gold']} (base: {report['base']}; {level} intervals, "
             f"{report['bootstrap']} bootstrap resamples, seed {report['seed']})"]
    names = [m["name"] for m in report["models"]]
    name_w = max(len(n) for n in ["model", *names])
    for key, group in report["groups"].items():
        how = f", scorer {group['scorer']}" if group.get("scorer") else ""
        lines.append(f"{key} ({group['records']} records{how}):")
        metric_w = max(len(m) for m in ["metric", *group["metrics"]])
        lines.append(f"  {'metric':<{metric_w}}  {'model':<{name_w}}  {'value':>8}  "
                     f"{level + ' CI':<18}  {'vs base':>8}  {level + ' CI':<20}  {'p':>7}  test")
        for metric, entry in group["metrics"].items():
            for i, row in enumerate(entry["models"]):
                label = metric if i == 0 else ""
                line = (f"  {label:<{metric_w}}  {row['name']:<{name_w}}  {_fmt(row['value']):>8}  "
                        f"{_ci(row.get('ci')) if 'ci' in row else '':<18}")
                if i > 0 and "diff" in row:
                    line += (f"  {_signed(row['diff']):>8}  {_ci_signed(row.get('diff_ci')):<20}  "
                             f"{_p(row.get('p_value')):>7}  {entry['test']}")
                lines.append(line.rstrip())
        base = group["baselines"]
        if base:
            shown = [m for m in group["metrics"] if any(m in b for b in base.values())][:2]
            lines.append("  baselines: " + "; ".join(
                f"{b} " + ", ".join(f"{m} {_fmt(v.get(m))}" for m in shown)
                for b, v in base.items()))
    for gate in report.get("gates", []):
        lines.append(_gate_line(gate))
    return lines


def _gate_line(gate: dict) -> str:
    verdict_text = "ok" if gate["passed"] else "FAILED"
    if gate["gate"] == "min":
        return (f"gate {gate['model']} {gate['metric']} >= {gate['min']:g}: "
                f"{_fmt(gate['value'])} {verdict_text}")
    drop_ci = gate.get("drop_ci")
    text = (f"gate {gate['model']} {gate['metric']} drop <= {gate['allowed']:g} beyond noise: "
            f"drop {_signed(gate['drop'])} {_ci_signed(drop_ci)} {verdict_text}")
    if gate.get("inconclusive"):
        text += " (the point drop exceeds the allowance, but not beyond noise: inconclusive)"
    return text


def _load_scorer(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.UsageError(f"--scorer expects MODULE:FUNCTION, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a scorer file in the current directory is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.UsageError(f"--scorer: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise click.UsageError(f"--scorer: {module_name!r} has no function {attr!r}")
    return fn


def _guarded(fn, spec: str):
    """A scorer that raises becomes a data error naming it and the record, not a traceback."""

    def call(prediction, reference, record):
        try:
            return fn(prediction, reference, record)
        except Exception as exc:
            rid = record.get("id") if isinstance(record, dict) else None
            raise DataError(
                f"--scorer {spec} failed" + (f" on gold record {rid}" if rid else "")
                + f" ({type(exc).__name__}: {exc})",
                fix="the scorer is called as f(prediction, reference, record) and must return a number",
            ) from None

    return call


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _say_scores(report: dict) -> None:
    say(f"scored {report['records']} gold records from {report['predictions']}")
    if report["missing"]:
        warn(f"{len(report['missing'])} gold record(s) had no prediction (scored as empty answers)")
    if report["unknown"]:
        warn(f"{len(report['unknown'])} prediction(s) for ids not in the gold set were ignored")
    for task, entry in report["tasks"].items():
        say(f"{task} ({entry['records']} records):")
        names = list(entry["metrics"])
        width = max(len(n) for n in ["metric", *names])
        header = f"  {'metric':<{width}}  {'model':>8}" + "".join(f"  {b:>10}" for b in entry["baselines"])
        say(header)
        for name in names:
            line = f"  {name:<{width}}  {_fmt(entry['metrics'][name]):>8}"
            line += "".join(f"  {_fmt(b.get(name)):>10}" for b in entry["baselines"].values())
            say(line)
        matrix = entry.get("confusion_matrix")
        if matrix and len(matrix["predicted"]) <= 12:
            say("  confusion matrix (rows: reference, columns: prediction):")
            say("    " + " ".join(f"{c[:10]:>10}" for c in ["", *matrix["predicted"]]))
            for label, row in zip(matrix["labels"], matrix["matrix"], strict=True):
                say("    " + " ".join([f"{label[:10]:>10}", *(f"{v:>10}" for v in row)]))


def _say_worst(worst) -> None:
    if worst.height == 0:
        say("no per-example scores to rank (chat is ranked only with --scorer)")
        return
    say(f"worst {worst.height} example(s):")
    for row in worst.iter_rows(named=True):
        say(f"  {row['id']} ({row['task']}, score {row['score']:.3f})")
        say(f"    reference:  {_clip(row['reference'])}")
        say(f"    prediction: {_clip(row['prediction'])}")


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
