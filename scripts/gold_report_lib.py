"""Shared pieces of the example scripts' tables over multi-model `sftdata gold score --json`
reports (scripts/forgetting_report.py, scripts/merge_report.py)."""

import sys


def group_with(report: dict, metric: str, path: str) -> tuple[str, dict]:
    """The first (name, group) of a report that has ``metric``; exits naming the file if none."""
    for key, group in report["groups"].items():
        if metric in group["metrics"]:
            return key, group
    sys.exit(f"{path}: no group with the metric {metric} (a multi-model gold score report?)")


def ci(pair, signed=False) -> str:
    if not pair:
        return "n/a"
    f = "{:+.2f}" if signed else "{:.2f}"
    return f"[{f.format(pair[0])}, {f.format(pair[1])}]"


def p_value(value) -> str:
    return "" if value is None else (f"{value:.3f}" if value >= 1e-3 else f"{value:.1e}")
