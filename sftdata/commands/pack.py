"""`sftdata pack`: tokenized records -> a directory of packed shards (sftdata/shards.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import outputs
from ..errors import DataError
from ..shards import ROWS_PER_FILE
from ._common import (
    check_paths,
    engine_options,
    handle_errors,
    input_argument,
    memory_option,
    progress,
    rejects_option,
    say,
    warn,
)

MAX_SEQ_LEN = 1 << 24  # L25: 1e10 cost 2.1 GB and wrote seq_len 10,000,000,000 to the manifest

if TYPE_CHECKING:
    from ..ops.pack import PackResult


@click.command()
@input_argument
@click.option(
    "-o", "--output", "output", required=True, metavar="DIR",
    help="Shard directory to write (built beside it, then swapped in as a whole).",
)
@click.option("--seq-len", type=int, default=2048, show_default=True, help="Tokens per sequence.")
@click.option(
    "--strategy", type=click.Choice(["bfd", "ffd", "wrap"]), default=None,
    help="Bin packing: best-fit decreasing (default) or first-fit decreasing; wrap: concatenate "
         "documents and cut the stream into --seq-len chunks (continued pretraining).",
)
@click.option(
    "--cross-doc-attention", is_flag=True,
    help="wrap: let documents in one chunk attend to each other (one stream per chunk).",
)
@click.option("--no-pack", is_flag=True, help="One document per sequence (padded at train time).")
@click.option(
    "--truncation", type=click.Choice(["right", "left", "drop", "fail"]), default=None,
    help="Records longer than --seq-len: keep the start (right, default), keep the end, drop "
         "them, or stop (wrap cuts nothing).",
)
@rejects_option
@click.option("--force", is_flag=True, help="Replace an existing non-empty output directory.")
@click.option(
    "--rows-per-file", type=click.IntRange(min=1), default=ROWS_PER_FILE, show_default=True,
    help="Sequences per Arrow file.",
)
@engine_options
@memory_option
@handle_errors
def pack(
    input_path: str,
    output: str,
    seq_len: int,
    strategy: str | None,
    cross_doc_attention: bool,
    no_pack: bool,
    truncation: str | None,
    rejects: str | None,
    force: bool,
    rows_per_file: int,
    engine: str,
    ray_address: str | None,
    memory: str | None,
) -> None:
    """Pack tokenized records into fixed-length training shards.

    \b
    Example:
      sftdata tokenize --tokenizer tok/ rendered.jsonl | sftdata pack --seq-len 2048 -o shards/
      sftdata tokenize -t tok/ text.jsonl | sftdata pack --strategy wrap --seq-len 4096 -o cpt/
      sftdata pack --engine ray tokenized/ --seq-len 4096 -o shards/
      sftdata pack --memory 4GiB tokens.parquet -o shards/   # larger inputs go in pieces
    """
    from ..io import display_name, open_source, read_table, write_table
    from ..ops.pack import pack as pack_op
    from ..shards import ShardWriter, write_manifest

    if no_pack and strategy is not None:
        raise click.UsageError("--no-pack and --strategy cannot be used together.")
    if strategy == "wrap" and truncation is not None:
        raise click.UsageError("--truncation does not apply to --strategy wrap: it cuts nothing.")
    if cross_doc_attention and strategy != "wrap":
        raise click.UsageError("--cross-doc-attention applies to --strategy wrap only.")
    if seq_len < 1:
        raise click.UsageError(f"--seq-len must be at least 1, got {seq_len}.")
    if seq_len > MAX_SEQ_LEN:
        raise click.UsageError(f"--seq-len must be at most {MAX_SEQ_LEN:,} (2**24), got {seq_len}.")
    target = Path(output)
    check_paths([("INPUT", input_path)], [("-o", output), ("--rejects", rejects)], dirs=["-o"])
    if target.is_dir() and any(target.iterdir()) and not force:
        raise click.UsageError(
            f"{output} exists and is not empty; pass --force to replace it."
        )

    from ..datasets import is_dataset, table_plan
    from ..engines import get_engine
    from ..memory import budget as parse_budget
    from ..memory import format_size

    eng = get_engine(engine, ray_address)
    options = dict(seq_len=seq_len, strategy="none" if no_pack else (strategy or "bfd"),
                   truncation=truncation or "right", cross_doc_attention=cross_doc_attention)
    budget = parse_budget(memory)
    pieces = None
    if eng.name == "local" and options["strategy"] != "wrap":  # wrap joins its stream whole
        from ..engines.local import pack_pieces

        pieces, tokens = pack_pieces(input_path, budget)
        if pieces:
            say(f"pack: {tokens:,} tokens do not fit --memory {format_size(budget)}: packing "
                f"{len(pieces)} pieces one at a time (bins are filled within a piece, then "
                "topped up across pieces)")
    if eng.name != "local" or pieces:  # unit by unit (engines/pack.py)
        from ..engines.pack import pack as pack_units

        name = display_name(input_path)
        units = pieces or table_plan(input_path, eng.name)
        with outputs.building_dir(target, "-o") as build:
            result, splits = pack_units(eng, units, build.path,
                                        source=name, rows_per_file=rows_per_file, **options)
            for message in result.warnings:
                warn(message)
            if not splits:
                _nothing_packed(result, rejects, name)
            write_manifest(build.path, {**result.manifest(), "splits": splits})
    else:
        if is_dataset(input_path):
            frame, name = eng.read(table_plan(input_path, eng.name)), input_path
        else:
            source = open_source(input_path)
            frame, name = read_table(source), source.name
        result = pack_op(frame, source=name, **options)
        for message in result.warnings:
            warn(message)
        if not result.splits:
            _nothing_packed(result, rejects, name)
        with outputs.building_dir(target, "-o") as build:
            tmp = build.path
            splits = {}
            for split_name, packed in result.splits.items():
                writer = ShardWriter(tmp, split_name, rows_per_file=rows_per_file)
                files = -(-packed.sequences // rows_per_file)
                batches = packed.batches(rows_per_file)
                for batch in progress(batches, total=files, desc=f"pack {split_name}"):
                    writer.add_packed(**batch)
                splits[split_name] = writer.close(seq_len)
            write_manifest(tmp, {**result.manifest(), "splits": splits})
    if rejects:
        write_table(result.dropped, rejects, label="--rejects")
    _report(result, splits, output, rejects)


def _nothing_packed(result: PackResult, rejects: str | None, name: str) -> None:
    """Every row was dropped: the rejects say why (kept although the command fails)."""
    from ..io import write_table

    if rejects:
        with outputs.immediately():
            write_table(result.dropped, rejects, label="--rejects")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(result.report.dropped.items()))
    raise DataError(
        f"all {result.report.rows_in} rows were dropped ({kinds}); nothing to pack",
        file=name, fix="raise --seq-len or change --truncation; --rejects FILE shows every reason",
    )


def _report(result: PackResult, splits: dict, output: str, rejects: str | None) -> None:
    r = result.report
    say(
        f"pack: {r.rows_in} rows in -> {r.rows_packed} packed, {r.rows_dropped} dropped "
        f"({result.strategy}, seq_len {result.seq_len}) -> {output}"
    )
    if r.rows_truncated:
        say(
            f"  truncated ({result.truncation}): {r.rows_truncated} rows, "
            f"{r.supervised_tokens_lost} supervised tokens lost"
        )
    for kind, count in sorted(r.dropped.items()):
        say(f"  dropped {count} rows: {kind.replace('_', ' ')}")
    if r.rows_dropped:
        say(f"  dropped rows with their reason: {rejects}" if rejects
            else "  pass --rejects FILE to write the dropped rows with their reason")
    for name, entry in splits.items():
        wrap = getattr(result.splits.get(name), "wrap", None)  # per unit on Ray: no plan here
        if wrap is not None:
            attention = "across documents" if result.cross_doc_attention else "within documents"
            say(
                f"  {name}: {wrap['documents']} documents -> {entry['sequences']} chunks of "
                f"{result.seq_len} (last {wrap['last_chunk_tokens']} tokens), "
                f"{wrap['documents_split']} documents split across chunks, "
                f"{wrap['eos_added']} EOS added; {entry['tokens']} tokens "
                f"({entry['supervised_tokens']} supervised); attention {attention}"
            )
            continue
        say(
            f"  {name}: {entry['sequences']} sequences, {entry['documents']} documents, "
            f"{entry['tokens']} tokens ({entry['supervised_tokens']} supervised), "
            f"efficiency {entry['efficiency']:.2%}"
        )
