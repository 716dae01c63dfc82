"""Shared pieces of every command: option decorators, error translation, stderr reporting.

Options are spelled the same everywhere (-o/--output, --to, --seed, --rejects, --report).
Every path a command writes goes through one policy (sftdata/outputs.py): ``check_paths`` before
any work, the writers in sftdata/io.py while writing.

Exit codes come from the outcome, never from how stderr was consumed: ``say``/``warn``/``fail``
never raise (a closed or full stderr is silenced, not fatal), and a closed data pipe ends quietly
with exit 0 only when no check has failed (``verdict``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import click

from .. import outputs
from ..errors import CheckFailed, SftError

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


def engine_options(f: F) -> F:
    """`--engine local|ray` ($SFTDATA_ENGINE) and `--ray-address` (docs/engines.md)."""
    f = click.option(
        "--ray-address", default=None, metavar="ADDRESS",
        help="Ray cluster for --engine ray (default: $RAY_ADDRESS, else a local Ray).",
    )(f)
    f = click.option(
        "--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
        envvar="SFTDATA_ENGINE", show_envvar=True,
        help="Run in this process (local) or on Ray Data (ray); the output is the same.",
    )(f)
    return f


def memory_option(f: F) -> F:
    """`--memory SIZE`: the memory budget of the local engine (sftdata/memory.py)."""
    return click.option(
        "--memory", default=None, metavar="SIZE",
        help="Memory budget (4GiB, 512MiB, 8GB); default half the memory available at start. "
             "An input larger than it is processed in pieces.",
    )(f)


def dir_outputs(*outputs_: tuple[str, Any]) -> list[str]:
    """Labels of the outputs written as a directory of parts (`-o DIR/`), for
    ``check_paths(dirs=...)`` in commands that can write datasets; a non-empty directory that
    is not a dataset is refused here (it would be replaced as a whole)."""
    from ..datasets import dir_output_problem, is_dir_output

    labels = [label for label, path in outputs_ if isinstance(path, str) and is_dir_output(path)]
    for label, path in outputs_:
        if label in labels and (problem := dir_output_problem(label, path)):
            raise click.UsageError(problem)
    return labels


def seed_option(f: F) -> F:
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def file_option(*decls: str, help: str) -> Callable[[F], F]:
    """An option naming a file the command writes (--rejects, --report, --dupes, --plot, --lock,
    --gold-out): a plain path, checked by ``check_paths`` with the policy's messages."""
    return click.option(*decls, metavar="FILE", default=None, help=help)


def rejects_option(f: F) -> F:
    return file_option(
        "--rejects", help="Write rejected/dropped rows here with a `reason` column and go on."
    )(f)


def report_option(help: str) -> Callable[[F], F]:
    """`--report FILE`: the command's report as JSON (stored as `report_path`)."""
    return file_option("--report", "report_path", help=help)


def check_paths(
    inputs: Sequence[tuple[str, Any]] = (),
    outputs_: Sequence[tuple[str, Any]] = (),
    dirs: Sequence[str] = (),
) -> None:
    """Before any work: every output against every input and every other output, and whether it
    can be written (outputs.check). Pairs are (option label, path or paths or None); labels in
    ``dirs`` are directory outputs. A problem is a usage error (exit 2) naming the options."""
    outputs.check(outputs.specs(inputs), outputs.specs(outputs_, dirs))


# --------------------------------------------------------------------------- stderr and exit codes


def _to_stderr(message: str) -> None:
    """Diagnostics are best effort: a closed, full or broken stderr never changes the outcome."""
    try:
        click.echo(message, err=True)
    except (OSError, ValueError):
        _silence(sys.stderr)


def _silence(stream: Any) -> None:
    """Point a broken standard stream at /dev/null so later writes and the flush at exit pass."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


def say(message: str) -> None:
    """Progress, counts and warnings go to stderr; stdout carries data only."""
    _to_stderr(message)


def warn(message: str) -> None:
    _to_stderr(f"Warning: {message}")


def fail(message: str, code: int = 1) -> None:
    _to_stderr(f"Error: {message}")
    sys.exit(code)


_verdicts: list[SftError] = []


def verdict(failure: SftError | None) -> SftError | None:
    """Record a check's outcome before its outputs are written (and return it, to raise once they
    are): a data pipe closed while writing them must not turn the failure into exit 0."""
    if failure is not None:
        _verdicts.append(failure)
    return failure


def _open_std_descriptors() -> None:
    """A closed stdin/stdout/stderr (`2>&-`) becomes /dev/null, so that no output file the
    command opens takes descriptor 2 and receives some library's diagnostics."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)


