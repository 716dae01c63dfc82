"""Training configuration: defaults, TOML/YAML files, `key=value` overrides, validation.

Every problem is collected and reported at once (unknown keys with a suggestion, bad types,
bad ranges), so a user fixes a config in one pass instead of one error per run.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftdata.errors import SftError


class ConfigError(SftError):
    """One or more config problems; exit 2 (a usage error)."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} config problem(s):\n{lines}")


@dataclass
class TrainConfig:
    # model and adapter
    quant: str = "auto"  # auto: nf4 only where the unquantized run does not fit; nf4 = QLoRA; none
    mem_budget: str = ""  # memory quant=auto plans against, e.g. 24GiB; "" = the device's
    quant_check: bool = True  # measure the base model's loss before and after 4-bit quantization
    quant_check_sequences: int = 8  # packed sequences (val split, else train) it measures on
    quant_damage_warn: float = 0.1  # warn when quantization raises that loss by this fraction
    full: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"  # or a comma list: q_proj,v_proj
    rslora: bool = False
    dora: bool = False
    dtype: str = "auto"  # auto: bf16 on a GPU that has it, else fp32
    attn: str = "auto"  # auto | sdpa | eager | flash_attention_2
    device: str = "auto"  # auto | cpu | cuda
    grad_checkpointing: bool = True
    # optimisation
    optimizer: str = "adamw"  # adamw | adamw_8bit | paged_adamw_8bit
    lr: float = 2e-4  # or "auto": a learning-rate range test first (sfttrain/lr_find.py)
    lr_find_steps: int = 100  # range test: optimizer steps (fewer when one epoch is shorter)
    lr_find_min: float = 1e-6  # range test: the first step's lr ...
    lr_find_max: float = 1.0  # ... growing exponentially to this (it stops early on divergence)
    lr_find_probe: int = 8  # range test: sequences scored after every step (val, else train)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    scheduler: str = "cosine"  # cosine | linear | constant
    warmup_steps: int = 0
    warmup_ratio: float = 0.03  # used when warmup_steps is 0
    max_grad_norm: float = 1.0
    micro_batch: int = 1
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int = 0  # optimizer steps; 0 = run `epochs` epochs
    seed: int = 0
    # evaluation, checkpoints, stopping
    eval_every: int = 50  # 0 = no periodic validation
    eval_baseline: bool = True  # validation loss of the untrained model at step 0
    eval_batches: int = 0  # 0 = the whole val split
    save_every: int = 100
    keep_checkpoints: int = 2
    early_stopping_patience: int = 0  # evaluations without improvement; 0 = off
    early_stopping_min_delta: float = 0.0
    keep_best: bool = True  # with a val split, adapter/ = the best validation loss, adapter-last/ = the end
    stop_at_step: int = 0  # stop (as if killed) after this step; for resume tests and time boxes
    log_every: int = 1
    progress_seconds: float = 30.0  # a progress line this often when stderr is not a terminal
    peak_tflops: float = 0.0  # device peak for MFU; 0 = look it up (GPUs) or report n/a
    loss_chunk: int = 1024  # supervised tokens per logits chunk (bounds logits memory)
    data_log: bool = False  # write data-rank<R>.jsonl: record ids each rank trained on, per step
    report_to: str = "none"  # none, or a comma list of tensorboard, wandb, mlflow (sfttrain/loggers.py)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


CHOICES = {
    "quant": ("auto", "nf4", "none"),
    "dtype": ("auto", "bf16", "fp16", "fp32"),
    "attn": ("auto", "sdpa", "eager", "flash_attention_2"),
    "device": ("auto", "cpu", "cuda"),
    "optimizer": ("adamw", "adamw_8bit", "paged_adamw_8bit"),
    "scheduler": ("cosine", "linear", "constant"),
}
# key -> (lowest, highest, lowest inclusive)
RANGES = {
    "lora_r": (1, None, True),
    "lora_alpha": (1, None, True),
    "lora_dropout": (0.0, 1.0, True),
    "lr": (0.0, 1.0, False),
    "lr_find_steps": (5, None, True),
    "lr_find_min": (0.0, None, False),
    "lr_find_max": (0.0, None, False),
    "lr_find_probe": (1, None, True),
    "weight_decay": (0.0, None, True),
    "adam_beta1": (0.0, 1.0, True),
    "adam_beta2": (0.0, 1.0, True),
    "warmup_steps": (0, None, True),
    "warmup_ratio": (0.0, 1.0, True),
    "max_grad_norm": (0.0, None, True),
    "micro_batch": (1, None, True),
    "grad_accum": (1, None, True),
    "epochs": (1, None, True),
    "max_steps": (0, None, True),
    "eval_every": (0, None, True),
    "quant_check_sequences": (1, None, True),
    "quant_damage_warn": (0.0, None, True),
    "progress_seconds": (0.0, None, True),
    "eval_batches": (0, None, True),
    "save_every": (1, None, True),
    "keep_checkpoints": (1, None, True),
    "early_stopping_patience": (0, None, True),
    "early_stopping_min_delta": (0.0, None, True),
    "stop_at_step": (0, None, True),
    "log_every": (1, None, True),
    "peak_tflops": (0.0, None, True),
    "loss_chunk": (1, None, True),
}


