"""Shared pieces of every command: option decorators, error translation, stderr reporting.

Options are spelled the same everywhere (-o/--output, --to, --seed, --rejects).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from ..errors import SftError

F = TypeVar("F", bound=Callable[..., Any])


def input_argument(f: F) -> F:
    """An optional input path; '-' or nothing reads stdin."""
    return click.argument("input_path", metavar="[INPUT]", required=False, default="-")(f)


def output_options(f: F) -> F:
    f = click.option(
        "--to",
        "to",
        type=click.Choice(["jsonl", "parquet", "arrow"]),
        default=None,
        help="Output format (default: from the -o extension, JSONL on stdout).",
    )(f)
    f = click.option(
        "-o",
        "--output",
        "output",
        default="-",
        show_default=True,
        help="Output file ('-' = stdout).",
    )(f)
    return f


def seed_option(f: F) -> F:
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def rejects_option(f: F) -> F:
    return click.option(
        "--rejects",
        type=click.Path(dir_okay=False),
        default=None,
        help="Write rejected/dropped rows here with a `reason` column and go on.",
    )(f)


def report_option(help: str) -> Callable[[F], F]:
    """`--report FILE`: the command's report as JSON (stored as `report_path`)."""
    return click.option(
        "--report", "report_path", type=click.Path(dir_okay=False), default=None, help=help
    )


def say(message: str) -> None:
    """Progress, counts and warnings go to stderr; stdout carries data only."""
    click.echo(message, err=True)


def warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def handle_errors(f: F) -> F:
    """Typed library errors become `Error: ...` with their exit code; a closed pipe exits 0."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except SftError as exc:
            fail(str(exc), exc.exit_code)
        except BrokenPipeError:
            _quiet_broken_pipe()

    return wrapper  # type: ignore[return-value]


def _quiet_broken_pipe() -> None:
    # Python would print a traceback when flushing stdout at exit; point stdout at devnull.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


def progress(iterable: Iterable[Any], total: int | None = None, desc: str = "") -> Iterable[Any]:
    """A progress bar on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)


def parse_key_values(text: str | None, option: str, cast: Callable[[str], Any] = float) -> dict[str, Any]:
    """'train=0.8,val=0.1' -> {'train': 0.8, 'val': 0.1}, with a usage error naming the option."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{option} expects key=value pairs separated by commas, got {part!r}")
        try:
            out[key.strip()] = cast(value.strip())
        except ValueError:
            raise click.UsageError(f"{option}: {value!r} is not a valid value for {key!r}") from None
    return out
