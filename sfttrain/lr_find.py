"""Learning-rate range test: a fresh adapter, the lr growing exponentially, a fixed probe's loss.

One optimizer step per lr, each step the run's own effective batch (micro_batch x grad_accum,
token-weighted as in `train.py`), the lr going from `lr_find_min` to `lr_find_max` on a
geometric grid. After every step the same `lr_find_probe` sequences (the val split's first, else
train sequences the test does not train on) are scored without gradients, dropout off: that
probe loss is the curve. A step's own training loss is not: at a small effective batch it varies
more with the records the step drew than with the lr (on SmolLM2 at batch 2, +-0.5 from step to
step), so its minimum marked an easy stretch of data, 45x apart between two tests of the same
model and data. The probe sees the same tokens every step, so it only moves when the weights do.

The probe loss is smoothed by an exponential moving average with bias correction (beta SMOOTH;
the correction removes the EMA's pull towards zero over the first steps). The probe has no data
noise left to average away, only the jitter of the steps' directions, so the EMA is short (mean
age ~2 steps) and lags little. The test stops when the smoothed loss exceeds DIVERGE times its
minimum so far, or is not finite: past that point the adapter is wrecked and the curve says
nothing more.

The suggestion (RULE): the lr at the lowest smoothed probe loss, divided by 10. At the minimum
the lr is already at the edge (the loss has stopped falling: steps overshoot as often as they
help); a decade below it is the largest lr still well inside the falling part of the curve. It
is the rule of Smith's range test as fastai v1 used it; it reads one point, where "the steepest
fall" reads a derivative (reported too, as evidence, never as the suggestion). Checked on
SmolLM2 in docs/sfttrain.md against short real runs at six lrs.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

SMOOTH = 0.7  # EMA beta: mean age of a smoothed value ~2 steps (the probe has no data noise)
DIVERGE = 4.0  # stop when the smoothed loss is this many times its minimum
MIN_STEPS = 20  # fewer points than this cannot show a curve: a small set is seen more than once
RULE = "the lr of the lowest smoothed probe loss / 10"


@dataclass
class LrFind:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # the probe's loss after each step
    smoothed: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)  # each step's own (evidence only)
    probe: str = ""  # which sequences the probe is
    planned: int = 0  # steps the schedule had
    stopped: str = ""  # why it ended
    min_lr: float | None = None  # the lr at the lowest smoothed loss
    min_loss: float | None = None
    steepest_lr: float | None = None  # the lr of the steepest fall of the smoothed loss
    suggestion: float | None = None
    rule: str = RULE
    notes: list[str] = field(default_factory=list)
    effective_batch: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"{len(self.lrs)} of {self.planned} steps, lr {self.lrs[0]:.3g} to "
               f"{self.lrs[-1]:.3g}: {self.stopped}"] if self.lrs else ["no steps ran"]
        if self.min_lr is not None:
            out.append(f"lowest smoothed probe loss {self.min_loss:.4f} at lr {self.min_lr:.3g}; "
                       f"steepest fall at lr {self.steepest_lr:.3g}")
        out.extend(self.notes)
        if self.suggestion is not None:
            out.append(f"suggested lr {self.suggestion:.3g} (rule: {self.rule})")
        return out


def schedule(low: float, high: float, steps: int) -> list[float]:
    """`steps` learning rates on a geometric grid from low to high, both ends included."""
    if steps == 1:
        return [low]
    ratio = math.log(high / low) / (steps - 1)
    return [low * math.exp(ratio * i) for i in range(steps)]


def smooth(losses: list[float], beta: float = SMOOTH) -> list[float]:
    """Exponential moving average with bias correction (Adam's, for the zero start)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


class Tracker:
    """Collects (lr, loss) per step, says when to stop, and reads the curve at the end."""

    def __init__(self, planned: int, beta: float = SMOOTH, diverge: float = DIVERGE):
        self.result = LrFind(planned=planned)
        self.beta, self.diverge = beta, diverge
        self._avg = 0.0

    def add(self, lr: float, loss: float, train_loss: float | None = None) -> bool:
        """Record one step (`loss`: the probe's, which is scored); True when the test should stop
        here."""
        r = self.result
        step = len(r.lrs) + 1
        r.lrs.append(lr)
        r.losses.append(loss)
        if train_loss is not None:
            r.train_losses.append(train_loss)
        if not math.isfinite(loss):
            r.smoothed.append(math.inf)
            r.stopped = f"stopped at step {step} (lr {lr:.3g}): the loss is {loss}"
            return True
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        value = self._avg / (1 - self.beta**step)
        r.smoothed.append(value)
        best = min(r.smoothed)
        if value > self.diverge * best:
            r.stopped = (f"stopped at step {step} (lr {lr:.3g}): smoothed probe loss {value:.4f} > "
                         f"{self.diverge:g} x its minimum {best:.4f} (diverged)")
            return True
        return False

    def finish(self) -> LrFind:
        r = self.result
        if not r.stopped:
            r.stopped = "reached lr_find_max without diverging"
        finite = [(s, i) for i, s in enumerate(r.smoothed) if math.isfinite(s)]
        if not finite:
            r.notes.append("no finite loss: lower lr_find_min, or check the data and model")
            return r
        r.min_loss, best = min(finite)
        r.min_lr = r.lrs[best]
        r.steepest_lr = r.lrs[_steepest(r.lrs[: best + 1], r.smoothed[: best + 1])]
        if best == 0:
            r.notes.append("the smoothed loss never fell below its first value: no suggestion; "
                           "lower lr_find_min, or check that the data has supervised tokens")
            return r
        if r.stopped.startswith("reached"):
            r.notes.append(f"the loss had not diverged by lr {r.lrs[-1]:.3g}: raise "
                           "lr_find_max to see the whole curve (the suggestion may be low)")
        r.suggestion = max(r.min_lr / 10, r.lrs[0])
        return r


def _steepest(lrs: list[float], smoothed: list[float]) -> int:
    """Index of the most negative slope of smoothed loss against log(lr) (central differences)."""
    if len(lrs) < 3:
        return 0
    logs = [math.log(x) for x in lrs]
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1])
              for i in range(1, len(lrs) - 1)]
    return 1 + min(range(len(slopes)), key=slopes.__getitem__)


