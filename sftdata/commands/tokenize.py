"""`sftdata tokenize`: rendered records -> records with `input_ids`, `labels` and counts."""

from __future__ import annotations

import contextlib
import os

import click

from ..datasets import open_writer
from ..engines.bounded import Cost
from ..io import atomic_path, write_json
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
    rejects_option,
    report_option,
    say,
    units_within,
    warn,
)

# The local engine reads a plain file as one unit: its frame, the token lists (int64 ids and
# labels), their Arrow copy and the writer's buffer. Measured (30k ~200-word records, 77 MB
# uncompressed, tiny-chatml: 0.33 tokens a byte): 1.73 GiB, ~20 bytes per input byte above the
# interpreter; a BPE tokenizer with fewer tokens a byte needs less. In pieces: the interpreter,
# tokenizer and writer (~0.5 GiB), the report's arrays over every row (16 bytes a row), and a
# piece of 1/32 of the rest (at ~20x, about two thirds of it).
COST = Cost(whole_per_byte=20.0, floor=512 << 20, per_row=16, share=32)


@click.command("tokenize")
@input_argument
@click.option(
    "-t", "--tokenizer", "tokenizer_spec", required=True, metavar="DIR|FILE|NAME",
    help="HF tokenizer directory or .gguf file; tiktoken .tiktoken file or encoding name.",
)
@click.option(
    "--backend", type=click.Choice(["auto", "hf", "tiktoken"]), default="auto", show_default=True,
    help="Tokenizer back end (auto: directories and .gguf are HF, other files tiktoken).",
)
@click.option(
    "--special", default=None, metavar="TOKEN=ID,...",
    help="tiktoken special tokens, e.g. '<|im_start|>=100264,<|im_end|>=100265'.",
)
@click.option("--eos", default=None, metavar="TOKEN", help="End-of-sequence token (default: the tokenizer's).")
@click.option("--pad", default=None, metavar="TOKEN", help="Padding token (default: the tokenizer's, else eos).")
@click.option(
    "--train-on", type=click.Choice(["all", "last", "flag"]), default="all", show_default=True,
    help="Assistant turns trained: all, the last one, or those flagged train=true.",
)
@click.option(
    "--train-eot/--no-train-eot", default=True, show_default=True,
    help="Train the end-of-turn marker of every trained turn.",
)
@click.option("--train-prompt", is_flag=True, help="Train on every token, the prompt included.")
@click.option(
    "--max-len", type=click.IntRange(min=1), default=None,
    help="Longest sequence in tokens (task text rows are never cut: pack --strategy wrap).",
)
@click.option(
    "--truncation", type=click.Choice(["right", "left", "drop", "fail"]), default=None,
    help="Rows over --max-len: keep the start (right, default), keep the end (left), drop, fail.",
)
@click.option(
    "--allow-split-tokens", is_flag=True,
    help="Tokenize template control tokens the tokenizer lacks as plain text (refused by default).",
)
@report_option(help="Write the truncation and length report here as JSON.")
@file_option("--plot", "plot_path", help="Write a histogram of tokens per record here as PNG.")
@output_options
@rejects_option
@memory_option
@engine_options
@handle_errors
def tokenize(
    input_path: str, tokenizer_spec: str, backend: str, special: str | None, eos: str | None,
    pad: str | None, train_on: str, train_eot: bool, train_prompt: bool, max_len: int | None,
    truncation: str | None, allow_split_tokens: bool, report_path: str | None, plot_path: str | None, output: str,
    to: str | None, rejects: str | None, memory: str | None, engine: str,
    ray_address: str | None,
) -> None:
    """Tokenize rendered records into input_ids and labels (-100: not trained).

    \b
    Example:
      sftdata render-template -t chatml chats.jsonl | sftdata tokenize -t tok/ --max-len 2048 > tok.jsonl
      sftdata tokenize -t tok/ --memory 2GiB big.parquet -o tokens/   # read in pieces of 256 MiB
    """
    if truncation is not None and max_len is None:
        raise click.UsageError("--truncation needs --max-len.")
    if special and backend == "hf":
        raise click.UsageError("--special applies to tiktoken tokenizers only.")
    if plot_path is not None and not plot_path.lower().endswith(".png"):
        raise click.UsageError("--plot writes a PNG; give a file name ending in .png.")
    outs = [("-o", output), ("--rejects", rejects), ("--report", report_path),
            ("--plot", plot_path)]
    check_paths([("INPUT", input_path),
                 ("--tokenizer", tokenizer_spec if os.path.isfile(tokenizer_spec) else None)],
                outs, dir_outputs(("-o", output), ("--rejects", rejects)))
    from ..engines import get_engine
    from ..ops.tokenize import plot_lengths
    from ..tokenizers import TokenizerError, load_tokenizer, parse_specials

    try:
        tok = load_tokenizer(tokenizer_spec, backend, parse_specials(special), eos=eos, pad=pad)
    except TokenizerError as exc:
        raise click.UsageError(str(exc)) from None
    if special and tok.backend == "hf":
        raise click.UsageError("--special applies to tiktoken tokenizers only.")
    eng = get_engine(engine, ray_address)
    options = dict(train_on=train_on, train_eot=train_eot, train_prompt=train_prompt,
                   max_len=max_len, truncation=truncation or "right",
                   allow_split_tokens=allow_split_tokens)
    reports, lengths, n_tokens = [], [], []
    with contextlib.ExitStack() as stack:  # on error every output is discarded, never half-kept
        units = units_within(eng, input_path, memory, COST, stack,
                             "tokenize").units
        out = stack.enter_context(open_writer(output, to, "-o"))
        bad = stack.enter_context(open_writer(rejects, None, "--rejects")) if rejects else None
        for name, result in progress(eng.map(units, _tokenize_unit, tok, options),
                                     total=len(units), desc="tokenize"):
            unsupervised = result.report["rows_no_supervised"]
            if unsupervised and rejects is None:
                raise _no_supervised_error(unsupervised, result.rejects, result.reject_rows, name)
            out.write(result.records)
            if bad is not None:
                bad.write(result.rejects)
            reports.append(result.report)
            lengths.append(result.lengths)
            n_tokens.append(result.records["n_tokens"].to_numpy())
    report = _merged(reports, lengths, n_tokens)
    if report_path:
        write_json(report, report_path, "--report")
    if plot_path:
        import numpy as np

        with atomic_path(plot_path, "--plot") as tmp:
            plot_lengths(np.concatenate(lengths), str(tmp), max_len)
    _summarize(report, rejects)


