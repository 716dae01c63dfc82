"""`sftdata render-template`: records -> records with `text`, `spans` and `template`."""

from __future__ import annotations

import contextlib

import click

from ..datasets import open_writer
from ..engines import get_engine
from ._common import (
    check_paths,
    dir_outputs,
    engine_options,
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
@engine_options
@handle_errors
def render_template(
    input_path: str, template_spec: str, generation_prompt: bool, variables: tuple[str, ...],
    output: str, to: str | None, rejects: str | None, engine: str, ray_address: str | None,
) -> None:
    """Render conversations with a chat template, marking assistant spans.

    \b
    Example:
      sftdata convert chats.json | sftdata render-template -t chatml | sftdata tokenize -t tok/
    """
    from ..templates import TemplateError, load_template

    extra = _variables(variables)
    outs = [("-o", output), ("--rejects", rejects)]
    check_paths([("INPUT", input_path)], outs, dir_outputs(*outs))
    try:
        template = load_template(template_spec)
    except TemplateError as exc:
        raise click.UsageError(str(exc)) from None
    eng = get_engine(engine, ray_address)
    units = eng.plan(input_path)
    rows_in = rendered = rejected = 0
    dropped: set[str] = set()
    with contextlib.ExitStack() as stack:  # on error every output is discarded, never half-kept
        out = stack.enter_context(open_writer(output, to, "-o"))
        bad = stack.enter_context(open_writer(rejects, None, "--rejects")) if rejects else None
        for n, result in eng.map(units, _render_unit, template, generation_prompt, extra,
                                 rejects is not None):
            rows_in += n
            rendered += result.records.height
            rejected += result.rejects.height
            dropped.update(result.dropped_columns)
            out.write(result.records)
            if bad is not None:
                bad.write(result.rejects)
    if dropped:
        warn(f"dropped stale column(s) {', '.join(sorted(dropped))}: tokenize again")
    say(
        f"render-template: {rows_in} rows in, {rendered} rendered, "
        f"{rejected} rejected (template {template.name}, {template.hash[:12]})"
    )


def _render_unit(frame, unit, template, generation_prompt, variables, keep_going):
    """One unit of input through the op (module level: Ray workers import it)."""
    from ..ops.render_template import render_template as op

    result = op(frame, template, generation_prompt=generation_prompt, variables=variables,
                keep_going=keep_going, source=None if unit.name == "<stdin>" else unit.name)
    return frame.height, result
