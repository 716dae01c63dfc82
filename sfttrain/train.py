"""The training loop, top to bottom: setup, train, save, resume.

Loss is token-weighted: every optimizer step divides the summed cross-entropy of all its
micro-batches (on all ranks) by their total number of supervised tokens, so micro-batch size,
gradient accumulation and the number of GPUs do not change what is optimised.

MFU = (6 * N + 12 * L * d * ctx) * tokens_per_s / peak_flops, where N is the base model's
parameter count, L layers, d hidden size and ctx the mean attended context per token of the
packed documents (attention FLOPs, forward and backward). The 6 * N term follows the PaLM
convention even for LoRA, whose frozen weights need no weight gradients, so it is comparable
with other trainers' MFU.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sftdata.errors import DataError, UsageProblem
from sftdata.shards import ShardReader, read_manifest, verify_checksums

from . import loggers as L
from . import lr_find
from . import model as M
from . import oom as O
from . import plan as P
from . import quant as Q
from .config import TrainConfig, to_dict
from .data import PackedBatches, eval_batches

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0,
               "L4": 121.0, "4090": 165.0, "3090": 71.0, "V100": 125.0, "T4": 65.0}


@dataclass
class RunResult:
    out_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)  # train loss per optimizer step (1..steps)
    val: list[tuple[int, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    stopped: str = ""  # "", "early_stopping", "stop_at_step"
    oom: list[dict] = field(default_factory=list)  # out-of-memory levers applied in this run


def run(
    shard_dir: str | Path,
    model_path: str | Path,
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    say=print,
    warn=print,
    progress=None,
) -> RunResult:
    # ------------------------------------------------------------------ setup
    M.quiet_warnings()
    rank, world, local_rank = _init_distributed(config)
    is_main = rank == 0
    out = Path(out_dir)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    _seed_everything(config.seed)
    import peft  # noqa: F401 - imported before the baseline so RSS growth is the model's
    import transformers  # noqa: F401

    rss_before = _peak_rss()

    manifest = read_manifest(shard_dir)
    verify_checksums(shard_dir)  # a flipped bit trains silently otherwise
    model_dir = M.resolve_model_dir(model_path)
    tokenizer = M.load_tokenizer(model_dir)
    M.check_tokenizer(manifest, tokenizer, str(shard_dir), str(model_path))

    device = M.pick_device(config, local_rank)
    dtype = M.pick_dtype(config, device)
    attn = M.pick_attn(config, device)
    pad_id = int(manifest.get("pad_id") or 0)
    shape = _model_shape(model_dir)
    if is_main and not resume:  # starting over: old checkpoints must not be resumed later
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if is_main:
        _sweep_partial_saves(out)
    ckpt = _latest_checkpoint(out) if resume else None
    # the longest packed train sequence: what plan-based decisions size activations by
    longest = int(max(ShardReader(shard_dir, "train").lengths(), default=0))
    config, why = _resolve_quant(config, out, ckpt, longest, shape, device, dtype)
    # lr=auto's lr and the out-of-memory levers of the run being resumed (run.json's record)
    config, record, kept = _resume_decisions(config, out, ckpt)
    if ckpt is not None:
        _check_resumable(out, manifest, model_path, config)
    if is_main:
        say(f"sfttrain: {why}")
        for line in kept:
            say(f"sfttrain: {line}")
    probe = None
    if config.quant == "nf4" and config.quant_check and ckpt is None and is_main:
        # the unquantized half, before the 4-bit model is loaded: the two never share memory
        probe = Q.DamageProbe(shard_dir, "val" if _has_split(manifest, "val") else "train",
                              pad_id, model_dir, config, dtype, device, attn,
                              _autocast(device, dtype))
    base = M.load_base(model_dir, config.quant, dtype, device, attn)
    model = M.prepare_for_training(base, config)
    if is_main and (message := M.eos_mismatch(manifest, model, tokenizer)):
        warn(message)
    loss_fn: torch.nn.Module = M.PackedLoss(model, attn, config.loss_chunk)
    check = None
    if probe is not None:
        check, message = probe.finish(loss_fn, shape, longest)
        say(check.line())
        if message:
            warn(message)
    oom_hook = O.TestHook.install(model)  # SFTTRAIN_TEST_OOM_AT_STEP (tests only)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        loss_fn = DistributedDataParallel(
            loss_fn, device_ids=[local_rank] if device.type == "cuda" else None
        )

    train = PackedBatches(shard_dir, "train", config.micro_batch, pad_id, config.seed, rank, world)
    if train.batches_per_epoch < config.grad_accum:
        raise DataError(
            f"{len(train.reader)} train sequences make {train.batches_per_epoch} micro-batches "
            f"of {config.micro_batch} x {world} rank(s), fewer than grad_accum={config.grad_accum}",
            file=f"{shard_dir}/manifest.json",
            fix="lower micro_batch or grad_accum, or pack more data",
        )
    has_val = _has_split(manifest, "val") and config.eval_every > 0
    steps_per_epoch = train.batches_per_epoch // config.grad_accum
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    effective = config.micro_batch * config.grad_accum * world
    if config.lr == "auto":  # a range test on this very adapter, which is then put back
        probe = lr_find.make_probe(shard_dir, train, config, pad_id, rank, world)
        config, record["lr_find"] = _auto_lr(model, loss_fn, train, probe, config, device,
                                             _autocast(device, dtype), world,
                                             say if is_main else None)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(trainable, config)
    scheduler = _make_scheduler(optimizer, config, total_steps)
    n_trainable, _ = M.count_params(model)
    if is_main:
        say(
            f"sfttrain: {total_steps} steps, effective batch {effective} sequences "
            f"(micro_batch {config.micro_batch} x grad_accum {config.grad_accum} x {world} "
            f"rank(s)), {n_trainable:,} trainable parameters, {device.type} {str(dtype)[6:]}, "
            f"attention {attn}, quant {config.quant}{' full' if config.full else ''}"
        )
        if train.dropped_per_epoch:
            warn(f"{train.dropped_per_epoch} train sequence(s) per epoch do not fill a global "
                 f"batch of {train.global_batch} and are skipped in that epoch")

    # state that a checkpoint carries besides weights and optimizer
    state = {"step": 0, "micro": 0, "best_val": math.inf, "best_step": None, "bad_evals": 0,
             "tokens": 0}
    keep_best = config.keep_best and not config.full
    if ckpt is not None:
        _load_checkpoint(ckpt, model, optimizer, scheduler, state)
        if is_main:
            say(f"sfttrain: resumed from {ckpt} at step {state['step']}")
    if is_main:
        _write_run_info(out, shard_dir, model_path, model_dir, manifest, config, record)
        _trim_metrics(out / "metrics.jsonl", state["step"])
        L.start(out, config, state["step"])  # report_to: copies of each metrics row

    # ------------------------------------------------------------------ train
    result = RunResult(out_dir=out, steps=state["step"])
    start_step = state["step"]
    tokens_this_run = 0
    eval_seconds = 0.0  # validation time, kept out of tokens/s
    autocast = _autocast(device, dtype)
    if has_val and config.eval_baseline and state["step"] == 0:  # the untrained model's loss
        val_loss = evaluate(loss_fn, shard_dir, config, pad_id, rank, world, device, autocast)
        result.val.append((0, val_loss))
        state["best_val"], state["best_step"] = val_loss, 0
        if is_main and keep_best:
            _save_best(out, model)
        if is_main:
            _append_metric(out, {"step": 0, "val_loss": round(val_loss, 6),
                                 "val_ppl": round(math.exp(min(val_loss, 50)), 4)})
    steps = range(start_step, total_steps)
    bar = progress(steps, total_steps - start_step, "train") if progress and is_main else steps
    lines = is_main and not hasattr(bar, "set_postfix")  # a log, not a terminal: progress lines
    last_line = -math.inf
    started = time.perf_counter()  # after the baseline: ETA and tokens/s are about training
    model.train()
    act_bytes = Q.DTYPE_BYTES.get(dtype, 4)
    said: set[str] = set()  # levers this device cannot use, said once
    for _ in bar:
        rng = _rng_state()  # a step redone after out-of-memory draws the same dropout masks
        while True:
            batches = [train.batch(*divmod_epoch(state["micro"] + i, train.batches_per_epoch))
                       for i in range(config.grad_accum)]
            counts = torch.tensor([sum(b.supervised for b in batches),
                                   sum(b.tokens for b in batches)], dtype=torch.float64)
            _all_reduce(counts, world)
            supervised, tokens = max(int(counts[0]), 1), int(counts[1])
            if oom_hook:
                oom_hook.arm(state["step"] + 1, len(batches))
            try:
                loss_sum = forward_backward(loss_fn, batches, supervised, world, device, autocast)
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable,
                                                           config.max_grad_norm or math.inf)
                lr = scheduler.get_last_lr()[0]  # the rate this step used (logged, not the next)
                optimizer.step()
                break
            except torch.OutOfMemoryError as exc:
                error = (str(exc).splitlines() or ["out of memory"])[0]
            # out of the handler, the failed step's tensors are unreachable: free, change, redo
            config, optimizer, scheduler, train, lever = _survive_oom(
                error, state, config, model, loss_fn, optimizer, scheduler, train, trainable,
                shard_dir=shard_dir, pad_id=pad_id, rank=rank, world=world, device=device,
                act_bytes=act_bytes, attn=attn, shape=shape, longest=longest,
                total_steps=total_steps, applied=record["oom_levers"], said=said, say=say)
            _set_rng_state(rng)
            result.oom.append(lever)
            if is_main:
                say(f"sfttrain: out of memory at step {lever['step']}: {lever['lever']} (plan: "
                    f"saves {lever['saves_bytes'] / 2**30:.2f} GiB, {lever['speed']}); effective "
                    f"batch still {config.micro_batch * config.grad_accum * world}; redoing step "
                    f"{lever['step']} from the same records")
                _write_run_info(out, shard_dir, model_path, model_dir, manifest, config, record)
                _append_metric(out, {"step": lever["step"], "oom_lever": lever["lever"],
                                     "changes": lever["changes"]})
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if config.data_log:  # lineage: which records each rank trained on at each step
            # (after the all-reduce: rank 0 has set up the run directory by then)
            ids = [rid for b in batches for row in b.record_ids for rid in row]
            with open(out / f"data-rank{rank}.jsonl", "a") as fh:
                fh.write(json.dumps({"step": state["step"] + 1, "record_ids": ids}) + "\n")
        state["step"] += 1
        state["micro"] += config.grad_accum
        state["tokens"] += tokens
        tokens_this_run += tokens
        step = state["step"]
        loss = float(loss_sum) / supervised
        result.losses.append(loss)
        tps = tokens_this_run / max(time.perf_counter() - started - eval_seconds, 1e-9)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:,.0f}")
        now = time.perf_counter()
        if lines and (now - last_line >= config.progress_seconds or step == total_steps
                      or step == start_step + 1):
            last_line = now
            say(_progress_line(step, total_steps, loss, lr, tps,
                               (now - started) / (step - start_step) * (total_steps - step)))
        if is_main and (step % config.log_every == 0 or step == total_steps):
            _append_metric(out, {"step": step, "loss": round(loss, 6),
                                 "lr": lr, "grad_norm": float(grad_norm),
                                 "tokens": tokens, "supervised": supervised,
                                 "tokens_per_s": round(tps, 1)})

        if has_val and (step % config.eval_every == 0 or step == total_steps):
            eval_started = time.perf_counter()
            val_loss = evaluate(loss_fn, shard_dir, config, pad_id, rank, world, device, autocast)
            eval_seconds += time.perf_counter() - eval_started
            result.val.append((step, val_loss))
            if is_main:
                _append_metric(out, {"step": step, "val_loss": round(val_loss, 6),
                                     "val_ppl": round(math.exp(min(val_loss, 50)), 4)})
            if val_loss < state["best_val"] - config.early_stopping_min_delta:
                state["best_val"], state["best_step"], state["bad_evals"] = val_loss, step, 0
                if is_main and keep_best:
                    _save_best(out, model)
            else:
                state["bad_evals"] += 1
            model.train()
        if step % config.save_every == 0 and step < total_steps:
            _save_checkpoint(out, model, optimizer, scheduler, state, config, is_main, world)
        if config.early_stopping_patience and state["bad_evals"] >= config.early_stopping_patience:
            result.stopped = "early_stopping"
            if is_main:
                say(f"sfttrain: early stopping at step {step}: validation loss did not improve "
                    f"for {state['bad_evals']} evaluation(s) (best {state['best_val']:.4f})")
            break
        if config.stop_at_step and step >= config.stop_at_step:
            result.stopped = "stop_at_step"
            break
    result.steps = state["step"]
    elapsed = time.perf_counter() - started

    # ------------------------------------------------------------------ save
    if is_main and result.stopped != "stop_at_step":
        best = state["best_step"] if keep_best and has_val else None
        _save_final(out, model, tokenizer, config, best_step=best, last_step=state["step"])
        if best is not None and best != state["step"]:
            say(f"sfttrain: adapter/ holds step {best} (best validation loss "
                f"{state['best_val']:.4f}); the last step's weights are in adapter-last/")
            if best == 0:
                warn("validation loss never improved on the base model: adapter/ is the "
                     "untrained (no-op) adapter; lower lr or check the data")
        _plot_losses(out)
    summary = _summary(config, shape, tokens_this_run, elapsed - eval_seconds, device, rss_before,
                       train, world, state, result)
    summary["eval_seconds"] = round(eval_seconds, 3)
    summary["lr"] = config.lr
    summary["oom_levers"] = record["oom_levers"]
    if check is not None:
        summary["quant_check"] = check.as_dict()
    result.summary = summary
    if is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        say(_summary_line(summary))
        L.finish(out)
        if result.steps:  # what the curves say, in one line (`sfttrain report` for the rest)
            from .report import verdict_line

            say(verdict_line(out))
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


def forward_backward(loss_fn, batches, supervised: int, world: int, device, autocast) -> torch.Tensor:
    """Gradients of one optimizer step (its micro-batches, token-weighted by the step's global
    supervised count); returns the step's summed loss over all ranks."""
    loss_sum = torch.zeros((), dtype=torch.float64)
    for i, batch in enumerate(batches):
        batch = batch.to(device)
        sync = world == 1 or i == len(batches) - 1
        with (_null_context() if sync else loss_fn.no_sync()), autocast:
            part, _ = loss_fn(batch)
            # DDP averages gradients over ranks; multiply by world to keep the token weighting.
            (part * world / supervised).backward()
        loss_sum += part.detach().double().cpu()
    _all_reduce(loss_sum, world)
    return loss_sum


