"""The report's PNG: train and validation loss, lr and gradient norm over steps, one panel
each, with the steps each finding names marked (dashed lines, the finding in the legend)."""

from __future__ import annotations

import math
from pathlib import Path

from .report import EDGE_FRACTION, EDGE_MIN, WORDS, Report

COLORS = {"lr_too_high": "tab:red", "overfitting": "tab:purple", "lr_too_low": "tab:brown",
          "underfitting": "tab:olive", "noisy_loss": "tab:gray", "eval_too_small": "tab:pink",
          "healthy": "tab:green", "too_short": "tab:gray"}
# a panel spanning more than this ratio between its largest and smallest positive value is drawn
# on a log scale: a diverged loss or an exploding gradient norm flattens the rest otherwise
LOG_SPAN = 30.0


def plot_report(report: Report, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = report.train
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.2, 1.2]})
    loss_ax, lr_ax, grad_ax = axes
    steps = [r["step"] for r in train]
    losses = [r["loss"] for r in train]
    loss_ax.plot(steps, losses, lw=1, color="tab:blue", alpha=0.6, label="train")
    window = max(EDGE_MIN, round(len(losses) * EDGE_FRACTION))
    if len(losses) > window:  # the trend under the noise: the medians the report compares
        smooth = [_median(losses[max(0, i - window + 1): i + 1]) for i in range(len(losses))]
        loss_ax.plot(steps, smooth, lw=2, color="tab:blue",
                     label=f"train, median of {window} steps")
    bad = [(s, x) for s, x in zip(steps, losses, strict=True) if not math.isfinite(x)]
    if report.val:
        loss_ax.plot(*zip(*report.val, strict=True), marker="o", ms=4, color="tab:orange",
                     label="validation")
    finite = [x for x in losses if math.isfinite(x)] + [v for _, v in report.val
                                                          if math.isfinite(v)]
    if bad and finite:  # NaN/inf cannot be drawn: crosses at the top of the panel instead
        loss_ax.plot([s for s, _ in bad], [max(finite)] * len(bad), "x", color="tab:red",
                     label="NaN/inf")
    _scale(loss_ax, finite)
    loss_ax.set_ylabel("loss")
    _series(lr_ax, train, "lr", "tab:green")
    lr_ax.set_ylabel("lr")
    _series(grad_ax, train, "grad_norm", "tab:gray")
    grad_ax.set_ylabel("grad norm\n(before clipping)")
    grad_ax.set_xlabel("optimizer step")
    for finding in report.findings:
        if not finding.steps:
            continue
        color = COLORS.get(finding.kind, "black")
        for i, step in enumerate(finding.steps):
            for ax in axes:
                ax.axvline(step, color=color, ls="--", lw=1, alpha=0.8,
                           label=f"{WORDS[finding.kind]}: step(s) {_steps(finding.steps)}"
                           if ax is loss_ax and i == 0 else None)
    loss_ax.legend(fontsize=8, loc="best")
    loss_ax.set_title(f"{report.run}: {WORDS[report.verdict]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def _series(ax, train: list[dict], key: str, color: str) -> None:
    points = [(r["step"], r[key]) for r in train
              if r.get(key) is not None and math.isfinite(r[key])]
    if points:
        ax.plot(*zip(*points, strict=True), lw=1, color=color)
        _scale(ax, [v for _, v in points])
    else:
        ax.text(0.5, 0.5, f"no {key} logged", ha="center", va="center", transform=ax.transAxes)


def _scale(ax, values: list[float]) -> None:
    positive = [v for v in values if v > 0]
    if positive and len(positive) == len(values) and max(positive) / min(positive) > LOG_SPAN:
        ax.set_yscale("log")


def _median(values: list[float]) -> float:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return math.nan
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2


def _steps(steps: list[int]) -> str:
    return ", ".join(str(s) for s in steps[:6]) + (" ..." if len(steps) > 6 else "")