# Names other trainers use, for "did you mean" (never accepted silently: one spelling per key).
ALIASES = {
    "learning_rate": "lr",
    "batch_size": "micro_batch",
    "per_device_train_batch_size": "micro_batch",
    "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs",
    "gradient_checkpointing": "grad_checkpointing",
    "lr_scheduler_type": "scheduler",
    "target_modules": "lora_targets",
    "lora_rank": "lora_r",
    "use_rslora": "rslora",
    "use_dora": "dora",
    "load_best_model_at_end": "keep_best",
}


def keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name != "extra"]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A flat table of keys from TOML or YAML (sections are flattened: [lora] r -> lora_r)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: config file not found"])
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError([f"{path}: use a .toml, .yaml or .yml config file"])
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - parser errors differ by library; report the text
        raise ConfigError([f"{path}: cannot parse: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a table of keys"])
    return _flatten(data)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}".replace("-", "_")
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix=f"{name}_"))
        else:
            flat[name] = value
    return flat


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """`key=value` strings -> raw values (still strings) and the malformed ones."""
    values: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            problems.append(f"override {pair!r}: write key=value, e.g. lr=1e-4")
            continue
        values[key.strip().replace("-", "_")] = value.strip()
    return values, problems


def build_config(
    file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Defaults <- file <- command-line overrides; raises ConfigError listing every problem."""
    raw: dict[str, Any] = read_config_file(file) if file else {}
    cli_values, problems = parse_overrides(overrides)
    raw.update(cli_values)
    config, more = from_dict(raw)
    problems.extend(more)
    if problems:
        raise ConfigError(problems)
    return config


def from_dict(raw: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    problems: list[str] = []
    values: dict[str, Any] = {}
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    known = keys()
    for key, value in raw.items():
        if key not in known:
            close = [ALIASES[key]] if key in ALIASES else difflib.get_close_matches(
                key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            problems.append(f"unknown key {key!r}{hint}")
            continue
        converted, problem = _convert(key, value, types[key])
        if problem:
            problems.append(problem)
        else:
            values[key] = converted
    config = TrainConfig(**values)
    problems.extend(_check(config, values))
    return config, problems


def _convert(key: str, value: Any, kind: str) -> tuple[Any, str | None]:
    text = str(value).strip()
    if key == "lr" and text.lower() == "auto":  # resolved by a range test when the run starts
        return "auto", None
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value, None
            if text.lower() in ("true", "1", "yes", "on"):
                return True, None
            if text.lower() in ("false", "0", "no", "off"):
                return False, None
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(float(text)) if isinstance(value, float) else int(text), None
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(text), None
        return text, None
    except ValueError:
        words = "a number or auto" if key == "lr" else _KIND_WORDS[kind]
        return None, f"{key}: expected {words}, got {value!r}"


_KIND_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text"}


def _check(config: TrainConfig, given: dict[str, Any]) -> list[str]:
    problems = []
    for key, choices in CHOICES.items():
        value = getattr(config, key)
        if value not in choices:
            problems.append(f"{key}: {value!r} is not one of {', '.join(choices)}")
    for key, (low, high, inclusive) in RANGES.items():
        if key not in given:
            continue
        value = getattr(config, key)
        if key == "lr" and value == "auto":
            continue
        too_low = value < low if inclusive else value <= low
        if too_low or (high is not None and value > high):
            bound = f">= {low}" if inclusive else f"> {low}"
            if high is not None:
                bound += f" and <= {high}"
            problems.append(f"{key}: {value} is out of range (must be {bound})")
    if not [t for t in config.lora_targets.split(",") if t.strip()]:
        problems.append("lora_targets: empty; give all-linear or module names such as "
                        "q_proj,v_proj")
    problems.extend(_report_to_problems(config.report_to))
    if config.mem_budget:
        from .plan import parse_size

        try:
            parse_size(config.mem_budget)
        except SftError:
            problems.append(f"mem_budget: {config.mem_budget!r} is not a size such as 24GiB")
    if config.lr_find_min >= config.lr_find_max:
        problems.append(f"lr_find_min: {config.lr_find_min} must be below lr_find_max "
                        f"({config.lr_find_max})")
    if config.full and config.quant == "nf4":
        problems.append("full: full fine-tuning needs quant=none (a 4-bit base cannot be trained)")
    if config.full and (config.dora or config.rslora):
        problems.append("full: DoRA and rsLoRA are adapter options; drop them or full=true")
    return problems


def _report_to_problems(value: str) -> list[str]:
    """Unknown names, and trackers whose package is missing (said before any model loads)."""
    from .loggers import TRACKERS, missing_packages, parse_report_to

    names, unknown = parse_report_to(value)
    problems = [f"report_to: {name!r} is not one of none, {', '.join(TRACKERS)}"
                for name in unknown]
    problems += [f"report_to: {name} needs the {package!r} package, which is not installed; "
                 f"pip install {package} (or drop {name} from report_to)"
                 for name, package in missing_packages(names)]
    return problems


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k in keys()}
