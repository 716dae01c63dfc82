"""Out-of-memory survival: free, change one thing (the next of plan's levers), redo the step.

A step that raises torch.OutOfMemoryError has changed nothing that matters: the optimizer has
not stepped (an OOM inside `optimizer.step()` comes from allocating its state on the first
step, before any weight moves), the data position has not advanced. So `train.py` drops the
step's gradients, restores the RNG state of the step's start, applies the lever and runs the
same step again from the same records. The levers keep the effective batch (micro_batch x
grad_accum) and so what is optimised; `plan.levers` orders them by predicted memory saved.

Test hook (for tests, not for users): SFTTRAIN_TEST_OOM_AT_STEP=N makes the real forward of
optimizer step N raise torch's real OutOfMemoryError, on the step's last micro-batch (after the
earlier ones have left gradients behind), SFTTRAIN_TEST_OOM_TIMES=K times (default 1).
"""

from __future__ import annotations

import gc
import os

import torch

from sftdata.errors import SftError

from . import plan as P


class OutOfMemory(SftError):
    """Out of memory with no lever left (or several processes): exit 1 with the plan's advice."""

    exit_code = 1


class TestHook:
    """Raises torch.OutOfMemoryError from the decoder's final norm: inside the real forward,
    after every layer has made its activations, outside any checkpointed region (so it fires
    once per micro-batch, not again when checkpointing recomputes a layer)."""

    __test__ = False  # not a pytest class

    def __init__(self, at_step: int, times: int):
        self.at_step, self.left = at_step, times
        self.countdown: int | None = None

    @classmethod
    def install(cls, model) -> TestHook | None:
        at = os.environ.get("SFTTRAIN_TEST_OOM_AT_STEP")
        if not at:
            return None
        hook = cls(int(at), int(os.environ.get("SFTTRAIN_TEST_OOM_TIMES", "1")))
        from .model import causal_lm

        causal_lm(model).get_decoder().norm.register_forward_hook(hook)
        return hook

    def arm(self, step: int, micro_batches: int) -> None:
        fire = step == self.at_step and self.left > 0
        self.countdown = micro_batches - 1 if fire else None

    def __call__(self, module, args, output):
        if self.countdown is None:
            return
        if self.countdown > 0:
            self.countdown -= 1
            return
        self.countdown = None
        self.left -= 1
        raise torch.OutOfMemoryError(
            f"CUDA out of memory (SFTTRAIN_TEST_OOM_AT_STEP={self.at_step} test hook)")


def free(optimizer, device: torch.device) -> None:
    """Drop the failed step's gradients and whatever the allocator still caches."""
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def choose(levers: list[P.Lever], device: torch.device, said: set[str], say) -> P.Lever | None:
    """The first lever this device can use; the ones it cannot are said once and skipped."""
    for lever in levers:
        if lever.only_cuda and device.type != "cuda":
            if lever.name not in said:
                said.add(lever.name)
                say(f"sfttrain: out-of-memory lever '{lever.name}' skipped: bitsandbytes pages "
                    f"optimizer state only on CUDA, not on {device.type}")
            continue
        return lever
    return None


def exhausted(step: int, config, applied: list[dict], longest: int, error: str) -> OutOfMemory:
    used = "; ".join(f"step {a['step']}: {a['lever']}" for a in applied) or "none applied"
    return OutOfMemory(
        f"out of memory at step {step} ({error}) with micro_batch={config.micro_batch} "
        f"grad_accum={config.grad_accum} grad_checkpointing={str(config.grad_checkpointing).lower()} "
        f"optimizer={config.optimizer} loss_chunk={config.loss_chunk}, and no lever is left "
        f"(levers used: {used}). Fix: {P.advice(config, longest)}")


def carry_adam_state(old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> int:
    """AdamW moments into a bitsandbytes 8-bit optimizer (blockwise quantized with its own maps),
    so switching optimizer mid-run keeps the momentum; returns the tensors carried."""
    from bitsandbytes.functional import quantize_blockwise

    carried = 0
    for gindex, group in enumerate(new.param_groups):
        for pindex, p in enumerate(group["params"]):
            state = old.state.get(p) or {}
            if "exp_avg" not in state:
                continue
            new.init_state(group, p, gindex, pindex)
            target = new.state[p]
            target["step"] = int(state["step"])
            if target["state1"].dtype == torch.uint8:
                for i, key in ((1, "exp_avg"), (2, "exp_avg_sq")):
                    # blocks of 256: the blocksize of bitsandbytes' 8-bit optimizer update
                    _, qs = quantize_blockwise(state[key].float(), code=target[f"qmap{i}"],
                                               out=target[f"state{i}"], blocksize=256)
                    target[f"absmax{i}"].copy_(qs.absmax)
            else:
                target["state1"].copy_(state["exp_avg"])
                target["state2"].copy_(state["exp_avg_sq"])
            carried += 1
    return carried