def _auto_lr(model, loss_fn, train, probe, config, device, autocast, world, say):
    """lr=auto: the range test's suggestion, and what run.json records of the test."""
    from sftdata.errors import CheckFailed

    with lr_find.snapshot(model):
        try:
            found = lr_find.range_test(model, loss_fn, train, probe, config, device, autocast,
                                       world, say=say)
        except torch.OutOfMemoryError:
            found = None  # raised below, out of the handler (its tensors then freed)
    if found is None:
        raise O.OutOfMemory("out of memory in the lr=auto range test. Fix: give lr= "
                            "explicitly, or lower micro_batch (plan's levers apply to training)")
    for line in found.lines() if say else ():
        say(f"sfttrain: lr=auto: {line}")
    if found.suggestion is None:
        raise CheckFailed(f"lr=auto found no learning rate ({'; '.join(found.notes)}). Fix: "
                          "look at the curve with `sfttrain lr-find SHARDS --model M --plot "
                          "lr.png` and give lr= explicitly")
    keep = ("suggestion", "rule", "min_lr", "min_loss", "steepest_lr", "stopped", "planned",
            "effective_batch", "probe")
    info = {k: v for k, v in found.as_dict().items() if k in keep}
    info["steps"] = len(found.lrs)
    return replace(config, lr=found.suggestion), info


