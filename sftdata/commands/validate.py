"""`sftdata validate`: run a data contract over records; exit 1 listing every failed expectation."""

from __future__ import annotations

import os

import click

from ..errors import CheckFailed
from ._common import check_paths, handle_errors, input_argument, report_option, say, verdict

SHOWN_IDS = 5


@click.command()
@input_argument
@click.option(
    "--suite",
    default="records",
    show_default=True,
    help="Suite: records, tokenized, or a path to your own JSON suite (docs/contracts.md).",
)
@report_option(help="Also write every result, with offending ids, as JSON here.")
@handle_errors
def validate(input_path: str, suite: str, report_path: str | None) -> None:
    """Check records against a data contract (Great Expectations suite).

    \b
    Example:
      sftdata convert raw.json | sftdata validate --suite records --report contract.json -
    """
    from ..contracts import load_suite
    from ..io import display_name, read_records, write_json
    from ..ops.validate import validate as run_validate

    check_paths([("INPUT", input_path), ("--suite", suite if os.path.isfile(suite) else None)], [("--report", report_path)])
    loaded = load_suite(suite)  # a bad --suite is reported before the input is read
    df = read_records(input_path)
    result = run_validate(df, loaded, source=display_name(input_path))
    total, failed = len(result.outcomes), len(result.failed)
    failure = verdict(CheckFailed(f"{failed} of {total} expectations failed in suite {result.suite}")
                      if failed else None)
    if report_path:
        write_json(result.to_dict(), report_path, "--report")
    name = display_name(input_path)
    say(
        f"validate: {name}: {result.rows} rows, suite {result.suite} ({result.suite_path}): "
        f"{total - failed} of {total} expectations passed"
    )
    for outcome in result.failed:
        say(f"FAILED {outcome.headline()}")
        if outcome.description:
            say(f"  {outcome.description}")
        if outcome.error:
            say(f"  error: {outcome.error}")
        elif outcome.unexpected_count:
            rows = "row" if outcome.unexpected_count == 1 else "rows"
            say(f"  {outcome.unexpected_count} {rows} ({outcome.unexpected_percent:.1f}%): {_examples(outcome)}")
        elif outcome.observed_value is not None:
            say(f"  observed: {outcome.observed_value!r}")
    if failure:
        raise failure


def _examples(outcome) -> str:
    shown = [
        f"{rid} (row {row + 1})"
        for rid, row in zip(outcome.offending_ids, outcome.offending_rows, strict=True)
    ][:SHOWN_IDS]
    more = outcome.unexpected_count - len(shown)
    return "ids " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")
