"""`sftdata convert`: any source format -> canonical records."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from ..formats import FORMATS, Options, classification
from ..io import (
    STDIO,
    BackgroundWriter,
    TableWriter,
    display_name,
    iter_input_batches,
    open_source,
    prefetch,
)
from ..ops.convert import Converter, template_problem
from ..schema import ROLES, TASKS
from ._common import (
    check_paths,
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
@handle_errors
def convert(input_path, output, to, rejects, from_, mapping, roles, template, task, source_name,
            oasst_best):
    """Convert Alpaca, ShareGPT, OpenAI, OASST, text and label tables to records.

    \b
    Example:
      cat alpaca.json | sftdata convert | sftdata validate -
      sftdata convert trees.jsonl --oasst-best -o oasst.parquet
    """
    mapping = parse_key_values(mapping, "--map", str)
    role_map = parse_key_values(roles, "--roles", str)
    _check_flags(from_, template, oasst_best, role_map)
    check_paths([("INPUT", input_path)], [("-o", output), ("--rejects", rejects)])

    source = open_source(input_path, "conll" if from_ == "conll" else None)
    name = display_name(input_path)
    opts = Options(
        source=source_name or (Path(input_path).name if input_path != STDIO else "stdin"),
        roles=role_map, template=template, oasst_best=oasst_best, task=task,
    )
    conv = Converter(name, from_, opts, mapping, keep_going=rejects is not None)
    with contextlib.ExitStack() as stack:  # on error both files are discarded, never half-kept
        out = stack.enter_context(BackgroundWriter(TableWriter(output, to, "-o")))
        rejected = stack.enter_context(TableWriter(rejects, label="--rejects")) if rejects else None
        for batch in progress(prefetch(iter_input_batches(source)), desc="convert"):
            _write(conv.feed(batch), out, rejected)
        _write(conv.finish(), out, rejected)
    say(f"convert: {name}: {conv.summary()}")
    if skipped := getattr(getattr(source, "corpus", None), "skipped", None):  # a text corpus
        warn(f"{len(skipped)} file(s) in {name} are not .txt/.md documents and were not read "
             f"(e.g. {skipped[0]})")
    if rejects and conv.rows_rejected:
        say(f"convert: {conv.rows_rejected} rejected rows written to {rejects}")
    if template is not None and conv.fmt not in ("classification", "conll"):
        warn(f"--template was not used: the input is {conv.fmt}")
    if oasst_best and conv.fmt != "oasst":
        warn(f"--oasst-best was not used: the input is {conv.fmt}")


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
