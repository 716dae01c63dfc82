"""`sftdata balance`: caps, target ratios and temperature mixtures over a class column."""

from __future__ import annotations

import click

from ._common import (
    check_paths,
    handle_errors,
    input_argument,
    output_options,
    parse_key_values,
    rejects_option,
    report_option,
    say,
    seed_option,
)


@click.command()
@input_argument
@click.option("--by", required=True, help="Class column: label, source, task or any other.")
@click.option("--cap", type=int, default=None, help="At most N records per class.")
@click.option(
    "--target",
    default=None,
    help="Class shares: 'uniform' or ratios like a=0.5,b=0.5 (normalized; unlisted classes dropped).",
)
@click.option(
    "--mix",
    default=None,
    help="Mixture weights like narrow=0.8,broad=0.2 (normalized; --temperature reshapes them).",
)
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="Temperature T: shares proportional to weight**(1/T); weights are class sizes without --mix.",
)
@click.option(
    "--strategy",
    type=click.Choice(["downsample", "upsample"]),
    default=None,
    help="downsample (default) never copies; upsample copies records of short classes.",
)
@click.option("--total", type=int, default=None, help="Output size (with --target, --mix or --temperature).")
@report_option(help="Write the before/after distribution here as JSON.")
@output_options
@seed_option
@rejects_option
@handle_errors
def balance(
    input_path, by, cap, target, mix, temperature, strategy, total, report_path, output, to, seed,
    rejects,
):
    """Rebalance records by a class column: caps, target ratios, mixtures.

    \b
    Example:
      sftdata convert raw.json | sftdata balance --by label --cap 500 --rejects over_cap.jsonl > capped.jsonl
      cat narrow.jsonl broad.jsonl | sftdata balance --by source --mix narrow=0.8,broad=0.2 > mixed.jsonl
    """
    from ..io import read_records, write_json, write_table
    from ..ops.balance import balance as run_balance
    from ..ops.balance import check_options

    target_arg = target if target in (None, "uniform") else parse_key_values(target, "--target")
    mix_arg = parse_key_values(mix, "--mix") if mix is not None else None
    check_options(cap, target_arg, mix_arg, temperature, strategy, total)  # before reading input
    check_paths([("INPUT", input_path)],
                [("-o", output), ("--rejects", rejects), ("--report", report_path)])

    df = read_records(input_path)
    result = run_balance(
        df, by, cap=cap, target=target_arg, mix=mix_arg, temperature=temperature,
        strategy=strategy, total=total, seed=seed,
    )
    _say_report(result.report)
    n_dropped = result.report["dropped"]
    if rejects:  # written even when empty: a stale file from an earlier run never survives
        write_table(result.dropped, rejects, label="--rejects")
        if n_dropped:
            say(f"{n_dropped} dropped record(s) written to {rejects}")
    elif n_dropped:
        say(f"{n_dropped} dropped record(s) not written (pass --rejects FILE to keep them)")
    if report_path:
        write_json(result.report, report_path, "--report")
    write_table(result.frame, output, to, "-o")


def _say_report(report: dict) -> None:
    how = {
        "cap": f"cap {report['cap']}",
        "target": f"target, {report['strategy']}",
        "mix": f"mix, {report['strategy']}",
        "temperature": f"temperature, {report['strategy']}",
    }[report["mode"]]
    say(
        f"balance by {report['by']} ({how}, seed {report['seed']}): {report['records_in']} in -> "
        f"{report['records_out']} out ({report['kept']} kept + {report['copies']} copies), "
        f"{report['dropped']} dropped"
    )
    width = max([len("class"), *(len(c) for c in report["classes"])])
    say(f"  {'class':<{width}}  before   after  dropped  copies  share before -> after")
    for cls, e in report["classes"].items():
        say(
            f"  {cls:<{width}}  {e['before']:>6}  {e['after']:>6}  {e['dropped']:>7}  {e['copies']:>6}"
            f"  {e['share_before']:>6.1%} -> {e['share_after']:.1%}"
        )
