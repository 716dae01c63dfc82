"""`sftdata split`: assign train/val/test by a seeded hash of each record's group or id."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .. import outputs
from ..io import STDIO, read_records, write_json, write_table
from ._common import (
    check_paths,
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
@handle_errors
def split(input_path, ratios, stratify, group_by, report_path, output, to, seed, rejects):
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

    df = read_records(input_path)
    group_col = group_by if group_by is not None else default_group_column(df)
    result = split_records(df, plan, seed=seed, stratify=stratify, group_by=group_col)
    for message in result.warnings:
        warn(message)
    _say_report(result.report)

    if rejects:  # written even when empty: a stale file from an earlier run never survives
        write_table(result.unselected, rejects, label="--rejects")
        if result.unselected.height:
            say(f"{result.unselected.height} unselected record(s) written to {rejects}")
    elif result.unselected.height:
        say(f"{result.unselected.height} unselected record(s) not written (pass --rejects FILE to keep them)")
    if report_path:
        write_json(result.report, report_path, "--report")
    if to_dir:
        _write_dir(result.parts(), Path(output), to or "parquet")
    else:
        write_table(result.frame, STDIO, to, "-o")


def _write_dir(parts: dict, output: Path, fmt: str) -> None:
    """One file per split, swapped in together; other files already in the directory stay."""
    names = {f"{name}.{_EXTENSION[fmt]}" for name in parts}
    before = set(os.listdir(output)) if output.is_dir() else set()
    with outputs.building_dir(output, "-o", keep_others=True) as build:
        for name, part in parts.items():
            write_table(part, build.path / f"{name}.{_EXTENSION[fmt]}", fmt, "-o")
    say(f"wrote {len(names)} split file(s) to {output}/")
    stale = sorted(n for n in before - names if Path(n).suffix.lstrip(".") in _EXTENSION)
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