def _tokenize_unit(frame, unit, tok, options):
    """One unit of input through the op (module level: Ray workers import it); row numbers in
    its errors are rebased to the unit's file by the engine."""
    from ..ops.tokenize import tokenize as op

    name = None if unit.name == "<stdin>" else unit.name
    result = op(frame, tok, source=name, **options)
    if result.reject_rows and unit.first_row:
        result.reject_rows = [r + unit.first_row for r in result.reject_rows]
    return name, result


_SAME = ("max_len", "truncation", "char_cap", "tokenizer")


def _merged(reports: list[dict], lengths: list, n_tokens: list) -> dict:
    """One report from the units' reports: counts added, length statistics over every row."""
    import numpy as np

    from ..ops.tokenize import _stats

    if len(reports) == 1:
        return reports[0]
    merged = {}
    for key, value in reports[0].items():
        if key in _SAME or not isinstance(value, int) or isinstance(value, bool):
            merged[key] = value
        else:
            merged[key] = sum(r[key] for r in reports)
    merged["length_before_truncation"] = _stats(np.concatenate(lengths))
    merged["length_out"] = _stats(np.concatenate(n_tokens))
    return merged


def _no_supervised_error(count: int, rejects, rows: list[int], source: str | None) -> Exception:
    """The first row left with nothing to train, numbered from 1, and what to do about it."""
    from ..errors import DataError

    reasons = rejects["reason"].to_list()
    at = next(i for i, r in enumerate(reasons) if "no supervised token" in r)
    fix = "pass --rejects FILE to drop them with a reason, raise --max-len, or change --train-on"
    if "no assistant turn" in reasons[at]:
        fix = ("records without an answer (prompts) are input for `sfttrain generate`, not for "
               "training; pass --rejects FILE to drop them with a reason, or --train-prompt to "
               "train on the whole text")
    return DataError(f"{reasons[at]}; {count} row(s) in all would have none",
                     file=source or "<stdin>", row=rows[at] + 1, fix=fix)


def _summarize(report: dict, rejects: str | None) -> None:
    lengths = report["length_before_truncation"]
    say(
        f"tokenize: {report['rows_in']} rows in, {report['rows_out']} out, "
        f"{report['rows_dropped']} dropped; {report['tokens']} tokens, "
        f"{report['supervised_tokens']} supervised"
    )
    say(
        f"tokenize: tokens per row min {lengths['min']}, median {lengths['median']}, "
        f"p95 {lengths['p95']}, max {lengths['max']}"
    )
    if report.get("rows_capped"):
        say(
            f"tokenize: {report['rows_capped']} rows longer than {report['char_cap']} characters "
            f"were cut to that before encoding (4 x the longest token x (--max-len + 8)); their "
            "token counts before truncation are of the cut text"
        )
    if report.get("text_rows_kept_whole"):
        say(
            f"tokenize: {report['text_rows_kept_whole']} text rows longer than --max-len kept "
            "whole (task text is never cut; `sftdata pack --strategy wrap` splits it into chunks)"
        )
    if report["rows_truncated"]:
        warn(
            f"{report['rows_truncated']} rows truncated ({report['truncation']}), "
            f"{report['supervised_tokens_lost']} supervised tokens lost"
        )
    if report["rows_too_long_dropped"]:
        warn(f"{report['rows_too_long_dropped']} rows longer than --max-len dropped")
    if report["rows_no_supervised"]:
        warn(f"{report['rows_no_supervised']} rows with no supervised token dropped")
    if report["rows_dropped"] and rejects:
        say(f"tokenize: dropped rows written to {rejects} with a reason")