def planned_steps(config, steps_per_epoch: int) -> tuple[int, str | None]:
    """lr_find_steps, or one epoch when the data is smaller (at least MIN_STEPS); a note when a
    record is seen twice."""
    steps = min(config.lr_find_steps, max(steps_per_epoch, MIN_STEPS))
    note = None
    if steps > steps_per_epoch:
        note = (f"one epoch is only {steps_per_epoch} step(s): the range test's {steps} steps "
                "see records more than once, which lowers the loss it measures")
    return steps, note


def choose_probe(val_sequences: int, train_order, trained: int, size: int
                 ) -> tuple[str, list[int], str | None]:
    """(split, sequence indices, note) of the probe. The val split's first `size` sequences when
    there is one: held out, like the loss the run is judged by. Else the last `size` of the first
    epoch's train order, which a test that trains on `trained` sequences reaches last; a note
    when it trains on them too (the probe then also measures memorisation)."""
    if val_sequences > 0:
        return "val", list(range(min(size, val_sequences))), None
    n = len(train_order)
    size = min(size, n)
    note = None
    if trained > n - size:
        note = (f"no val split: the probe is {size} train sequences, and the test trains on "
                f"{min(trained - (n - size), size)} of them too; add a val split for a clean "
                "probe")
    return "train", [int(i) for i in train_order[n - size:]], note


@dataclass
class Probe:
    batches: list  # this rank's micro-batches of the probe sequences
    description: str
    note: str | None = None