def _resume_decisions(config, out: Path, ckpt):
    """What a resumed run keeps from its start: the lr that lr=auto found and the levers applied
    on out-of-memory. Returns the config, run.json's record of both, and lines to say."""
    record: dict[str, Any] = {"lr_find": None, "oom_levers": []}
    try:
        before = json.loads((out / "run.json").read_text()) if ckpt is not None else {}
    except (OSError, json.JSONDecodeError):
        before = {}
    record["lr_find"] = before.get("lr_find")
    record["oom_levers"] = list(before.get("oom_levers") or [])
    kept = []
    recorded = (before.get("config") or {}).get("lr")
    if config.lr == "auto" and isinstance(recorded, (int, float)) and record["lr_find"]:
        config = replace(config, lr=float(recorded))
        kept.append(f"lr=auto: {recorded:.3g}, as the run being resumed found it")
    for lever in record["oom_levers"]:  # each applies where the config is as it was then
        if all(getattr(config, k) == v for k, v in lever["before"].items()):
            config = replace(config, **lever["changes"])
            kept.append(f"keeping '{lever['lever']}' (out of memory at step {lever['step']})")
    return config, record, kept


def _survive_oom(error, state, config, model, loss_fn, optimizer, scheduler, train, trainable, *,
                 shard_dir, pad_id, rank, world, device, act_bytes, attn, shape, longest,
                 total_steps, applied, said, say):
    """Free the failed step's memory and apply plan's next lever; returns the new config,
    optimizer, scheduler, batches and the lever's record. Raises OutOfMemory when none is left
    (or with several ranks: every rank would have to change together)."""
    step = state["step"] + 1
    O.free(optimizer, device)
    if world > 1:
        raise O.OutOfMemory(f"out of memory at step {step} ({error}) on rank {rank}; levers are "
                            f"applied in single-process runs only. Fix: "
                            f"{P.advice(config, longest)}")
    lever = O.choose(P.levers(shape, config, longest, act_bytes, attn), device, said, say)
    if lever is None:
        raise O.exhausted(step, config, applied, longest, error)
    before = {key: getattr(config, key) for key in lever.changes}
    old_config, config = config, replace(config, **lever.changes)
    if config.micro_batch != old_config.micro_batch:  # the same position, in smaller batches
        old = train
        train = PackedBatches(shard_dir, "train", config.micro_batch, pad_id, config.seed, rank,
                              world)
        epoch, index = divmod(state["micro"], old.batches_per_epoch)
        factor = old_config.micro_batch // config.micro_batch
        state["micro"] = epoch * train.batches_per_epoch + index * factor
    if config.grad_checkpointing and not old_config.grad_checkpointing:
        M.causal_lm(model).gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.loss_chunk != old_config.loss_chunk:
        loss_fn.chunk = config.loss_chunk
    if config.optimizer != old_config.optimizer:  # the moments carried over, then the schedule
        new = _make_optimizer(trainable, config)
        if isinstance(optimizer, torch.optim.AdamW):
            O.carry_adam_state(optimizer, new)
        else:
            new.load_state_dict(optimizer.state_dict())
        sched = _make_scheduler(new, config, total_steps)
        sched.load_state_dict(scheduler.state_dict())
        for group, lr in zip(new.param_groups, sched.get_last_lr(), strict=True):
            group["lr"] = lr
        optimizer, scheduler = new, sched
    record = {"step": step, "lever": lever.name, "before": before, "changes": lever.changes,
              "saves_bytes": lever.saves, "speed": lever.speed, "error": error}
    applied.append(record)
    return config, optimizer, scheduler, train, record


