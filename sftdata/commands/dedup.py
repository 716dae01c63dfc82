"""`sftdata dedup`: read -> check flags -> ops.dedup -> write kept rows (and --dupes)."""

from __future__ import annotations

import click

from ..engines.bounded import Cost
from ..io import STDIO, display_name
from ..text import VIEWS
from ._common import (
    check_paths,
    dir_outputs,
    engine_options,
    file_option,
    handle_errors,
    input_argument,
    memory_option,
    output_options,
    progress,
    say,
    seed_option,
    units_within,
    warn,
    write_with_side_output,
)

# Flags that only mean something to the near-duplicate stage.
NEAR_ONLY = ("threshold", "num_perm", "ngram", "unit", "approx", "verify")


@click.command()
@input_argument
@output_options
@click.option("--mode", type=click.Choice(["exact", "near", "both"]), default="both",
              show_default=True, help="exact: normalized-text hash; near: MinHash LSH; both: exact, then near.")
@click.option("--on", "on", type=click.Choice(list(VIEWS)), default="conversation",
              show_default=True, help="Which text to compare (conversation includes the roles).")
@click.option("--punctuation", is_flag=True, help="Ignore punctuation as well as case and whitespace.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.8,
              show_default=True, help="Jaccard similarity that makes a near duplicate.")
@click.option("--num-perm", type=click.IntRange(min=2), default=128, show_default=True,
              help="MinHash permutations (more: more accurate, slower).")
@click.option("--ngram", type=click.IntRange(min=1), default=3, show_default=True,
              help="Shingle size in --unit units.")
@click.option("--unit", type=click.Choice(["word", "char"]), default="word", show_default=True,
              help="Shingles of words or of characters.")
@click.option("--approx", is_flag=True,
              help="Approximate and cheaper: datasketch's banding and the MinHash-estimated Jaccard "
                   "instead of an exact check of every candidate (misses pairs near --threshold).")
@click.option("--verify", is_flag=True, hidden=True,
              help="Exact Jaccard of candidates: the default now; kept for old scripts.")
@click.option("--keep", default="first", show_default=True, metavar="first|longest|COLUMN",
              help="Which record of a cluster stays: the first, the longest, or the highest COLUMN.")
@file_option("--dupes", help="Write dropped records here with cluster_id, kept_id, similarity and reason.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Threads for the MinHash permutations (default: all cores; Polars uses its own pool).")
@seed_option
@memory_option
@engine_options
@click.pass_context
@handle_errors
def dedup(
    ctx: click.Context, input_path: str, output: str, to: str | None, mode: str, on: str,
    punctuation: bool, threshold: float, num_perm: int, ngram: int, unit: str, approx: bool,
    verify: bool, keep: str, dupes: str | None, workers: int | None, seed: int,
    memory: str | None, engine: str, ray_address: str | None,
) -> None:
    """Drop exact and near-duplicate records.

    \b
    Example:
      sftdata convert raw.json | sftdata dedup --threshold 0.8 --dupes dupes.jsonl > clean.jsonl
      sftdata dedup --memory 4GiB big/ -o clean/   # larger than 4 GiB: read in pieces, 3 passes
    """
    _check_flags(ctx, mode, output, dupes, approx, verify)
    outs = [("-o", output), ("--dupes", dupes)]
    check_paths([("INPUT", input_path)], outs, dir_outputs(*outs))
    from ..engines import get_engine

    eng = get_engine(engine, ray_address)
    options = dict(mode=mode, on=on, threshold=threshold, num_perm=num_perm, ngram=ngram,
                   unit=unit, punctuation=punctuation, approx=approx, keep=keep, seed=seed)
    if eng.name == "ray":  # the global steps as shuffles (sftdata/engines/ray_dedup.py)
        from ..engines.ray_dedup import dedup as ray_dedup

        result = ray_dedup(eng, eng.plan(input_path), **options)
        write_with_side_output(result.parts, output, to, dupes, "--dupes")
    else:
        result = _dedup_locally(input_path, memory, options, workers, output, to, dupes)
    _summarize(result, display_name(input_path), mode, on, threshold, num_perm, approx, dupes)


# dedup's memory (bench/bench_dedup_scale.py, ~200-word documents). Whole: the frame, a chunk's
# views, signatures (512 B a row) and the kept shingle hashes peaked at 3.02 GiB for 1M
# documents (1.2 GiB uncompressed). In pieces: ~0.6 GiB of interpreter, libraries and writer
# buffers, ~90 bytes a row of arrays kept over the whole input and, at the peaks (sorting the
# exact keys, bucketing a band), ~300 bytes a row in all, plus ~3x a piece while it is read,
# hashed and written. Measured with this cost model: 1.81 GiB at 4M under --memory 3GiB, 2.04
# GiB at 10M under --memory 4GiB (10M rows need a budget of ~4 GiB: below it, a warning).
COST = Cost(whole_per_byte=2.6, floor=600 << 20, per_row=320)


def _dedup_locally(input_path: str, memory: str | None, options: dict, workers: int | None,
                   output: str, to: str | None, dupes: str | None):
    """The whole input as one frame when it fits --memory, else unit by unit in three passes
    (sftdata/engines/dedup_bounded.py): the same output either way."""
    import contextlib

    from ..engines import get_engine

    with contextlib.ExitStack() as stack:
        within = units_within(get_engine("local"), input_path, memory, COST,
                              stack, "dedup")
        if within.streamed:
            from ..engines.dedup_bounded import dedup as dedup_bounded

            say("dedup: three passes over the pieces, signatures spilled to a scratch directory")
            result = dedup_bounded(within.units, within.spill, workers=workers, progress=progress,
                                   **options)
            parts = result.parts
        else:
            from ..ops.dedup import dedup as run_dedup

            result = run_dedup(within.whole(), workers=workers, **options)
            parts = iter([(result.kept, result.dupes)])
        write_with_side_output(parts, output, to, dupes, "--dupes")
    return result


def _check_flags(
    ctx: click.Context, mode: str, output: str, dupes: str | None, approx: bool, verify: bool
) -> None:
    if mode == "exact":
        given = [
            name for name in NEAR_ONLY
            if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        ]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise click.UsageError(
                f"{flags} only apply to near-duplicate detection; drop them or use --mode near or both."
            )
    if approx and verify:
        raise click.UsageError(
            "--approx and --verify contradict each other; candidates are verified exactly by "
            "default, so drop --verify (or drop --approx)."
        )
    if dupes == STDIO and output == STDIO:
        raise click.UsageError("--dupes needs a file path; stdout carries the kept records.")


def _summarize(result, source: str, mode: str, on: str, threshold: float, num_perm: int,
               approx: bool, dupes: str | None) -> None:
    say(
        f"dedup {source}: {result.rows_in} in, {result.kept_rows} kept, {result.dropped} dropped "
        f"(exact {result.dropped_exact}, near {result.dropped_near}) in {result.clusters} clusters"
    )
    if mode != "exact":
        line = (
            f"near: {result.bands} bands x {result.rows_per_band} rows for threshold {threshold} "
            f"({num_perm} permutations; a pair at Jaccard {result.recall_at:g} is a candidate with "
            f"probability {result.candidate_probability:.3f}), {result.candidate_pairs} candidate pairs"
        )
        kind = "estimated" if approx else "exact"
        line += f", {result.rejected_pairs} rejected by {kind} Jaccard below {threshold}"
        say(line)
    if result.not_compared:
        warn(f"{result.not_compared} records have an empty {on} and were kept without comparison")
    if dupes:
        say(f"dropped records written to {dupes}")
