"""`sftdata leakcheck`: evidence of benchmark, val, test or gold items inside the training data.

Without --drop nothing is written to stdout: the verdict is the stderr summary, the --report JSON
and the exit code (--fail-on). With --drop the decontaminated training records go to the output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from ..engines.bounded import Cost
from ..errors import CheckFailed, UsageProblem
from ._common import (
    check_paths,
    engine_options,
    handle_errors,
    memory_option,
    output_options,
    rejects_option,
    report_option,
    say,
    units_within,
    verdict,
    warn,
)

# Training records checked whole hold their frame, their views and a chunk's n-gram hashes.
# Measured (30k ~200-word records, 38 MB uncompressed, --on whole): 0.56 GiB, ~7 bytes per input
# byte above the interpreter. In pieces: the interpreter and the reference index (~0.5 GiB),
# 24 bytes a training row (text hash and length for the frequency rules) and a piece of 1/16 of
# the rest.
COST = Cost(whole_per_byte=7.0, floor=512 << 20, per_row=24, share=16)

SPLIT_REFERENCES = ("val", "test", "gold")
SPLIT_SUFFIXES = (".parquet", ".arrow", ".jsonl")
SHOWN = 5  # contaminated records named on stderr; the rest are in --report


@click.command()
@click.argument("input_path", metavar="[TRAIN|DIR]", required=False, default="-")
@click.option("--against", "against", multiple=True, metavar="[NAME=]REF",
              help="Reference records (a benchmark after `convert`, '-' = stdin); repeatable.")
@click.option("--on", type=click.Choice(["prompt", "response", "whole"]), default="prompt",
              show_default=True, help="Text compared: user/system turns, assistant turns, or all.")
@click.option("--ngram", type=int, default=13, show_default=True,
              help="Words per n-gram (13 as GPT-3 and lm-eval); shorter items are matched whole.")
@click.option("--min-ngram", type=int, default=8, show_default=True,
              help="Items with fewer words (at most --ngram) only give low-confidence matches.")
@click.option("--frequent-cutoff", type=int, default=10, show_default=True,
              help="Ignore n-grams in more distinct training texts (or reference items) than this.")
@click.option("--min-overlap", type=float, default=0.4, show_default=True,
              help="Share of an item's words that shared n-grams must cover for high confidence.")
@click.option("--near-threshold", type=float, default=0.8, show_default=True,
              help="Jaccard similarity (word 5-grams) for a MinHash near-duplicate.")
@click.option("--num-perm", type=int, default=128, show_default=True,
              help="MinHash permutations.")
@click.option("--no-near", is_flag=True, help="Skip the MinHash near-duplicate evidence.")
@report_option(help="Write every match with its evidence as JSON here.")
@click.option("--drop", is_flag=True,
              help="Write the training records without the contaminated ones to the output; "
                   "the kept records are checked again until a check finds nothing.")
@click.option("--strict", is_flag=True,
              help="Count low-confidence matches as contaminated too (for --drop and --fail-on).")
@click.option("--fail-on", "fail_on", default=None, metavar="N|P%",
              help="Exit 1 when more than N records (or P percent) are contaminated.")
@output_options
@rejects_option
@memory_option
@engine_options
@handle_errors
def leakcheck(
    input_path: str, against: tuple[str, ...], on: str, ngram: int, min_ngram: int,
    frequent_cutoff: int, min_overlap: float, near_threshold: float, num_perm: int,
    no_near: bool, report_path: str | None, drop: bool, strict: bool, fail_on: str | None,
    output: str, to: str | None, rejects: str | None, memory: str | None, engine: str,
    ray_address: str | None,
) -> None:
    """Find training records that contain benchmark, val, test or gold items.

    TRAIN may be a split directory (from `sftdata split -o DIR`): its train file is then checked
    against its val, test and gold files, plus any --against.

    \b
    Example:
      sftdata convert gsm8k_test.jsonl | sftdata leakcheck train.parquet --against - --fail-on 0
      sftdata leakcheck --memory 4GiB big/ --against test.jsonl --drop -o clean/
    """
    from ..io import STDIO, read_records, write_json, write_table
    from ..ops.leakcheck import check_params, drop_until_clean
    from ..ops.leakcheck import leakcheck as run_leakcheck

    if not drop:
        check_no_output_flags(output != STDIO, to is not None, rejects is not None)
    threshold = parse_fail_on(fail_on)
    if 1 <= ngram < min_ngram:  # M14: exact copies would all be low-confidence and --fail-on would pass
        raise click.UsageError(f"--min-ngram {min_ngram} must be at most --ngram {ngram}.")
    check_params(on=on, ngram=ngram, min_ngram=min_ngram, frequent_cutoff=frequent_cutoff,
                 near_threshold=near_threshold, num_perm=num_perm, min_overlap=min_overlap)
    train_path, sources = plan_inputs(input_path, against)
    check_paths([("TRAIN", train_path), ("--against", list(sources.values()))],
                [("-o", output if drop else None), ("--rejects", rejects), ("--report", report_path)])

    import contextlib

    from ..engines import get_engine

    with contextlib.ExitStack() as stack:  # a scratch directory while it runs, if it spills
        eng = get_engine(engine, ray_address)
        within = units_within(eng, train_path, memory, COST, stack, "leakcheck")
        units = within.units
        by_units = eng.name == "ray" or within.streamed  # scanned unit by unit (engines/leakcheck.py)
        references = {name: read_records(path) for name, path in sources.items()}
        params = dict(on=on, ngram=ngram, min_ngram=min_ngram, frequent_cutoff=frequent_cutoff,
                      near_threshold=near_threshold, num_perm=num_perm, min_overlap=min_overlap,
                      near=not no_near)
        if by_units:  # the references indexed once, the training units scanned
            from ..engines.leakcheck import leakcheck as leakcheck_units

            train = None
            result = leakcheck_units(eng, units, references, **params)
        else:
            train = eng.read(units)
            result = run_leakcheck(train, references, **params)
        n_train = result.summary["train_records"]
        flagged = set(result.contaminated_ids) | (set(result.low_confidence_ids) if strict else set())
        say_summary(result, strict)
        failure = None
        if threshold is not None:
            limit = threshold[0] if threshold[1] == "count" else threshold[0] / 100 * n_train
            if len(flagged) > limit:
                share = len(flagged) / max(n_train, 1)
                failure = verdict(CheckFailed(
                    f"leakcheck failed: {len(flagged)} contaminated record(s) ({share:.2%}) "
                    f"exceed --fail-on {fail_on}"
                ))
        if report_path:
            write_json(build_report(result, strict), report_path, "--report")
            say(f"report written to {report_path}")

        if drop:
            if by_units:  # checks over the units; kept records written unit by unit
                import polars as pl

                rounds, clean, dropped, n_kept = _drop_units(eng, units, references, result, strict,
                                                             params, output, to)
                first_dropped = dropped[0].height
                dropped = pl.concat(dropped, how="vertical_relaxed")
            else:
                outcome = drop_until_clean(
                    train, references, include_low=strict, first=result, on=on, ngram=ngram,
                    min_ngram=min_ngram, frequent_cutoff=frequent_cutoff,
                    near_threshold=near_threshold, num_perm=num_perm, min_overlap=min_overlap,
                    near=not no_near,
                )
                rounds, clean, dropped, first_dropped = (outcome.rounds, outcome.clean,
                                                         outcome.dropped, outcome.first_dropped)
                write_table(outcome.kept, output, to, "-o")
                n_kept = outcome.kept.height
            later = dropped.height - first_dropped
            if later:
                say(f"{later} more record(s) contaminated once the first ones were dropped (their "
                    f"shared n-grams were boilerplate only while those counted); dropped too, "
                    f"{len(rounds)} checks in all")
            if not clean:
                warn(f"still finding contamination after {len(rounds)} checks; "
                     "run leakcheck on the output again")
            say(f"dropped {dropped.height} contaminated record(s) of {n_train}; "
                f"wrote {n_kept}")
            if rejects:
                write_table(dropped, rejects, label="--rejects")
                say(f"{dropped.height} dropped record(s) written to {rejects} with a reason")
            elif dropped.height:
                say("dropped records not written (pass --rejects FILE to keep them)")
        if failure:
            raise failure


def _drop_units(eng, units, references, first, strict, params, output, to):
    """--drop on the Ray engine (engines/leakcheck.py): (checks, clean, dropped frames of each
    check, kept records written)."""
    import polars as pl

    from ..engines.leakcheck import drop_until_clean as drop_units
    from ..io import TableWriter

    rounds, clean, per_unit = drop_units(eng, units, references, first=first,
                                         include_low=strict, **params)
    dropped: list[list] = [[] for _ in rounds]
    n_kept = 0
    with TableWriter(output, to, "-o") as out:
        for kept, parts in per_unit:
            out.write(kept)
            n_kept += kept.height
            for check, frame in zip(dropped, parts, strict=True):
                check.append(frame)
    return rounds, clean, [pl.concat(c, how="vertical_relaxed") for c in dropped], n_kept


def check_no_output_flags(output: bool, to: bool, rejects: bool) -> None:
    """Without --drop no records are written, so the flags that place them make no sense."""
    given = [flag for flag, on in (("-o/--output", output), ("--to", to), ("--rejects", rejects))
             if on]
    if given:
        verb = "needs" if len(given) == 1 else "need"
        raise click.UsageError(
            f"{', '.join(given)} {verb} --drop: without --drop leakcheck writes no records, "
            "only the summary (stderr) and --report FILE."
        )


def parse_fail_on(text: str | None) -> tuple[float, str] | None:
    """'5' -> (5, 'count'); '0.1%' -> (0.1, 'percent'); a usage error otherwise."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*|\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*", text)
    if not match:
        raise click.UsageError(
            f"--fail-on expects a record count (e.g. 0) or a percentage (e.g. 0.1%), got {text!r}"
        )
    if match.group(1) is not None:
        return float(match.group(1)), "count"
    percent = float(match.group(2))
    if percent > 100:
        raise click.UsageError(f"--fail-on percentage must be at most 100%, got {text!r}")
    return percent, "percent"


