"""`sftdata render-template`: records -> records with `text`, `spans` and `template`."""

from __future__ import annotations

import click

from ..io import read_records, write_table
from ._common import (
    check_paths,
    handle_errors,
    input_argument,
    output_options,
    rejects_option,
    say,
    warn,
)


def _variables(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--var expects NAME=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


@click.command("render-template")
@input_argument
@click.option(
    "-t", "--template", "template_spec", required=True, metavar="NAME|FILE|DIR",
    help="Built-in (chatml, llama3, alpaca, sixtoken), a Jinja file, or a tokenizer directory.",
)
@click.option(
    "--generation-prompt", is_flag=True,
    help="Render for inference: last assistant answer removed, generation prompt added, no spans.",
)
@click.option(
    "--var", "variables", multiple=True, metavar="NAME=VALUE",
    help="A template variable, e.g. --var bos_token='<s>' (repeatable).",
)
@output_options
@rejects_option
@handle_errors
def render_template(
    input_path: str, template_spec: str, generation_prompt: bool, variables: tuple[str, ...],
    output: str, to: str | None, rejects: str | None,
) -> None:
    """Render conversations with a chat template, marking assistant spans.

    \b
    Example:
      sftdata convert chats.json | sftdata render-template -t chatml | sftdata tokenize -t tok/
    """
    from ..ops.render_template import render_template as op
    from ..templates import TemplateError, load_template

    extra = _variables(variables)
    check_paths([("INPUT", input_path)], [("-o", output), ("--rejects", rejects)])
    try:
        template = load_template(template_spec)
    except TemplateError as exc:
        raise click.UsageError(str(exc)) from None
    df = read_records(input_path)
    result = op(
        df, template, generation_prompt=generation_prompt, variables=extra,
        keep_going=rejects is not None, source=None if input_path == "-" else input_path,
    )
    if result.dropped_columns:
        warn(f"dropped stale column(s) {', '.join(result.dropped_columns)}: tokenize again")
    write_table(result.records, output, to, "-o")
    if rejects is not None:
        write_table(result.rejects, rejects, label="--rejects")
    say(
        f"render-template: {df.height} rows in, {result.records.height} rendered, "
        f"{result.rejects.height} rejected (template {template.name}, {template.hash[:12]})"
    )