def divmod_epoch(micro: int, per_epoch: int) -> tuple[int, int]:
    """Global micro-batch counter -> (epoch, index in epoch): the data position to resume at."""
    return divmod(micro, per_epoch)


@torch.no_grad()
def evaluate(loss_fn, shard_dir, config, pad_id, rank, world, device, autocast) -> float:
    """Token-weighted validation loss over the val split (all ranks together)."""
    loss_fn.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    for batch in eval_batches(shard_dir, "val", config.micro_batch, pad_id, rank, world,
                              config.eval_batches):
        with autocast:
            part, count = loss_fn(batch.to(device))
        totals += torch.tensor([float(part), float(count)], dtype=torch.float64)
    _all_reduce(totals, world)
    return float(totals[0] / max(totals[1], 1))


# ---------------------------------------------------------------------------- optimiser


def _make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    kwargs = dict(lr=config.lr, weight_decay=config.weight_decay,
                  betas=(config.adam_beta1, config.adam_beta2))
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if config.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(params, **kwargs)


def _make_scheduler(optimizer, config: TrainConfig, total_steps: int):
    # ceil, not round: a short run with warmup_ratio > 0 still warms up for at least one step
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * total_steps - 1e-9)
    warmup = min(warmup, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if config.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------- checkpoints


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _save_checkpoint(out, model, optimizer, scheduler, state, config, is_main, world) -> None:
    # Every rank keeps its own RNG state (dropout masks differ by rank).
    rank = torch.distributed.get_rank() if world > 1 else 0
    final = out / "checkpoints" / f"step-{state['step']:07d}"
    tmp = final.with_name(final.name + ".tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if world > 1:
        torch.distributed.barrier()
    torch.save(_rng_state(), tmp / f"rng-{rank}.pt")
    if is_main:
        torch.save(_trainable_state(model), tmp / "trainable.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(state) + "\n")
    if world > 1:
        torch.distributed.barrier()
    if is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # a checkpoint exists complete or not at all
        old = sorted(p for p in final.parent.glob("step-*") if not p.name.endswith(".tmp"))
        for path in old[: -config.keep_checkpoints]:
            shutil.rmtree(path, ignore_errors=True)
    if world > 1:
        torch.distributed.barrier()


def _sweep_partial_saves(out: Path) -> None:
    """A run killed while saving leaves `step-N.tmp/` or `best/trainable.tmp`; they were never
    complete, so they go before anything else reads the directory."""
    for partial in (out / "checkpoints").glob("step-*.tmp"):
        shutil.rmtree(partial, ignore_errors=True)
    (out / "checkpoints" / "best" / "trainable.tmp").unlink(missing_ok=True)


def _latest_checkpoint(out: Path) -> Path | None:
    found = sorted(p for p in (out / "checkpoints").glob("step-*") if not p.name.endswith(".tmp"))
    return found[-1] if found else None


def _load_checkpoint(path: Path, model, optimizer, scheduler, state) -> None:
    params = dict(model.named_parameters())
    for name, value in torch.load(path / "trainable.pt", weights_only=True).items():
        params[name].data.copy_(value.to(params[name].device))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    state.update(json.loads((path / "state.json").read_text()))
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    _set_rng_state(torch.load(path / f"rng-{rank}.pt", weights_only=False))


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _save_best(out: Path, model) -> None:
    """The trainable weights at the best validation loss so far (an adapter: megabytes). Kept
    under checkpoints/ so a resumed run still has it and a fresh run starts without it."""
    best = out / "checkpoints" / "best"
    best.mkdir(parents=True, exist_ok=True)
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    torch.save(trainable, best / "trainable.tmp")
    (best / "trainable.tmp").replace(best / "trainable.pt")


def _save_final(out: Path, model, tokenizer, config: TrainConfig, best_step: int | None = None,
                last_step: int = 0) -> None:
    if config.full:
        M.causal_lm(model).save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
    elif best_step is not None and best_step != last_step:
        model.save_pretrained(out / "adapter-last")
        params = dict(model.named_parameters())
        for name, value in torch.load(out / "checkpoints" / "best" / "trainable.pt",
                                      weights_only=True).items():
            params[name].data.copy_(value.to(params[name].device))
        model.save_pretrained(out / "adapter")
    else:
        model.save_pretrained(out / "adapter")
        shutil.rmtree(out / "adapter-last", ignore_errors=True)
    tokenizer.save_pretrained(out / "tokenizer")


def _write_run_info(out, shard_dir, model_path, model_dir, manifest, config,
                    record=None) -> None:
    info = {
        "model": str(Path(model_path).resolve()),
        "model_dir": str(Path(model_dir).resolve()),
        "shards": str(Path(shard_dir).resolve()),
        "shards_fingerprint": shards_fingerprint(manifest),
        "config": to_dict(config),
        "template": manifest.get("template"),
        "tokenizer": manifest.get("tokenizer"),
        "eos_id": manifest.get("eos_id"),
        "pad_id": manifest.get("pad_id"),
        # split sizes: `sfttrain report` judges the eval set's noise by them
        "splits": {name: {k: s.get(k) for k in ("sequences", "supervised_tokens")}
                   for name, s in manifest["splits"].items()},
    }
    info.update(record or {})  # lr_find (lr=auto) and oom_levers
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")


# ---------------------------------------------------------------------------- metrics


def _append_metric(out: Path, row: dict) -> None:
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    L.log(out, row)


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, forget metrics logged after the checkpoint (they will be logged again)."""
    if not path.is_file():
        return
    if step == 0:  # a fresh run
        path.unlink()
        for log in path.parent.glob("data-rank*.jsonl"):
            log.unlink()
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(out: str | Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plot_losses(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(out)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (token-weighted cross-entropy)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)


def _model_shape(model_dir: Path) -> dict[str, int]:
    from .plan import model_shape

    return model_shape(model_dir)


def _summary(config, shape, tokens, elapsed, device, rss_before, train, world, state, result):
    tps = tokens / elapsed if elapsed > 0 else 0.0
    lens = [int(x) for x in train.reader.lengths()]
    ctx = _mean_context(train)
    flops_per_token = 6 * shape["params"] + 12 * shape["layers"] * shape["hidden"] * ctx
    peak = _peak_flops(config, device) * world
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device)
        mem_kind = "torch.cuda.max_memory_allocated"
    else:
        peak_mem = _peak_rss()
        mem_kind = "peak RSS"
    return {
        "steps": state["step"],
        "stopped": result.stopped or "completed",
        "tokens": tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(tps, 1),
        "peak_memory_bytes": int(peak_mem),
        "peak_memory_kind": mem_kind,
        "rss_before_model_bytes": int(rss_before),
        "mfu": round(flops_per_token * tps / peak, 5) if peak else None,
        "mfu_formula": "(6*N + 12*L*d*ctx) * tokens_per_s / peak_flops",
        "params": shape["params"],
        "mean_context": round(ctx, 1),
        "peak_flops": peak or None,
        "final_loss": result.losses[-1] if result.losses else None,
        "best_val_loss": None if math.isinf(state["best_val"]) else state["best_val"],
        "best_step": state.get("best_step"),
        "max_sequence": max(lens) if lens else 0,
        "world_size": world,
    }


def _summary_line(s: dict) -> str:
    # MFU only where a peak FLOP/s is known (a GPU in the table, or peak_tflops=): no "n/a" noise
    mfu = f", MFU {s['mfu'] * 100:.1f}% [{s['mfu_formula']}]" if s["mfu"] is not None else ""
    return (f"sfttrain: {s['steps']} steps ({s['stopped']}), {s['tokens']:,} tokens in "
            f"{s['seconds']:.1f}s = {s['tokens_per_s']:,.0f} tokens/s, peak memory "
            f"{s['peak_memory_bytes'] / 2**30:.2f} GiB ({s['peak_memory_kind']}){mfu}")


def _progress_line(step: int, total: int, loss: float, lr: float, tps: float, eta: float) -> str:
    return (f"sfttrain: step {step}/{total} loss {loss:.4f} lr {lr:.3g} {tps:,.0f} tokens/s "
            f"ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _autocast(device: torch.device, dtype: torch.dtype):
    if device.type == "cuda" and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return _null_context()


def _has_split(manifest: dict, split: str) -> bool:
    return split in manifest["splits"] and manifest["splits"][split]["sequences"] > 0


# Keys that steer a run without changing what its checkpoints hold: they may differ on resume.
RUN_CONTROL_KEYS = {
    "eval_every", "eval_batches", "eval_baseline", "save_every", "keep_checkpoints",
    "early_stopping_patience", "early_stopping_min_delta", "keep_best", "stop_at_step",
    "log_every", "progress_seconds", "peak_tflops", "data_log", "quant_check",
    "quant_check_sequences", "quant_damage_warn", "mem_budget", "loss_chunk", "report_to",
}


def shards_fingerprint(manifest: dict) -> str:
    """sha256 over every shard file's path and sha256: the same data, whatever directory."""
    import hashlib

    entries = sorted((f["path"], f["sha256"]) for split in manifest["splits"].values()
                     for f in split["files"])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _check_resumable(out: Path, manifest: dict, model_path, config: TrainConfig) -> None:
    """Refuse to resume checkpoints made from other shards, another model or another config."""
    path = out / "run.json"
    try:
        before = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return  # checkpoints without a readable run.json: nothing to compare with
    differences = []
    old_fp = before.get("shards_fingerprint")
    if old_fp and old_fp != shards_fingerprint(manifest):
        differences.append(f"shards: {before.get('shards')} then, other shard files now")
    if before.get("model") and before["model"] != str(Path(model_path).resolve()):
        differences.append(f"model: {before['model']} then, {Path(model_path).resolve()} now")
    now = to_dict(config)
    for key, old in sorted((before.get("config") or {}).items()):
        if key in RUN_CONTROL_KEYS or key not in now or now[key] == old:
            continue
        differences.append(f"{key}: {old!r} then, {now[key]!r} now")
    if differences:
        raise UsageProblem(
            f"{out} holds checkpoints of another run ({len(differences)} difference(s)):\n  "
            + "\n  ".join(differences)
            + f"\nfix: give -o a new directory, pass --no-resume to start over in {out}, or "
              "repeat the first run's settings")


def _resolve_quant(config, out, ckpt, longest, shape, device, dtype):
    """quant=auto decided once per run: a resumed run keeps the quantization it started with."""
    if config.quant == "auto" and ckpt is not None and (out / "run.json").is_file():
        started = json.loads((out / "run.json").read_text())["config"].get("quant")
        if started in ("nf4", "none"):
            return replace(config, quant=started), f"quant={started}, as the run being resumed"
    quant, why = Q.resolve_quant(config, shape, longest, device, dtype)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if config.quant == "auto" and world > 1:  # every rank must train the same model
        votes = torch.tensor([1.0 if quant == "nf4" else 0.0], dtype=torch.float64)
        _all_reduce(votes, world)
        if votes.item() > 0 and quant != "nf4":
            quant, why = "nf4", "quant=auto: NF4, as another rank's memory requires"
    return replace(config, quant=quant), why


def _mean_context(train: PackedBatches) -> float:
    """Mean number of keys each token attends to, from the packed document lengths."""
    total = weighted = 0
    for i in range(min(len(train.reader), 2048)):
        lens = train.reader[i]["doc_lens"]
        total += int(lens.sum())
        weighted += int((lens * (lens + 1) // 2).sum())
    return weighted / total if total else 0.0


def _peak_flops(config: TrainConfig, device: torch.device) -> float:
    if config.peak_tflops:
        return config.peak_tflops * 1e12
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return 0.0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ---------------------------------------------------------------------------- distributed


def _init_distributed(config: TrainConfig) -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = config.device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.distributed.get_rank(), world, local_rank


def _all_reduce(tensor: torch.Tensor, world: int) -> None:
    """Sum a small CPU tensor over ranks (through the GPU when the back end is NCCL)."""
    if world <= 1:
        return
    if torch.distributed.get_backend() == "nccl":
        on_device = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        torch.distributed.all_reduce(on_device)
        tensor.copy_(on_device.cpu())
    else:
        torch.distributed.all_reduce(tensor)


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
