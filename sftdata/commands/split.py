"""`sftdata split`: assign train/val/test by a seeded hash of each record's group or id."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from .. import outputs
from ..io import STDIO, TableWriter, write_json, write_table
from ._common import (
    check_paths,
    engine_options,
    handle_errors,
    input_argument,
    output_options,
    parse_key_values,
    rejects_option,
    report_option,
    say,
    seed_option,
    warn,
)

_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".pq", ".arrow", ".ipc")
_EXTENSION = {"parquet": "parquet", "jsonl": "jsonl", "arrow": "arrow"}


@click.command()
@input_argument
@click.option(
    "--ratios",
    default="train=0.8,val=0.1,test=0.1",
    show_default=True,
    help="Ratios adding up to 1, or record counts (one may be 'rest').",
)
@click.option("--stratify", default=None, help="Column to report and allocate per split.")
@click.option(
    "--group-by",
    "group_by",
    default=None,
    help="Column whose equal values stay in one split (default: `group` when it has values).",
)
@report_option(help="Write the per-split report here as JSON.")
@output_options
@seed_option
@rejects_option
@engine_options
@handle_errors
def split(input_path, ratios, stratify, group_by, report_path, output, to, seed, rejects, engine,
          ray_address):
    """Assign records to splits, stable as the dataset grows.

    -o names a directory that gets one file per split (DIR/train.parquet, ...), replaced
    together (never half old, half new; other files in DIR stay); without -o the `split`
    column is set on the records written to stdout.

    \b
    Example:
      sftdata convert raw.json | sftdata split --ratios train=0.8,val=0.1,test=0.1 -o splits/
    """
    from ..ops.split import default_group_column, parse_plan
    from ..ops.split import split as split_records

    plan = parse_plan(parse_key_values(ratios, "--ratios", cast=str))
    to_dir = output not in (None, STDIO)
    if to_dir and Path(output).suffix.lower() in _FILE_SUFFIXES:
        raise click.UsageError(
            f"-o {output}: split writes a directory (one file per split); "
            "for one file with a `split` column, redirect stdout instead: sftdata split ... > all.jsonl"
        )
    check_paths(
        [("INPUT", input_path)],
        [("-o", output), ("--rejects", rejects), ("--report", report_path)],
        dirs=["-o"] if to_dir else [],
    )

    from ..engines import get_engine

    eng = get_engine(engine, ray_address)
    units = eng.plan(input_path)
    if eng.name == "local":
        df = eng.read(units)
        group_col = group_by if group_by is not None else default_group_column(df)
        result = split_records(df, plan, seed=seed, stratify=stratify, group_by=group_col)
        report, unselected, parts = result.report, result.unselected, iter([result.parts()])
        frames = iter([result.frame])
    else:  # each unit split where it is; the report from a few columns of every row
        report, unselected, parts, frames = _split_units(eng, units, plan, seed, stratify,
                                                         group_by)
    for message in report["warnings"]:
        warn(message)
    _say_report(report)

    if rejects:  # written even when empty: a stale file from an earlier run never survives
        write_table(unselected, rejects, label="--rejects")
        if unselected.height:
            say(f"{unselected.height} unselected record(s) written to {rejects}")
    elif unselected.height:
        say(f"{unselected.height} unselected record(s) not written (pass --rejects FILE to keep them)")
    if report_path:
        write_json(report, report_path, "--report")
    if to_dir:
        _write_dir(parts, list(report["splits"]), Path(output), to or "parquet")
    else:
        with TableWriter(STDIO, to, "-o") as out:
            for frame in frames:
                out.write(frame)


def _split_units(eng, units, plan, seed, stratify, group_by):
    """split on the Ray engine. Ratios: a record's split is a hash of its group key, so every
    unit is split on its own; the report is computed by ops.split from the unit key, split and
    label of every row gathered here. Counts: the keys are ranked here, then every unit assigned
    (engines/split.py). docs/engines.md."""
    import polars as pl

    from ..ops.split import _report, _small_strata

    if group_by is None:  # local: `group` when it has any value in the whole input
        group_by = "group" if any(eng.map(units, _has_values, "group")) else None
    if plan.mode != "ratios":
        from ..engines.split import split_by_counts

        return split_by_counts(eng, units, plan, seed, stratify, group_by)
    results = list(eng.map(units, _split_unit, plan, seed, stratify, group_by))
    meta = pl.concat([r[1] for r in results], how="diagonal_relaxed")
    changed = sum(r[2] for r in results)
    warnings = _small_strata(meta, plan, stratify)
    if changed:
        warnings.insert(0, f"{changed} record(s) already had a split; it was replaced")
    report = _report(meta, 0, plan, seed, group_by, stratify, warnings)
    unselected = results[0][3]
    return report, unselected, (r[0].parts() for r in results), (r[0].frame for r in results)


def _has_values(frame, unit, column):
    return column in frame.columns and frame[column].null_count() < frame.height


def _split_unit(frame, unit, plan, seed, stratify, group_by):
    """One unit split by the op, with the columns the report needs (Ray workers import it)."""
    import polars as pl

    from ..ops.split import _unit_keys
    from ..ops.split import split as split_records

    result = split_records(frame, plan, seed=seed, stratify=stratify, group_by=group_by)
    cols = [c for c in dict.fromkeys(["label", stratify]) if c and c in frame.columns]
    meta = result.frame.select("split", *cols).with_columns(
        _unit_keys(frame, group_by).alias("_unit"))
    changed = int(frame["split"].is_not_null().sum()) if "split" in frame.columns else 0
    return result, meta, changed, result.unselected.head(0).with_columns(
        pl.lit(None, pl.String).alias("split"))


def _write_dir(parts, names: list[str], output: Path, fmt: str) -> None:
    """One file per split, swapped in together; other files already in the directory stay.
    ``parts`` yields {split name: frame} per unit of work, in input order."""
    files = {name: f"{name}.{_EXTENSION[fmt]}" for name in names}
    before = set(os.listdir(output)) if output.is_dir() else set()
    parts = iter(parts)
    first = next(parts)
    with outputs.building_dir(output, "-o", keep_others=True) as build:
        rest = next(parts, None)
        if rest is None:  # one frame per split (the local engine): each file written at once
            for name, part in first.items():
                write_table(part, build.path / files[name], fmt, "-o")
        else:  # per unit of work: one writer per split file, frames in input order
            with contextlib.ExitStack() as stack:
                writers = {name: stack.enter_context(TableWriter(build.path / file, fmt, "-o"))
                           for name, file in files.items()}
                for unit_parts in (first, rest, *parts):
                    for name, part in unit_parts.items():
                        writers[name].write(part)
    say(f"wrote {len(files)} split file(s) to {output}/")
    stale = sorted(n for n in before - set(files.values())
                   if Path(n).suffix.lstrip(".") in _EXTENSION)
    if stale:
        warn(f"{output}/ also holds {', '.join(stale)} from an earlier run; left as is")


def _say_report(report: dict) -> None:
    key = f"group by {report['group_by']}" if report["group_by"] else "per record"
    stable = "append-stable" if report["append_stable"] else "exact counts, not append-stable"
    say(f"split {report['records_in']} records ({report['mode']}, {key}, seed {report['seed']}, {stable}):")
    for name, entry in report["splits"].items():
        line = f"  {name}: {entry['records']} records ({entry['share']:.1%}), {entry['groups']} groups"
        if "labels" in entry:
            items = list(entry["labels"].items())
            labels = ", ".join(f"{k}={v}" for k, v in items[:10])
            if len(items) > 10:
                labels += f", ... ({len(items)} labels; see --report)"
            line += f"; labels {labels}"
        say(line)
    if report["unselected"]:
        say(f"  unselected: {report['unselected']} records")

