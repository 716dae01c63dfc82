"""The merge example's table (Markdown), from two `gold score --report` files of the same models:
task A's gold set and task B's (scripts/merge_example.sh). The first model is the base; the
models named A_NAME and B_NAME are the single fine-tunes, whose gains the merges are measured by.

    python scripts/merge_report.py ag_score.json accuracy ner_score.json f1 --own ag,ner > t.md
"""

from __future__ import annotations

import argparse
import json
import sys

from gold_report_lib import ci as _ci
from gold_report_lib import group_with
from gold_report_lib import p_value as _p


def table(reports: list[tuple[dict, str, str]], own: list[str]) -> str:
    columns = []
    for report, metric, path in reports:
        key, group = group_with(report, metric, path)
        columns.append((key, metric, group, group["metrics"][metric]["models"]))
    level = f"{reports[0][0]['confidence'] * 100:g}%"
    head = "| model |"
    for key, metric, group, _ in columns:
        head += (f" {key} {metric} (n={group['records']}) [{level} CI] | vs base, p |"
                 f" share of the own fine-tune's gain |")
    lines = [head, "| --- |" + " --- | --- | --- |" * len(columns)]
    names = [row["name"] for row in columns[0][3]]
    for i, name in enumerate(names):
        line = f"| {name} |"
        for (_, _, _, rows), own_name in zip(columns, own, strict=True):
            row = rows[i]
            base = rows[0]["value"]
            tuned = next(r["value"] for r in rows if r["name"] == own_name)
            diff = "" if i == 0 else f"{row['diff']:+.2f} {_ci(row.get('diff_ci'), True)}, " \
                                     f"p={_p(row.get('p_value'))}"
            share = "" if i == 0 or tuned == base else f"{(row['value'] - base) / (tuned - base):.2f}"
            line += f" {row['value']:.2f} {_ci(row.get('ci'))} | {diff} | {share} |"
        lines.append(line)
    first = reports[0][0]
    lines.append("")
    lines.append(f"Intervals: {first['ci_method']}, {first['bootstrap']} resamples, seed "
                 f"{first['seed']}; share = (model - base) / (own fine-tune - base) on that gold "
                 f"set, own fine-tunes: {', '.join(own)}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="REPORT METRIC [REPORT METRIC ...]")
    parser.add_argument("--own", required=True, help="the single fine-tune of each report")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("give REPORT METRIC pairs")
    reports = []
    for path, metric in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        with open(path) as fh:
            reports.append((json.load(fh), metric, path))
    own = args.own.split(",")
    if len(own) != len(reports):
        parser.error("--own needs one model name per report")
    sys.stdout.write(table(reports, own))


if __name__ == "__main__":
    main()