def make_probe(shard_dir, train, config, pad_id: int, rank: int = 0, world: int = 1) -> Probe:
    """The fixed sequences every step is scored on, collated in micro-batches of `micro_batch`
    (a forward without gradients never needs more memory than a training step)."""
    from sftdata.errors import DataError
    from sftdata.shards import ShardReader

    from .data import collate

    splits = train.reader.manifest["splits"]
    steps, _ = planned_steps(config, train.batches_per_epoch // config.grad_accum)
    trained = steps * config.grad_accum * train.global_batch
    split, indices, note = choose_probe(int((splits.get("val") or {}).get("sequences") or 0),
                                        train.order(0), trained, config.lr_find_probe)
    reader = train.reader if split == "train" else ShardReader(shard_dir, split)
    step = config.micro_batch
    chunks = [indices[i : i + step] for i in range(0, len(indices), step)]
    batches = [collate([reader[i] for i in chunk], pad_id, train.cross_doc)
               for chunk in chunks]
    tokens = sum(b.supervised for b in batches)
    where = "the first" if split == "val" else "the last in the data order"
    if tokens == 0:
        raise DataError(f"the range test's probe ({where} {len(indices)} {split} sequences) has "
                        "no supervised tokens", file=f"{shard_dir}/manifest.json",
                        fix="check the data's labels, or raise lr_find_probe")
    description = f"{where} {len(indices)} {split} sequence(s), {tokens:,} supervised tokens"
    return Probe(batches[rank::world], description, note)


def probe_loss(loss_fn, probe: Probe, device, autocast, world: int = 1) -> float:
    """Token-weighted loss of the probe (all ranks together), no gradients, dropout off; the
    module is left in training mode."""
    import torch

    from .train import _all_reduce

    loss_fn.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for batch in probe.batches:
            with autocast:
                part, count = loss_fn(batch.to(device))
            totals += torch.tensor([float(part), float(count)], dtype=torch.float64)
    loss_fn.train()
    _all_reduce(totals, world)
    return float(totals[0] / totals[1]) if totals[1] > 0 else math.nan


# ---------------------------------------------------------------------------- the test


def range_test(model, loss_fn, train, probe: Probe, config, device, autocast, world: int = 1,
               say=None) -> LrFind:
    """Run the test on a prepared model; the caller restores the adapter (`snapshot`)."""
    import torch

    from .train import _all_reduce, _make_optimizer, divmod_epoch, forward_backward

    steps, note = planned_steps(config, train.batches_per_epoch // config.grad_accum)
    lrs = schedule(config.lr_find_min, config.lr_find_max, steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(trainable, replace(config, lr=lrs[0]))
    tracker = Tracker(steps)
    r = tracker.result
    r.effective_batch = config.micro_batch * config.grad_accum * world
    r.probe = probe.description
    r.notes.extend(n for n in (note, probe.note) if n)
    if say:
        say(f"sfttrain lr-find: {steps} steps, lr {lrs[0]:.3g} to {lrs[-1]:.3g} (x"
            f"{lrs[1] / lrs[0]:.3f} a step), effective batch {r.effective_batch}; each step "
            f"scored on the probe: {probe.description}")
    model.train()
    last_line = time.perf_counter()
    for i, lr in enumerate(lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = [train.batch(*divmod_epoch(i * config.grad_accum + j, train.batches_per_epoch))
                   for j in range(config.grad_accum)]
        counts = torch.tensor([sum(b.supervised for b in batches)], dtype=torch.float64)
        _all_reduce(counts, world)
        supervised = max(int(counts[0]), 1)
        loss_sum = forward_backward(loss_fn, batches, supervised, world, device, autocast)
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm or math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        # the curve is the probe's loss after the step, not the step's own: see the docstring
        score = probe_loss(loss_fn, probe, device, autocast, world)
        stop = tracker.add(lr, score, float(loss_sum) / supervised)
        if say and time.perf_counter() - last_line >= config.progress_seconds:
            last_line = time.perf_counter()
            say(f"sfttrain lr-find: step {i + 1}/{steps} lr {lr:.3g} probe loss {score:.4f} "
                f"smoothed {r.smoothed[-1]:.4f} (the step's own {r.train_losses[-1]:.4f})")
        if stop:
            break
    del optimizer
    return tracker.finish()


class snapshot:
    """Trainable weights (on the CPU) and RNG states, put back on exit: the range test leaves
    the run as if it had never happened (the same adapter init, the same dropout draws)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        from .train import _rng_state

        self.weights = {n: p.detach().to("cpu", copy=True)
                        for n, p in self.model.named_parameters() if p.requires_grad}
        self.rng = _rng_state()
        return self

    def __exit__(self, *exc):
        import gc

        import torch

        from .train import _set_rng_state

        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self.weights.items():
                params[name].copy_(value.to(params[name].device))
                params[name].grad = None
        _set_rng_state(self.rng)
        self.weights = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return False


def find(shard_dir, model_path, config, say=print, warn=print) -> LrFind:
    """`sfttrain lr-find`: load the model as `run` would, test, write nothing."""
    from sftdata.errors import DataError
    from sftdata.shards import ShardReader, read_manifest, verify_checksums

    from . import model as M
    from . import quant as Q
    from . import train as T
    from .data import PackedBatches

    M.quiet_warnings()
    T._seed_everything(config.seed)
    manifest = read_manifest(shard_dir)
    verify_checksums(shard_dir)
    model_dir = M.resolve_model_dir(model_path)
    M.check_tokenizer(manifest, M.load_tokenizer(model_dir), str(shard_dir), str(model_path))
    device = M.pick_device(config)
    dtype = M.pick_dtype(config, device)
    attn = M.pick_attn(config, device)
    pad_id = int(manifest.get("pad_id") or 0)
    longest = int(max(ShardReader(shard_dir, "train").lengths(), default=0))
    quant, why = Q.resolve_quant(config, T._model_shape(model_dir), longest, device, dtype)
    config = replace(config, quant=quant)
    say(f"sfttrain lr-find: {why}")
    train = PackedBatches(shard_dir, "train", config.micro_batch, pad_id, config.seed)
    if train.batches_per_epoch < config.grad_accum:
        raise DataError(
            f"{len(train.reader)} train sequences make {train.batches_per_epoch} micro-batches "
            f"of {config.micro_batch}, fewer than grad_accum={config.grad_accum}",
            file=f"{shard_dir}/manifest.json", fix="lower micro_batch or grad_accum")
    model = M.prepare_for_training(M.load_base(model_dir, quant, dtype, device, attn), config)
    loss_fn = M.PackedLoss(model, attn, config.loss_chunk)
    probe = make_probe(shard_dir, train, config, pad_id)
    return range_test(model, loss_fn, train, probe, config, device, T._autocast(device, dtype),
                      say=say)


def plot(result: LrFind, path: str | Path) -> None:
    """Two panels on one lr axis: the probe's loss (scored; its y range set by its fall, so a
    fall of a few hundredths shows) above, the steps' own training loss (the noise it replaces)
    below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    finite = [(lr, s) for lr, s in zip(result.lrs, result.smoothed, strict=True)
              if math.isfinite(s)]
    top.plot(result.lrs, result.losses, color="C0", linewidth=0.8, alpha=0.4,
             label="probe loss after the step")
    if finite:
        top.plot(*zip(*finite, strict=True), color="C0", label="smoothed (scored)")
        first, low = finite[0][1], min(s for _, s in finite)
        fall = max(first - low, 0.01 * low)
        top.set_ylim(low - 0.5 * fall, first + 2 * fall)  # the divergence runs off the top
    for ax in (top, bottom):
        if result.min_lr is not None:
            ax.axvline(result.min_lr, color="C3", linestyle=":",
                       label=f"lowest {result.min_lr:.2g}")
        if result.suggestion is not None:
            ax.axvline(result.suggestion, color="C2", linestyle="--",
                       label=f"suggested {result.suggestion:.2g}")
    top.set_ylabel("probe loss")
    top.set_title(f"lr range test; suggestion = {result.rule}", fontsize=9)
    top.legend(fontsize=8)
    bottom.plot(result.lrs[: len(result.train_losses)], result.train_losses, color="0.5",
                linewidth=0.8)
    bottom.set_ylabel("the step's own\ntraining loss", fontsize=9)
    bottom.set_xscale("log")
    bottom.set_xlabel("learning rate")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")  # the path may be a temporary without .png
    plt.close(fig)
