"""The forgetting trade-off in one table (Markdown) and one PNG, from two `gold score --report`
files of the same models: a task gold set and a broad gold set (scripts/forgetting.sh).

    python scripts/forgetting_report.py task_score.json broad_score.json --md t.md --png t.png
"""

from __future__ import annotations

import argparse
import json
import sys

from gold_report_lib import ci as _ci
from gold_report_lib import group_with
from gold_report_lib import p_value as _p


def table(task: dict, broad: dict, task_path: str, broad_path: str) -> str:
    task_key, task_group = group_with(task, "accuracy", task_path)
    broad_key, broad_group = group_with(broad, "accuracy", broad_path)
    level = f"{task['confidence'] * 100:g}%"
    t_rows = task_group["metrics"]["accuracy"]["models"]
    b_rows = broad_group["metrics"]["accuracy"]["models"]
    unparsed = broad_group["metrics"].get("unparsed_rate", {}).get("models")
    head = (f"| model | task accuracy ({task_key}, n={task_group['records']}) | vs base [{level} CI], p "
            f"| broad accuracy ({broad_key}, n={broad_group['records']}) | vs base [{level} CI], p "
            "| broad unparsed |")
    lines = [head, "| --- | --- | --- | --- | --- | --- |"]
    for i, (t, b) in enumerate(zip(t_rows, b_rows, strict=True)):
        t_diff = "" if i == 0 else (f"{t['diff']:+.2f} {_ci(t.get('diff_ci'), True)}, "
                                    f"p={_p(t.get('p_value'))}")
        b_diff = "" if i == 0 else (f"{b['diff']:+.2f} {_ci(b.get('diff_ci'), True)}, "
                                    f"p={_p(b.get('p_value'))}")
        u = f"{unparsed[i]['value']:.2f}" if unparsed else "n/a"
        lines.append(f"| {t['name']} | {t['value']:.2f} {_ci(t.get('ci'))} | {t_diff} "
                     f"| {b['value']:.2f} {_ci(b.get('ci'))} | {b_diff} | {u} |")
    tests = {task_group["metrics"]["accuracy"]["test"], broad_group["metrics"]["accuracy"]["test"]}
    lines.append("")
    lines.append(f"Intervals: {task['ci_method']}, {task['bootstrap']} resamples, seed "
                 f"{task['seed']}; paired test: {', '.join(sorted(t for t in tests if t))}.")
    majority = broad_group["baselines"].get("majority", {}).get("accuracy")
    if majority is not None:
        lines.append(f"Broad majority baseline (most common answer letter): {majority:.2f}; "
                     "chance on 4 options: 0.25.")
    return "\n".join(lines) + "\n"


def plot(task: dict, broad: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, report, title in ((axes[0], task, "task gold set"), (axes[1], broad, "broad gold set")):
        key, group = group_with(report, "accuracy", "")
        rows = group["metrics"]["accuracy"]["models"]
        values = [r["value"] for r in rows]
        low = [r["value"] - (r.get("ci") or [r["value"]] * 2)[0] for r in rows]
        high = [(r.get("ci") or [r["value"]] * 2)[1] - r["value"] for r in rows]
        colors = ["#888888", "#d95f02", "#1b9e77", "#7570b3"][: len(rows)]
        ax.bar([r["name"] for r in rows], values, yerr=[low, high], capsize=5, color=colors)
        for x, v in enumerate(values):
            ax.text(x, v + 0.02, f"{v:.2f}", ha="center", va="bottom", fontsize=9)
        majority = group["baselines"].get("majority", {}).get("accuracy")
        if majority is not None:
            ax.axhline(majority, color="black", linestyle=":", linewidth=1, label="majority")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{title}: {key} (n={group['records']})")
        ax.set_ylim(0, 1.1)
    axes[0].set_ylabel(f"accuracy ({task['confidence'] * 100:g}% bootstrap CI)")
    fig.suptitle("Task gain against broad loss: base, tuned, tuned with replay")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task_report")
    parser.add_argument("broad_report")
    parser.add_argument("--md", required=True)
    parser.add_argument("--png", required=True)
    args = parser.parse_args()
    task = json.load(open(args.task_report, encoding="utf-8"))
    broad = json.load(open(args.broad_report, encoding="utf-8"))
    if [m["name"] for m in task["models"]] != [m["name"] for m in broad["models"]]:
        sys.exit("the two reports score different models; give both the same predictions order")
    with open(args.md, "w", encoding="utf-8") as fh:
        fh.write(table(task, broad, args.task_report, args.broad_report))
    plot(task, broad, args.png)


if __name__ == "__main__":
    main()