def handle_errors(f: F) -> F:
    """Run a command with its outputs committed together; typed library errors become
    `Error: ...` with their exit code; a closed data pipe exits 0 unless a check failed."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _verdicts.clear()
        _open_std_descriptors()
        try:
            with outputs.together(keep_on=(CheckFailed, BrokenPipeError)):
                return f(*args, **kwargs)
        except SftError as exc:
            fail(str(exc), exc.exit_code)
        except BrokenPipeError:
            _silence(sys.stdout)
            if _verdicts:
                fail(str(_verdicts[0]), _verdicts[0].exit_code)
            sys.exit(0)
        except click.ClickException as exc:  # a usage error found in the body; shown safely
            if isinstance(exc, click.UsageError) and exc.ctx is None:
                exc.ctx = click.get_current_context(silent=True)  # for its "Usage:" lines
            try:
                exc.show()
            except (OSError, ValueError):
                _silence(sys.stderr)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


LOG_EVERY_S = 30.0  # progress lines in a log (stderr not a terminal): at most one this often


def progress(iterable: Iterable[Any], total: int | None = None, desc: str = "") -> Iterable[Any]:
    """A progress bar on stderr when it is a terminal; otherwise, for a log, a line
    ``desc: i/total`` at most every LOG_EVERY_S seconds (none for work shorter than that)."""
    if sys.stderr is None:
        return iterable
    if not sys.stderr.isatty():
        return _log_lines(iterable, total, desc) if desc else iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)


def _log_lines(iterable: Iterable[Any], total: int | None, desc: str) -> Iterator[Any]:
    import time

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    last = time.monotonic()
    for done, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            say(f"{desc}: {done}/{total}" if total else f"{desc}: {done}")
            last = now


def parse_key_values(text: str | None, option: str, cast: Callable[[str], Any] = float) -> dict[str, Any]:
    """'train=0.8,val=0.1' -> {'train': 0.8, 'val': 0.1}, with a usage error naming the option."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{option} expects key=value pairs separated by commas, got {part!r}")
        if key.strip() in out:
            raise click.UsageError(f"{option}: {key.strip()!r} is given twice; give each name once")
        try:
            out[key.strip()] = cast(value.strip())
        except ValueError:
            raise click.UsageError(f"{option}: {value!r} is not a valid value for {key!r}") from None
    return out


def write_with_side_output(parts, output: str, to: str | None, side: str | None,
                           side_label: str) -> None:
    """Write (main, side) frame pairs to ``-o`` and to a side output (--dupes, --rejects).

    Both writers are opened before the first pair, so a side file is written even when empty
    (a stale one from an earlier run never survives); on an error every output is discarded,
    never half-kept.
    """
    import contextlib

    from ..datasets import open_writer

    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open_writer(output, to, "-o"))
        extra = stack.enter_context(open_writer(side, None, side_label)) if side else None
        for main, other in parts:
            out.write(main)
            if extra is not None:
                extra.write(other)


def units_within(engine: Any, path: str, memory: str | None, cost: Any,
                 stack: contextlib.ExitStack, command: str) -> Any:
    """The units a command reads ``path`` in: on the local engine cut to --memory when the
    input read whole would not fit (``cost``: sftdata/engines/bounded.py; its scratch directory
    lives as long as ``stack``), else the engine's own. Says so when it cuts."""
    from ..engines.bounded import Cost, Within, plan_within
    from ..memory import budget, format_size

    if engine.name != "local":
        return Within(engine.plan(path), False, 0, 0)
    cost = cost if isinstance(cost, Cost) else Cost(cost)
    limit = budget(memory)
    spill = stack.enter_context(outputs.scratch_dir(command))
    within = plan_within(path, limit, cost, spill)
    within.spill = spill
    if within.streamed:
        need = format_size(within.input_bytes * cost.whole_per_byte)
        say(f"{command}: the input would need about {need} at once, over --memory "
            f"{format_size(limit)}: reading it in {len(within.units)} pieces")
        if limit < cost.minimum(within.rows):
            warn(f"--memory {format_size(limit)} is below what {command} needs for "
                 f"{within.rows:,} rows in the smallest pieces (about "
                 f"{format_size(cost.minimum(within.rows))}); going on, it will use more")
    return within
