"""report_to: the metrics rows of a run, also sent where people already look.

metrics.jsonl stays the record; these are copies for viewers: TensorBoard event files under
RUN/tensorboard/, Weights & Biases (offline unless WANDB_MODE says otherwise, files under RUN/)
and MLflow (a file store under RUN/mlruns unless MLFLOW_TRACKING_URI is set). None of the three
is required, and none is imported unless report_to names it: `sfttrain run` without report_to
loads no tracker at all (tests/test_sfttrain_report.py checks sys.modules).

The training loop calls three functions: `start` after the run directory and resume step are
known, `log` wherever it appends a metrics row, `finish` at the end. Loggers are kept per run
directory, so `log` needs nothing but the directory the loop already passes around.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

# tracker name -> the package that must be importable for it
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}

_open: dict[str, list[Any]] = {}  # resolved run directory -> its loggers


def parse_report_to(value: str) -> tuple[list[str], list[str]]:
    """'tensorboard, wandb' -> (['tensorboard', 'wandb'], unknown names); 'none' or '' -> []."""
    names, unknown = [], []
    for part in str(value).split(","):
        name = part.strip().lower()
        if not name or name == "none":
            continue
        if name not in TRACKERS:
            unknown.append(name)
        elif name not in names:
            names.append(name)
    return names, unknown


def missing_packages(names: list[str]) -> list[tuple[str, str]]:
    """(tracker, package) for each asked-for tracker whose package is not installed. find_spec
    looks without importing, so checking costs no import either."""
    return [(name, TRACKERS[name]) for name in names
            if importlib.util.find_spec(TRACKERS[name]) is None]


def start(out: str | Path, config, step: int) -> None:
    """Open the trackers report_to names for the run in `out`, resuming at `step` (0 = fresh)."""
    names, _ = parse_report_to(getattr(config, "report_to", "none"))
    finish(out)
    if not names:
        return
    from .config import to_dict

    params = to_dict(config)
    opened = []
    for name in names:
        opened.append({"tensorboard": _TensorBoard, "wandb": _WandB,
                       "mlflow": _MLflow}[name](Path(out), params, step))
    _open[_key(out)] = opened
    atexit.register(finish, out)  # a run that dies still flushes what it logged


def log(out: str | Path, row: dict) -> None:
    """One metrics.jsonl row to every open tracker of `out` (nothing when none is open)."""
    loggers = _open.get(_key(out))
    if not loggers or "step" not in row:
        return
    scalars = {_name(k): float(v) for k, v in row.items()
               if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in loggers:
        logger.log(int(row["step"]), scalars)


def finish(out: str | Path) -> None:
    for logger in _open.pop(_key(out), []):
        logger.close()


def _key(out: str | Path) -> str:
    return os.path.realpath(out)


def _name(key: str) -> str:
    """metrics.jsonl keys -> tracker names: val_loss -> val/loss, loss -> train/loss."""
    return f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"


class _TensorBoard:
    def __init__(self, out: Path, params: dict, step: int):
        from torch.utils.tensorboard import SummaryWriter

        log_dir = out / "tensorboard"
        if step == 0:  # a fresh run: the old run's curves must not be drawn over the new ones
            shutil.rmtree(log_dir, ignore_errors=True)
        # resumed: TensorBoard drops events at or after purge_step from the earlier files, as
        # metrics.jsonl drops rows logged after the checkpoint
        self.writer = SummaryWriter(str(log_dir), purge_step=step + 1 if step else None)
        if step == 0:
            self.writer.add_text("config", "```\n" + json.dumps(params, indent=2) + "\n```", 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, out: Path, params: dict, step: int):
        os.environ.setdefault("WANDB_MODE", "offline")  # nothing leaves the machine unless asked
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sfttrain"),
                              name=out.resolve().name, dir=str(out), config=params)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, out: Path, params: dict, step: int):
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):  # a local file store beside the run
            mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "sfttrain"))
        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=out.resolve().name)
        # mlflow caps a parameter value's length; config values are short, the cap is a guard
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})

    def log(self, step: int, scalars: dict[str, float]) -> None:
        # NaN is a finding (report says so), but some MLflow stores refuse it: logged as absent
        self.mlflow.log_metrics({k: v for k, v in scalars.items() if math.isfinite(v)}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()
