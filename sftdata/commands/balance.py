"""`sftdata balance`: caps, target ratios and temperature mixtures over a class column."""

from __future__ import annotations

import click

from ._common import (
    check_paths,
    dir_outputs,
    engine_options,
    handle_errors,
    input_argument,
    output_options,
    parse_key_values,
    rejects_option,
    report_option,
    say,
    seed_option,
    write_with_side_output,
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
@engine_options
@handle_errors
def balance(
    input_path, by, cap, target, mix, temperature, strategy, total, report_path, output, to, seed,
    rejects, engine, ray_address
):
    """Rebalance records by a class column: caps, target ratios, mixtures.

    \b
    Example:
      sftdata convert raw.json | sftdata balance --by label --cap 500 --rejects over_cap.jsonl > capped.jsonl
      cat narrow.jsonl broad.jsonl | sftdata balance --by source --mix narrow=0.8,broad=0.2 > mixed.jsonl
    """
    from ..io import write_json
    from ..ops.balance import balance as run_balance
    from ..ops.balance import check_options

    target_arg = target if target in (None, "uniform") else parse_key_values(target, "--target")
    mix_arg = parse_key_values(mix, "--mix") if mix is not None else None
    check_options(cap, target_arg, mix_arg, temperature, strategy, total)  # before reading input
    outs = [("-o", output), ("--rejects", rejects), ("--report", report_path)]
    check_paths([("INPUT", input_path)], outs, dir_outputs(outs[0], outs[1]))
    from ..engines import get_engine

    eng = get_engine(engine, ray_address)
    units = eng.plan(input_path)
    options = dict(cap=cap, target=target_arg, mix=mix_arg, temperature=temperature,
                   strategy=strategy, total=total, seed=seed)
    if eng.name == "local":
        result = run_balance(eng.read(units), by, **options)
        report, parts = result.report, iter([(result.frame, result.dropped)])
    else:  # counts, then the same draw, then each unit keeps its rows (engines/balance.py)
        from ..engines.balance import balance as balance_units

        report, parts = balance_units(eng, units, by, **options)
    _say_report(report)
    if report_path:
        write_json(report, report_path, "--report")
    write_with_side_output(parts, output, to, rejects, "--rejects")
    n_dropped = report["dropped"]
    if rejects and n_dropped:
        say(f"{n_dropped} dropped record(s) written to {rejects}")
    elif n_dropped and not rejects:
        say(f"{n_dropped} dropped record(s) not written (pass --rejects FILE to keep them)")


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