def plan_inputs(input_path: str, against: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The training file and the named reference files; a split directory expands to its files."""
    sources: dict[str, str] = {}
    train_path = input_path
    if input_path != "-" and Path(input_path).is_dir() and _is_split_dir(Path(input_path)):
        folder = Path(input_path)
        train_path = split_file(folder, "train")
        if train_path is None:
            raise UsageProblem(
                f"{folder}: no train file (expected {folder}/train.parquet, .arrow or .jsonl, "
                "as `sftdata split -o DIR` writes)"
            )
        for name in SPLIT_REFERENCES:
            path = split_file(folder, name)
            if path is not None:
                sources[name] = path
        if not sources and not against:
            raise UsageProblem(f"{folder}: no val, test or gold file to check train against")
    elif not against:
        raise click.UsageError(
            "give at least one --against REF (a benchmark after `sftdata convert`), "
            "or a split directory as TRAIN"
        )
    for spec in against:
        name, path = reference_name(spec)
        if name in sources:
            raise click.UsageError(
                f"two reference sets are named {name!r}; name them apart: --against NAME=PATH"
            )
        sources[name] = path
    stdin_users = [p for p in [train_path, *sources.values()] if p == "-"]
    if len(stdin_users) > 1:
        raise click.UsageError(
            "stdin can feed only one input: TRAIN and --against both read '-'; "
            "give the training data as a file"
        )
    return train_path, sources


def _is_split_dir(folder: Path) -> bool:
    """A directory `sftdata split -o` wrote (a train file), not a dataset of part files."""
    from ..datasets import MANIFEST

    return (split_file(folder, "train") is not None or not (folder / MANIFEST).exists()
            and not any(folder.glob("part-*")))


def split_file(folder: Path, split: str) -> str | None:
    found = [folder / f"{split}{suffix}" for suffix in SPLIT_SUFFIXES]
    found = [p for p in found if p.is_file()]
    if len(found) > 1:
        raise UsageProblem(
            f"{folder}: several {split} files ({', '.join(p.name for p in found)}); keep one"
        )
    return str(found[0]) if found else None


def reference_name(spec: str) -> tuple[str, str]:
    """'NAME=PATH' -> (NAME, PATH); 'PATH' -> (file stem, PATH); '-' -> ('stdin', '-')."""
    name, sep, path = spec.partition("=")
    if sep and name and path and not Path(spec).exists():
        return name, path
    if spec == "-":
        return "stdin", "-"
    return Path(spec).stem or spec, spec


def say_summary(result: Any, strict: bool) -> None:
    s = result.summary
    sets = ", ".join(f"{name} ({entry['items']} items)" for name, entry in s["references"].items())
    say(f"leakcheck: {s['train_records']} training records (on {s['parameters']['on']}) "
        f"against {sets}")
    for name, entry in s["references"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in entry["matches_by_kind"].items() if v)
        say(f"  {name}: {entry['contaminated_records']} contaminated record(s), "
            f"{entry['low_confidence_records']} low-confidence"
            + (f" (pairs by kind: {kinds})" if kinds else ""))
    total = s["train_records"] or 1
    say(f"  contaminated: {s['contaminated_records']} of {s['train_records']} "
        f"({s['contaminated_records'] / total:.2%}); low-confidence: "
        f"{s['low_confidence_records']} ({'counted, --strict' if strict else 'reported, not counted'})")
    if s["frequent_ngrams_ignored"] or s["boilerplate_windows_ignored"]:
        say(f"  boilerplate ignored: {s['frequent_ngrams_ignored']} frequent n-gram(s) (in more "
            f"than {s['parameters']['frequent_cutoff']} training texts or reference items, "
            f"--frequent-cutoff) and {s['boilerplate_windows_ignored']} shared n-gram(s) mostly "
            "made of them")
    high = result.matches.filter(result.matches["confidence"] == "high")
    for row in high.unique("train_id", keep="first", maintain_order=True).head(SHOWN).iter_rows(
        named=True
    ):
        say(f"  {row['train_id']}: {row['kind']} match with {row['ref_set']} item "
            f"{row['ref_id']} (overlap {row['overlap']:.2f})")
    if len(result.contaminated_ids) > SHOWN:
        say(f"  ... {len(result.contaminated_ids) - SHOWN} more (see --report)")


def build_report(result: Any, strict: bool) -> dict[str, Any]:
    """JSON: the summary, then each contaminated (and low-confidence) record with its matches."""
    by_train: dict[str, list[dict[str, Any]]] = {}
    for row in result.matches.iter_rows(named=True):
        entry = {k: row[k] for k in ("ref_set", "ref_id", "kind", "confidence", "overlap")}
        entry["evidence"] = json.loads(row["evidence"])
        by_train.setdefault(row["train_id"], []).append(entry)
    return {
        "summary": result.summary,
        "strict": strict,
        "contaminated": [{"train_id": i, "matches": by_train[i]} for i in result.contaminated_ids],
        "low_confidence": [
            {"train_id": i, "matches": by_train[i]} for i in result.low_confidence_ids
        ],
    }
