"""Reading a run: what its loss curves say, in sentences with the evidence and the change to try.

`diagnose(rows, info)` is a pure function over the rows of a run's metrics.jsonl (train rows
`step, loss, lr, grad_norm, tokens, supervised`; eval rows `step, val_loss`) and its run.json
(config, split sizes). It returns findings, worst first:

  lr_too_high     NaN/inf loss or gradient norm; divergence (the end well above the run's lowest
                  loss); or repeated loss spikes / gradient-norm explosions
  overfitting     validation loss above its best for OVERFIT_EVALS evaluations in a row while
                  train loss kept falling: the step where it turned, the best checkpoint
  lr_too_low      train (and validation) loss flat from start to end
  underfitting    train loss still falling steeply over the last quarter, validation with it
  noisy_loss      step-to-step noise of the train loss too high for the supervised tokens a step
                  holds (the loss is a token mean: noise falls as 1/sqrt(tokens))
  eval_too_small  the validation loss's standard error, estimated from that same noise and the
                  number of supervised val tokens, too wide to tell checkpoints apart
  healthy         none of the above

Every threshold is a named constant below, with why it has its value. "Start" and "end" are
medians of the first and last EDGE_FRACTION of logged steps, so one odd step never decides.

numpy only; matplotlib for the PNG (report_plot.py) loads only when a plot is asked for.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sftdata.errors import DataError, json_problem

# ------------------------------------------------------------------------------ thresholds

# Fewer logged train steps than this and trend cannot be told from noise: the report says the
# run is too short to judge rather than guessing (a verdict from 5 points flips with the next 5).
MIN_STEPS = 8
# "Start" and "end" of a run: the median of its first / last 10% of logged steps, at least
# EDGE_MIN of them. A median of several steps, so a single noisy or spiking step decides nothing.
EDGE_FRACTION = 0.1
EDGE_MIN = 3
# lr too low: train loss fell less than 2% from start to end. Fine-tuning at a working lr takes
# 10-50% off the loss within the first hundred steps (docs/sfttrain.md: SmolLM2 8.3 -> 1.0 in 6);
# 2% is within the step-to-step noise of a few thousand supervised tokens.
FLAT_DROP = 0.02
# lr too high (divergence): the end is at least 20% above the lowest (smoothed) loss of the run.
# A healthy run's smoothed loss wanders by a few percent, and overfitting moves validation
# loss, not train loss; a 20% climb of the train loss means the updates are too large.
DIVERGE_RISE = 0.2
# ...and that rise is at least this many standard errors of the end's median, so a very noisy
# run's medians do not read as divergence.
DIVERGE_SIGMAS = 4.0
# ...and either the end is that far above the start too, or the loss after the lowest point
# trends up (a fitted slope at least 3 standard errors above zero). The lowest rolling median of
# a noisy run is an extreme value (an easy stretch of data), so "end well above the lowest"
# alone flags runs that only drew easy batches mid-way (seen: six 20-step SmolLM2 runs at lrs
# 2.3e-5..3e-3 with the same data order, all flagged, ending 8% above their start).
DIVERGE_T = 3.0
# A loss spike: one step at least twice the median of the SPIKE_WINDOW steps before it, and at
# least SPIKE_SIGMAS noise standard deviations above it. Twice the loss is far outside batch to
# batch variation at any batch size; the sigma bar keeps ordinary scatter of a tiny-batch run
# (which noisy_loss reports) from counting as spikes.
SPIKE_RATIO = 2.0
SPIKE_SIGMAS = 6.0
SPIKE_WINDOW = 5
# ...and the jump is material: at least 10% of the run's starting loss. Near zero loss (a task
# learned by heart: the demo goes 9.5 -> 0.003) a batch at 0.09 is "30x the steps before" yet
# 1% of where the run began; relative jumps there say nothing about the lr.
SPIKE_MIN_SHARE = 0.1
# A gradient-norm explosion: the (pre-clipping) norm at least 10x the median of the SPIKE_WINDOW
# steps before it. Norms drift within 2-3x in healthy runs; clipping hides a 10x jump from the
# weights but not its cause (an lr, or data, the model cannot take).
GRAD_RATIO = 10.0
# ...measured against the larger of the steps before and the run's median norm: gradients of a
# converged run shrink 100x, and a batch back at a tenth of the early norms is not an explosion.
# Spikes and explosions (on distinct steps) before they are called a pattern: one can be a bad
# batch; two say the lr is at the edge.
EVENTS_FOR_VERDICT = 2
# Underfitting: over the last quarter of logged steps the train loss fell by at least 5% of its
# level, with a fitted slope at least 3 standard errors below zero. A converged run (cosine decay
# included) falls by ~1% over its last quarter; a linear fit 3 SE below zero is a trend, not
# noise.
UNDERFIT_TAIL = 0.25
UNDERFIT_DROP = 0.05
UNDERFIT_T = 3.0
# Overfitting: validation loss above its best for at least 3 evaluations after it (the
# early_stopping_patience the report then suggests), ending at least 2% above the best and at
# least 2 standard errors of the eval set above it (when that is known): a rise beyond what
# the eval set's own sampling error could make.
OVERFIT_EVALS = 3
OVERFIT_RISE = 0.02
OVERFIT_SIGMAS = 2.0
# Noisy loss: the relative step-to-step standard deviation of the train loss above 10%. Then a
# 10% improvement is invisible from one step to the next, spikes hide in the scatter, and
# Adam's moment estimates follow the noise. The fix is more supervised tokens per step; to
# bring the noise to NOISE_REL takes (noise / NOISE_REL)^2 times as many.
NOISE_REL = 0.10
# ...unless the scatter is immaterial: below 2% of the starting loss in absolute terms. A run
# that learned its task by heart (the demo: 9.5 -> 0.003) scatters by 100% of almost nothing
# (the same gate holds for the eval-set check, whose error is estimated from that scatter).
NOISE_MIN_SHARE = 0.02
# Eval set too small: the validation loss's standard error above 2% of its value. Checkpoints a
# few percent apart are what early stopping and keep_best choose between; a wider error picks
# among them by chance.
EVAL_SE_REL = 0.02

# finding kinds, worst first: the one-line verdict names the first
ORDER = ["lr_too_high", "overfitting", "lr_too_low", "underfitting", "noisy_loss",
         "eval_too_small", "too_short", "healthy"]
WORDS = {"lr_too_high": "learning rate too high", "overfitting": "overfitting",
         "lr_too_low": "learning rate too low", "underfitting": "underfitting",
         "noisy_loss": "too few supervised tokens per step (noisy loss)",
         "eval_too_small": "eval set too small", "too_short": "too short to judge",
         "healthy": "healthy"}

NUMERIC = ("loss", "lr", "grad_norm", "tokens", "supervised", "tokens_per_s", "val_loss",
           "val_ppl")


@dataclass
class Finding:
    kind: str
    short: str  # a few words for the one-line verdict
    sentence: str  # what was seen, with steps and values
    change: str  # what to try
    steps: list[int] = field(default_factory=list)  # the steps the evidence names (plotted)
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    run: str
    findings: list[Finding]
    notes: list[str]
    stats: dict[str, Any]
    train: list[dict] = field(repr=False, default_factory=list)
    val: list[tuple[int, float]] = field(repr=False, default_factory=list)

    @property
    def verdict(self) -> str:
        return self.findings[0].kind

    def line(self) -> str:
        """The one-line verdict `sfttrain run` prints at its end."""
        first, rest = self.findings[0], self.findings[1:]
        also = f"; also {', '.join(WORDS[f.kind] for f in rest)}" if rest else ""
        return (f"sfttrain: verdict: {WORDS[first.kind]} ({first.short}){also}; "
                f"details: sfttrain report {self.run}")

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "verdict": self.verdict, "line": self.line(),
                "findings": [asdict(f) for f in self.findings], "notes": self.notes,
                "stats": self.stats}

    def render(self) -> str:
        lines = [f"{self.run}: {self.stats.get('train_steps', 0)} logged train steps, "
                 f"{self.stats.get('evaluations', 0)} evaluations",
                 f"verdict: {WORDS[self.verdict]}"]
        for f in self.findings:
            lines.append(f"- {WORDS[f.kind]}: {f.sentence}")
            if f.change:
                lines.append(f"  try: {f.change}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------------ reading


def read_run(run_dir: str | Path) -> tuple[list[dict], dict]:
    """metrics.jsonl rows (checked) and run.json ({} when absent). A row with neither `loss`
    nor `val_loss` is some other event and is skipped; a broken one is a DataError naming the
    file and line."""
    run = Path(run_dir)
    path = run / "metrics.jsonl" if run.is_dir() else run
    if not path.is_file():
        raise DataError("no metrics.jsonl: not a run directory, or a run that logged nothing",
                        file=str(path), fix="give the -o directory of `sfttrain run`")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except ValueError as exc:
                raise DataError(json_problem(exc), file=str(path), line=number,
                                fix="repair or delete that line") from None
            if not isinstance(row, dict):
                raise DataError("expected a JSON object per line", file=str(path), line=number,
                                fix="repair or delete that line")
            step = row.get("step")
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise DataError(f"expected a step number >= 0, got {step!r}", file=str(path),
                                line=number, field="step", fix="repair or delete that line")
            for key in NUMERIC:
                value = row.get(key)
                if value is not None and (isinstance(value, bool)
                                          or not isinstance(value, (int, float))):
                    raise DataError(f"expected a number, got {value!r}", file=str(path),
                                    line=number, field=key, fix="repair or delete that line")
            if "loss" in row or "val_loss" in row:
                rows.append(row)
    info: dict = {}
    info_path = path.parent / "run.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError as exc:
            raise DataError(json_problem(exc), file=str(info_path),
                            fix="restore run.json, or move it away to report without it") from None
        if not isinstance(info, dict):
            raise DataError("expected a JSON object", file=str(info_path),
                            fix="restore run.json, or move it away to report without it")
    return rows, info


def report_run(run_dir: str | Path) -> Report:
    rows, info = read_run(run_dir)
    return diagnose(rows, info, name=str(run_dir))


def verdict_line(run_dir: str | Path) -> str:
    return report_run(run_dir).line()


# ------------------------------------------------------------------------------ diagnosis


def diagnose(rows: list[dict], info: dict | None = None, name: str = "run") -> Report:
    info = info or {}
    config = info.get("config") or {}
    train = _dedupe([r for r in rows if r.get("loss") is not None])
    val = [(r["step"], float(r["val_loss"]))
           for r in _dedupe([r for r in rows if r.get("val_loss") is not None])]
    findings: list[Finding] = []
    notes: list[str] = []
    stats: dict[str, Any] = {"train_steps": len(train), "evaluations": len(val)}
    if not train:
        raise DataError("no training steps logged (no row with a `loss`)",
                        file=f"{name}/metrics.jsonl", fix="run some steps first")

    steps = np.array([r["step"] for r in train])
    loss = np.array([float(r["loss"]) for r in train])
    grad = np.array([float(r["grad_norm"]) if r.get("grad_norm") is not None else math.nan
                     for r in train])
    supervised = [r["supervised"] for r in train if r.get("supervised") is not None]
    lrs = [float(r["lr"]) for r in train if r.get("lr") is not None]
    configured = config.get("lr")  # a number, or "auto" (found by a range test at the start)
    peak_lr = max(lrs) if lrs else configured if isinstance(configured, (int, float)) else None
    stats["peak_lr"] = peak_lr
    stats["supervised_per_step"] = float(np.median(supervised)) if supervised else None

    # ---- non-finite values: always a verdict, however short the run
    bad = [r["step"] for r in train if not math.isfinite(r["loss"])
           or (r.get("grad_norm") is not None and not math.isfinite(r["grad_norm"]))]
    bad += [s for s, v in val if not math.isfinite(v)]
    if bad:
        first = min(bad)
        findings.append(Finding(
            "lr_too_high", f"NaN/inf from step {first}",
            f"the loss or gradient norm became NaN/inf at step {first} "
            f"({len(set(bad))} step(s) in all)",
            _lower_lr(peak_lr) + "; check the data of that step too (data_log=true names its "
            "records)", steps=[first], evidence={"nonfinite_steps": sorted(set(bad))}))

    finite = np.isfinite(loss)
    steps_f, loss_f = steps[finite], loss[finite]
    if len(loss_f) < MIN_STEPS:
        if not findings:
            findings.append(Finding(
                "too_short", f"{len(loss_f)} logged steps",
                f"only {len(loss_f)} finite training step(s) logged; at least {MIN_STEPS} are "
                "needed to tell a trend from noise", "run longer (or log_every=1)"))
        return _report(name, findings, notes, stats, train, val)

    edge = max(EDGE_MIN, int(round(len(loss_f) * EDGE_FRACTION)))
    head, tail = float(np.median(loss_f[:edge])), float(np.median(loss_f[-edge:]))
    noise = _relative_noise(loss_f)
    stats.update(start_loss=round(head, 4), end_loss=round(tail, 4),
                 noise_rel=round(noise, 4), edge_steps=edge)

    # ---- lr too high: divergence, spikes, gradient explosions
    if not bad:
        window = max(EDGE_MIN, edge)
        smooth = np.array([np.median(loss_f[max(0, i - window + 1): i + 1])
                           for i in range(len(loss_f))])
        low_at = int(np.argmin(smooth))
        low = float(smooth[low_at])
        need = max(DIVERGE_RISE, DIVERGE_SIGMAS * noise * math.sqrt(math.pi / 2 / edge))
        rising = (tail > head * (1 + need)
                  or _slope_t(steps_f[low_at:], loss_f[low_at:]) >= DIVERGE_T)
        if low > 0 and tail > low * (1 + need) and low_at < len(loss_f) - edge and rising:
            above = np.nonzero(smooth[low_at:] > low * (1 + need))[0]
            turned = int(steps_f[low_at + int(above[0])]) if len(above) else int(steps_f[-1])
            seen = (f"train loss rose from the start ({low:.4g} at step {int(steps_f[0])})"
                    if low_at < edge else
                    f"train loss fell to {low:.4g} around step {int(steps_f[low_at])}, then rose")
            findings.append(Finding(
                "lr_too_high", f"diverged after step {int(steps_f[low_at])}",
                f"{seen}: {tail:.4g} at the end (step {int(steps_f[-1])}), "
                f"{_pct(tail / low - 1)} above its lowest, past +{need:.0%} from step {turned}",
                _lower_lr(peak_lr), steps=[int(steps_f[low_at]), turned],
                evidence={"lowest_step": int(steps_f[low_at]), "lowest_loss": low,
                          "diverged_step": turned, "end_loss": tail}))
            bad = [turned]
    if not bad:
        spikes = _spikes(steps_f, loss_f, noise)
        booms = _explosions(steps, grad)
        events = sorted(set(spikes) | set(booms))
        stats.update(spikes=spikes, grad_explosions=booms)
        if len(events) >= EVENTS_FOR_VERDICT:
            parts = []
            if spikes:
                parts.append(f"{len(spikes)} loss spike(s) (at least {SPIKE_RATIO:g}x the "
                             f"steps before) at step(s) {_list(spikes)}")
            if booms:
                parts.append(f"{len(booms)} gradient-norm explosion(s) (at least "
                             f"{GRAD_RATIO:g}x the steps before) at step(s) {_list(booms)}")
            findings.append(Finding(
                "lr_too_high", f"{len(events)} spikes/explosions", "; ".join(parts),
                _lower_lr(peak_lr) + ", or lengthen warmup (warmup_steps)", steps=events,
                evidence={"spike_steps": spikes, "grad_explosion_steps": booms}))
            bad = events

    # ---- overfitting (needs validation)
    val_f = [(s, v) for s, v in val if math.isfinite(v)]
    val_se = _val_standard_error(noise, stats["supervised_per_step"], info)
    stats["val_se_rel"] = None if val_se is None else round(val_se, 4)
    overfit = False
    if not val_f:
        notes.append("no validation loss logged, so overfitting cannot be seen: give the "
                     "shards a val split (sftdata split) and keep eval_every > 0")
    elif not any(f.kind == "lr_too_high" and "diverged_step" in f.evidence for f in findings):
        overfit = _overfitting(val_f, steps_f, loss_f, edge, val_se, config, findings)
        stats["best_val_step"], stats["best_val_loss"] = min(val_f, key=lambda sv: sv[1])

    # ---- lr too low, underfitting
    if not bad:
        drop = (head - tail) / head if head > 0 else 0.0
        val_drop = ((val_f[0][1] - val_f[-1][1]) / val_f[0][1]
                    if len(val_f) >= 2 and val_f[0][1] > 0 else None)
        # flat means neither way: a loss that rose is not "barely moved"
        if abs(drop) < FLAT_DROP and (val_drop is None or abs(val_drop) < FLAT_DROP):
            seen = f"; validation {val_f[0][1]:.4g} -> {val_f[-1][1]:.4g}" if val_drop is not None else ""
            findings.append(Finding(
                "lr_too_low", f"loss flat at lr {_num(peak_lr)}",
                f"train loss barely moved: {head:.4g} at the start (steps {int(steps_f[0])}-"
                f"{int(steps_f[edge - 1])}) and {tail:.4g} at the end (steps "
                f"{int(steps_f[-edge])}-{int(steps_f[-1])}), {_pct(-drop)}{seen}, at peak lr "
                f"{_num(peak_lr)}",
                _raise_lr(peak_lr), steps=[int(steps_f[0]), int(steps_f[-1])],
                evidence={"start_loss": head, "end_loss": tail, "drop": drop}))
        elif not overfit:
            _underfitting(steps_f, loss_f, val_f, config, findings)

    # ---- noise: supervised tokens per step, and the eval set
    per_step = stats["supervised_per_step"]
    material = noise * tail >= NOISE_MIN_SHARE * head
    if noise > NOISE_REL and material and not any(f.kind == "lr_too_high" for f in findings):
        factor = math.ceil((noise / NOISE_REL) ** 2)
        tokens = f" with a median of {per_step:,.0f} supervised tokens per step" if per_step else ""
        target = f" so each step holds >= {per_step * factor:,.0f} supervised tokens" if per_step else ""
        accum = config.get("grad_accum")
        how = (f"raise grad_accum from {accum} to {accum * factor}" if accum
               else f"raise grad_accum {factor}x")
        findings.append(Finding(
            "noisy_loss", f"{noise:.0%} step-to-step noise",
            f"train loss scatters by {noise:.0%} from step to step{tokens}, so changes smaller "
            f"than that are invisible between steps",
            f"{how} (or micro_batch){target}: noise falls as 1/sqrt(tokens), and "
            f"{factor}x the tokens brings it to about {NOISE_REL:.0%}; keep the lr (the loss is "
            f"a token mean, so the step size does not grow with the batch)",
            evidence={"noise_rel": noise, "supervised_per_step": per_step, "factor": factor}))
    # the eval set's error is estimated from the same noise: immaterial noise, immaterial error
    if val_se is not None and val_f and val_se > EVAL_SE_REL and material and not bad:
        tokens = _val_tokens(info)
        factor = math.ceil((val_se / EVAL_SE_REL) ** 2)
        findings.append(Finding(
            "eval_too_small", f"+/-{val_se:.1%} on validation",
            f"the validation loss is measured on {tokens:,.0f} supervised tokens; with the "
            f"step-to-step noise of training ({noise:.0%} at {per_step:,.0f} tokens a step) it "
            f"estimates the loss on unseen data of this kind only to +/-{val_se:.1%} (one "
            f"standard error). Two checkpoints compared on the same tokens are told apart "
            f"more precisely than that, but which one looks best still depends on which few "
            f"records the val split happens to hold",
            f"a val split about {factor}x larger (>= {tokens * factor:,.0f} supervised tokens; "
            f"sftdata split --ratios), or eval_batches=0 if it is limited",
            evidence={"val_tokens": tokens, "val_se_rel": val_se, "factor": factor}))
    if not findings:
        findings.append(_healthy(steps_f, head, tail, val_f, grad, noise))
    return _report(name, findings, notes, stats, train, val)


def _report(name, findings, notes, stats, train, val) -> Report:
    findings.sort(key=lambda f: ORDER.index(f.kind))
    return Report(name, findings, notes, stats, train, val)


def _dedupe(rows: list[dict]) -> list[dict]:
    """One row per step, the last logged (a resumed run that did not trim), sorted by step."""
    return sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"])


def _relative_noise(loss: np.ndarray) -> float:
    """The standard deviation of one step's loss around the trend, relative to the loss: from
    the relative differences of successive steps, where a slow trend cancels; median absolute
    deviation x 1.4826 (a standard deviation for normal noise, robust to spikes) / sqrt(2) (a
    difference holds two steps' noise)."""
    level = (loss[1:] + loss[:-1]) / 2
    rel = np.diff(loss) / np.where(level > 0, level, np.nan)
    rel = rel[np.isfinite(rel)]
    if len(rel) < 2:
        return 0.0
    mad = float(np.median(np.abs(rel - np.median(rel))))
    return 1.4826 * mad / math.sqrt(2)


def _spikes(steps: np.ndarray, loss: np.ndarray, noise: float) -> list[int]:
    found = []
    start = float(np.median(loss[:EDGE_MIN]))
    for i in range(SPIKE_WINDOW, len(loss)):
        before = float(np.median(loss[i - SPIKE_WINDOW: i]))
        if before > 0 and loss[i] >= before * SPIKE_RATIO and \
                loss[i] >= before * (1 + SPIKE_SIGMAS * noise) and \
                loss[i] - before >= SPIKE_MIN_SHARE * start:
            found.append(int(steps[i]))
    return found


def _explosions(steps: np.ndarray, grad: np.ndarray) -> list[int]:
    found = []
    finite = grad[np.isfinite(grad)]
    typical = float(np.median(finite)) if len(finite) else 0.0
    for i in range(SPIKE_WINDOW, len(grad)):
        before = grad[i - SPIKE_WINDOW: i]
        before = before[np.isfinite(before)]
        if len(before) and np.isfinite(grad[i]) and np.median(before) > 0 and \
                grad[i] >= GRAD_RATIO * max(float(np.median(before)), typical):
            found.append(int(steps[i]))
    return found


def _overfitting(val, steps, loss, edge, val_se, config, findings) -> bool:
    best_step, best = min(val, key=lambda sv: sv[1])
    after = [(s, v) for s, v in val if s > best_step]
    if len(after) < OVERFIT_EVALS or best <= 0:
        return False
    last_step, last = after[-1]
    need = max(OVERFIT_RISE, OVERFIT_SIGMAS * (val_se or 0.0) * math.sqrt(2))
    if last < best * (1 + need):
        return False
    at_best = loss[steps <= best_step][-edge:] if best_step >= steps[0] else loss[:edge]
    train_then, train_end = float(np.median(at_best)), float(np.median(loss[-edge:]))
    if not train_end < train_then:
        return False  # both rising: that is not memorising the train set
    if config.get("full"):
        where = "a full fine-tune saves only the last weights, so rerun to that step"
    elif config.get("keep_best", True):
        where = "adapter/ already holds it (keep_best=true; adapter-last/ has the last step)"
    else:
        where = "set keep_best=true to keep it"
    best_what = "the base model, before any training" if best_step == 0 else f"step {best_step}"
    change = (f"use the best checkpoint, {best_what}: {where}; next time stop there with "
              f"early_stopping_patience={OVERFIT_EVALS}")
    change += (" (training did not help validation at all: lower lr, or check that the val "
               "split is the same task)" if best_step == 0 else
               ", or train fewer epochs or add data"
               + ("" if config.get("full") else ", or raise lora_dropout"))
    findings.append(Finding(
        "overfitting", f"validation lowest at step {best_step}, then rose",
        f"validation loss was lowest at step {best_step} ({best:.4g}) and stayed above it for "
        f"the {len(after)} evaluations after, ending at {last:.4g} at step {last_step} "
        f"({_pct(last / best - 1)}), while train loss kept falling ({train_then:.4g} -> "
        f"{train_end:.4g}); it turned at step {after[0][0]}",
        change, steps=[best_step, after[0][0], last_step],
        evidence={"best_step": best_step, "best_val_loss": best, "turned_step": after[0][0],
                  "last_step": last_step, "last_val_loss": last,
                  "evaluations_after_best": len(after)}))
    return True


def _slope_t(x, y) -> float:
    """The least-squares slope of y over x in standard errors (+inf for an exact rising line)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or x[-1] == x[0]:
        return 0.0
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    se = math.sqrt(float(residual @ residual) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    if se == 0:
        return math.copysign(math.inf, slope) if slope else 0.0
    return float(slope / se)


def _underfitting(steps, loss, val, config, findings) -> None:
    count = max(4, int(math.ceil(len(loss) * UNDERFIT_TAIL)))
    x, y = steps[-count:].astype(float), loss[-count:]
    if x[-1] == x[0]:
        return
    slope = float(np.polyfit(x, y, 1)[0])
    fell = -slope * (x[-1] - x[0])
    level = float(np.median(y))
    t = _slope_t(x, y)
    if level <= 0 or fell / level < UNDERFIT_DROP or t > -UNDERFIT_T:
        return
    if len(val) >= 2 and val[-1][1] > min(v for _, v in val) * (1 + OVERFIT_RISE):
        return  # validation not following: not plain underfitting
    with_val = (f"; validation fell with it ({val[-2][1]:.4g} at step {val[-2][0]} -> "
                f"{val[-1][1]:.4g} at step {val[-1][0]})" if len(val) >= 2 else
                "; no validation loss to confirm it generalises")
    total = int(steps[-1])
    epochs, max_steps = config.get("epochs"), config.get("max_steps")
    longer = (f"max_steps={2 * max_steps}" if max_steps else
              f"epochs={2 * epochs}" if epochs else f"about {2 * total} steps")
    findings.append(Finding(
        "underfitting", f"loss still falling {fell / level:.0%} in the last quarter",
        f"train loss was still falling at the end: {fell:.3g} ({fell / level:.0%}) over the "
        f"last {count} logged steps ({int(x[0])}-{total}), a slope {abs(t):.0f} "
        f"standard errors below zero{with_val}",
        f"train longer ({longer}); the curve has not flattened, so more steps still pay",
        steps=[int(x[0]), total],
        evidence={"tail_from_step": int(x[0]), "tail_drop": float(fell),
                  "tail_drop_rel": float(fell / level), "slope_t": t if math.isfinite(t) else None}))


def _healthy(steps, head, tail, val, grad, noise) -> Finding:
    parts = [f"train loss fell from {head:.4g} to {tail:.4g} ({_pct(tail / head - 1)}) over "
             f"{int(steps[-1])} steps and flattened"]
    if val:
        best_step, best = min(val, key=lambda sv: sv[1])
        parts.append(f"validation {val[0][1]:.4g} -> {val[-1][1]:.4g} (best {best:.4g} at "
                     f"step {best_step})")
    finite = grad[np.isfinite(grad)]
    if len(finite):
        parts.append(f"gradient norm median {np.median(finite):.3g}, no explosions")
    parts.append(f"step-to-step noise {noise:.1%}")
    return Finding("healthy", "no problem seen", "; ".join(parts), "",
                   steps=[int(val[-1][0])] if val else [],
                   evidence={"start_loss": head, "end_loss": tail})


def _val_tokens(info: dict) -> float | None:
    """Supervised tokens one evaluation measures: the val split's, cut to eval_batches x
    micro_batch sequences when eval_batches limits it (run.json; else the shards' manifest)."""
    splits = info.get("splits")
    if not splits and info.get("shards"):
        try:
            splits = json.loads((Path(info["shards"]) / "manifest.json").read_text())["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            splits = None
    val = (splits or {}).get("val") or {}
    tokens, sequences = val.get("supervised_tokens"), val.get("sequences")
    if not tokens or not sequences:
        return None
    config = info.get("config") or {}
    limit = (config.get("eval_batches") or 0) * (config.get("micro_batch") or 1)
    return float(tokens) * (min(limit, sequences) / sequences if limit else 1.0)


def _val_standard_error(noise: float, per_step: float | None, info: dict) -> float | None:
    """Relative standard error of the validation loss: a step's loss over `per_step` supervised
    tokens scatters by `noise`, so a mean over V tokens of the same kind of data scatters by
    noise * sqrt(per_step / V). Sequences, not tokens, are the independent units; taking both
    from the same data keeps the ratio honest."""
    tokens = _val_tokens(info)
    if not tokens or not per_step or noise <= 0:
        return None
    return noise * math.sqrt(per_step / tokens)


def _lower_lr(lr) -> str:
    if not lr:
        return "lower the lr 3-10x"
    return (f"lower the lr 3-10x (from {_num(lr)} to between {_num(lr / 10)} and {_num(lr / 3)}; "
            "`sfttrain lr-find` measures a good one)")


def _raise_lr(lr) -> str:
    if not lr:
        return "raise the lr about 10x"
    return (f"raise the lr about 10x (from {_num(lr)} to {_num(lr * 10)}; `sfttrain lr-find` "
            "measures a good one), then check this report again")


def _num(x) -> str:
    return "?" if x is None else f"{x:.3g}"


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def _list(steps: list[int], most: int = 8) -> str:
    shown = ", ".join(str(s) for s in steps[:most])
    return shown + (f" and {len(steps) - most} more" if len(steps) > most else "")
