"""`sftdata convert`: any source format -> canonical records."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from ..formats import FORMATS, Options, classification
from ..io import (
    STDIO,
    BackgroundWriter,
    display_name,
    iter_input_batches,
    open_source,
    prefetch,
)
from ..ops.convert import Converter, template_problem
from ..schema import ROLES, TASKS
from ._common import (
    check_paths,
    dir_outputs,
    engine_options,
    handle_errors,
    input_argument,
    output_options,
    parse_key_values,
    progress,
    rejects_option,
    say,
    warn,
)


@click.command()
@input_argument
@output_options
@rejects_option
@click.option("--from", "from_", type=click.Choice(list(FORMATS)), default=None,
              help="Source format (default: detected from the first row's keys).")
@click.option("--map", "mapping", metavar="TARGET=COLUMN,...", default=None,
              help="Read a column under another name, e.g. instruction=question,output=answer.")
@click.option("--roles", metavar="NAME=ROLE,...", default=None,
              help="Extra role names, e.g. bot=assistant,narrator=system.")
@click.option("--template", default=None,
              help="Prompt template for classification/CoNLL rows; {column} is replaced.")
@click.option("--task", type=click.Choice(list(TASKS)), default=None,
              help="Set the task of every record (default: the format decides).")
@click.option("--source", "source_name", default=None,
              help="Value of the `source` column (default: the input file's name).")
@click.option("--oasst-best", is_flag=True, help="OASST trees: keep only the best-ranked path.")
@engine_options
@handle_errors
def convert(input_path, output, to, rejects, from_, mapping, roles, template, task, source_name,
            oasst_best, engine, ray_address):
    """Convert Alpaca, ShareGPT, OpenAI, OASST, text and label tables to records.

    \b
    Example:
      cat alpaca.json | sftdata convert | sftdata validate -
      sftdata convert trees.jsonl --oasst-best -o oasst.parquet
    """
    mapping = parse_key_values(mapping, "--map", str)
    role_map = parse_key_values(roles, "--roles", str)
    _check_flags(from_, template, oasst_best, role_map)
    outs = [("-o", output), ("--rejects", rejects)]
    check_paths([("INPUT", input_path)], outs, dir_outputs(*outs))

    name = display_name(input_path)
    opts = Options(
        source=source_name or (Path(input_path).name if input_path != STDIO else "stdin"),
        roles=role_map, template=template, oasst_best=oasst_best, task=task,
    )
    from ..datasets import open_writer, raw_units

    units = raw_units(input_path)
    if units is not None or engine == "ray":  # per part file, on either engine
        fmt = _convert_units(input_path, units, output, to, rejects, from_, opts, mapping,
                             engine, ray_address)
        _warn_unused(template, oasst_best, fmt)
        return
    source = open_source(input_path, "conll" if from_ == "conll" else None)
    conv = Converter(name, from_, opts, mapping, keep_going=rejects is not None)
    with contextlib.ExitStack() as stack:  # on error both files are discarded, never half-kept
        out = stack.enter_context(BackgroundWriter(open_writer(output, to, "-o")))
        rejected = stack.enter_context(open_writer(rejects, None, "--rejects")) if rejects else None
        for batch in progress(prefetch(iter_input_batches(source)), desc="convert"):
            _write(conv.feed(batch), out, rejected)
        _write(conv.finish(), out, rejected)
    say(f"convert: {name}: {conv.summary()}")
    if skipped := getattr(getattr(source, "corpus", None), "skipped", None):  # a text corpus
        warn(f"{len(skipped)} file(s) in {name} are not .txt/.md documents and were not read "
             f"(e.g. {skipped[0]})")
    if rejects and conv.rows_rejected:
        say(f"convert: {conv.rows_rejected} rejected rows written to {rejects}")
    _warn_unused(template, oasst_best, conv.fmt)


def _warn_unused(template, oasst_best, fmt) -> None:
    if template is not None and fmt not in ("classification", "conll"):
        warn(f"--template was not used: the input is {fmt}")
    if oasst_best and fmt != "oasst":
        warn(f"--oasst-best was not used: the input is {fmt}")


def _convert_units(input_path, units, output, to, rejects, from_, opts, mapping, engine,
                   ray_address) -> str:
    """Each part file converted on its own (a Converter per file, as for one file), in input
    order; stdin or one file on Ray is one unit. OASST trees must not span part files."""
    from ..datasets import Unit, open_writer
    from ..engines import get_engine
    from ..ops.convert import summary

    eng = get_engine(engine, ray_address)
    if units is None:  # one file or stdin on Ray: one unit (stdin's bytes travel with it)
        units = ([Unit(0, None, frame=open_source(input_path).read_bytes())]
                 if input_path == STDIO else [Unit(0, _raw_part(input_path))])
    rows_in = rejected = out_rows = 0
    fmts = []
    with contextlib.ExitStack() as stack:  # on error both outputs are discarded
        out = stack.enter_context(open_writer(output, to, "-o"))
        bad = stack.enter_context(open_writer(rejects, None, "--rejects")) if rejects else None
        for records, rejected_rows, stats in eng.map(units, _convert_unit, from_, opts, mapping,
                                                     rejects is not None):
            out.write(records)
            if bad is not None:
                bad.write(rejected_rows)
            fmts.append(stats[0])
            rows_in, rejected = rows_in + stats[1], rejected + stats[2]
            out_rows += stats[3]
    kinds = sorted(set(map(str, fmts)))
    fmt = fmts[0] if len(kinds) == 1 else f"mixed ({', '.join(kinds)})"
    say(f"convert: {display_name(input_path)}: {summary(fmt, rows_in, rejected, out_rows)}")
    if rejects and rejected:
        say(f"convert: {rejected} rejected rows written to {rejects}")
    return fmt


def _raw_part(path):
    from ..datasets import Part

    return Part(display_name(path), path, "raw")


def _convert_unit(data, unit, from_, opts, mapping, keep_going):
    """One part file (or stdin's bytes) through a Converter (module level: Ray workers
    import it)."""
    import polars as pl

    from ..datasets import raw_source
    from ..io import Source, sniff_format

    if unit.part is None:
        source = Source("<stdin>", sniff_format(None, data[:4096]), None, data)
    else:
        source = raw_source(unit)
    if from_ == "conll":
        source.fmt = "conll"
    conv = Converter(source.name, from_, opts, mapping, keep_going=keep_going)
    records, rejects = [], []
    for batch in iter_input_batches(source):
        part = conv.feed(batch)
        records.append(part.records)
        rejects.append(part.rejects)
    last = conv.finish()
    records.append(last.records)
    rejects.append(last.rejects)
    stats = (conv.fmt, conv.rows_in, conv.rows_rejected, conv.records_out)
    return (pl.concat(records, how="diagonal_relaxed"),
            pl.concat(rejects, how="diagonal_relaxed"), stats)


def _write(part, out, rejected) -> None:
    out.write(part.records)
    if rejected is not None:
        rejected.write(part.rejects)


def _check_flags(from_, template, oasst_best, role_map) -> None:
    if oasst_best and from_ not in (None, "oasst"):
        raise click.UsageError("--oasst-best only applies to OASST trees (--from oasst).")
    if template is not None and from_ not in (None, "classification", "conll"):
        raise click.UsageError("--template only applies to classification and CoNLL input.")
    if template is not None:
        _check_template(template, from_)
    for name, role in role_map.items():
        if role not in ROLES:
            raise click.UsageError(
                f"--roles {name}={role}: {role!r} is not a role; use one of {', '.join(ROLES)}."
            )


def _check_template(template: str, from_: str | None) -> None:
    if problem := template_problem(template, from_):
        raise click.UsageError(problem)
    for typo in classification.unclosed(template):
        warn(f"--template: {typo!r} has no closing brace; it is kept as text")
