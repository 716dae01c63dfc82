"""Merge several LoRA fine-tunes of one base: linear, TIES, DARE, on the weight deltas.

Each run's adapter is a change to the base weights, ΔW = scaling · B @ A per target module. The
methods are defined on these task vectors (Ilharco et al. 2023, Yadav et al. 2023, Yu et al.
2024), not on the LoRA factors: trimming or dropping entries of A and B separately, or mixing
the B of one run with the A of another, is not the same operation (docs/merging.md). So the
deltas are combined here, one module at a time, and then

* with --full, added to the base weights (exact; NF4-rounded first for QLoRA runs, as the single
  run merge does), or
* as an adapter: linear is exact as a LoRA of rank Σr (the factors side by side); TIES and DARE
  deltas are no longer low-rank, so they are factored back by SVD to --rank (default Σr), and
  the share of the delta that the rank keeps is reported.

The combination follows mergekit: TIES/DARE-TIES elect a sign per entry and average the entries
that agree with it, weighted (so --weights are relative there); linear/DARE-linear add weighted
deltas (--weights 0.5,0.5 is the mean, 1,1 the sum). DARE's random drop uses a generator seeded
with --seed, modules in sorted order: the same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sftdata.errors import DataError, UsageProblem

from .merge import read_run

METHODS = ("linear", "ties", "dare_linear", "dare_ties")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
PREFIX = "base_model.model."


# --------------------------------------------------------------------------- options


def check_options(n_runs: int, method: str, weights: Sequence[float] | None,
                  density: float | None, rank: int | None) -> tuple[list[float], float]:
    """Weights (default 1/N each) and density (default 1 for linear, 0.5 otherwise), or a
    UsageProblem (exit 2) listing every problem."""
    problems = []
    if method not in METHODS:
        problems.append(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if weights is None:
        weights = [1.0 / n_runs] * n_runs
    weights = list(weights)
    if len(weights) != n_runs:
        problems.append(f"--weights has {len(weights)} number(s) for {n_runs} runs; give one per "
                        "run, in the order of the runs, e.g. --weights "
                        + ",".join(["0.5"] * n_runs))
    elif not all(math.isfinite(w) for w in weights):
        problems.append("--weights must be finite numbers")
    elif method.endswith("ties") and any(w <= 0 for w in weights):
        problems.append(f"--weights must be > 0 for {method}: it averages the entries that agree "
                        "in sign, weighted; use linear for negative (subtracted) task vectors")
    elif not any(weights):
        problems.append("--weights are all 0: the merge would be the base model")
    if density is not None and method == "linear":
        problems.append("--density applies to ties, dare_linear and dare_ties; linear keeps "
                        "every entry (drop --density or choose one of those methods)")
    elif density is not None and not (0 < density <= 1):
        problems.append(f"--density must be in (0, 1], got {density:g}: the fraction of each "
                        "run's delta entries kept, e.g. 0.5")
    if rank is not None and rank < 1:
        problems.append(f"--rank must be at least 1, got {rank}")
    if len(problems) == 1:
        raise UsageProblem(problems[0])
    if problems:
        raise UsageProblem(f"{len(problems)} problems with the merge options:\n  "
                           + "\n  ".join(problems))
    return weights, (1.0 if method == "linear" else 0.5 if density is None else density)


def parse_weights(text: str | None) -> list[float] | None:
    """'0.5,0.5' -> [0.5, 0.5]; a non-number is a UsageProblem naming it."""
    if text is None:
        return None
    out = []
    for part in text.split(","):
        try:
            out.append(float(part))
        except ValueError:
            raise UsageProblem(f"--weights: {part.strip()!r} is not a number; give one number "
                               "per run, comma-separated, e.g. --weights 0.5,0.5") from None
    return out


# --------------------------------------------------------------------------- adapters


@dataclass
class Adapter:
    """One run's LoRA adapter as tensors, with what it takes to compute its deltas."""

    run: str  # as the user named it
    info: dict
    config: dict
    tensors: dict[str, torch.Tensor]

    @property
    def modules(self) -> list[str]:
        return sorted(k[len(PREFIX):-len(".lora_A.weight")] for k in self.tensors
                      if k.endswith(".lora_A.weight"))

    def factors(self, module: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(B, A, scaling) of one module: its delta is scaling · B @ A."""
        a = self.tensors[f"{PREFIX}{module}.lora_A.weight"].float()
        b = self.tensors[f"{PREFIX}{module}.lora_B.weight"].float()
        r, alpha = a.shape[0], float(self.config["lora_alpha"])
        scaling = alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r
        return b, a, scaling

    def delta(self, module: str) -> torch.Tensor:
        b, a, scaling = self.factors(module)
        return scaling * (b @ a)


def load_adapter(run_dir: str | Path) -> Adapter:
    """A run's adapter/, refused (DataError) where it is not a plain LoRA of linear layers."""
    from safetensors.torch import load_file

    info = read_run(run_dir)
    label = str(run_dir)
    if info["config"].get("full"):
        raise DataError("a full fine-tune, not an adapter", file=label,
                        fix="merge LoRA runs (`sfttrain run` without --full)")
    folder = Path(run_dir) / "adapter"
    missing = [n for n in ADAPTER_FILES if not (folder / n).is_file()]
    if missing:
        raise DataError(f"no adapter/{missing[0]} (was the run stopped before the end?)",
                        file=label, fix="finish the run: `sfttrain run` resumes it")
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
        tensors = load_file(folder / "adapter_model.safetensors")
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable adapter ({str(exc).splitlines()[0]})", file=str(folder),
                        fix="run `sfttrain run` again to rewrite it") from None
    where = str(folder / "adapter_config.json")
    if config.get("peft_type") != "LORA":
        raise DataError(f"a {config.get('peft_type')} adapter, not LoRA", file=where,
                        field="peft_type", fix="merge LoRA adapters")
    for key in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save"):
        if config.get(key):
            raise DataError("set: merging handles plain LoRA adapters only (a DoRA magnitude, "
                            "per-module ranks or saved modules are no weight delta of one rank)",
                            file=where, field=key, fix="merge adapters trained without it")
    odd = sorted(k for k in tensors if not k.startswith(PREFIX)
                 or not k.endswith((".lora_A.weight", ".lora_B.weight")))
    if odd:
        raise DataError(f"tensor {odd[0]} is not a LoRA factor of a linear layer",
                        file=str(folder / "adapter_model.safetensors"),
                        fix="merge adapters of linear layers only")
    return Adapter(label, info, config, tensors)


# --------------------------------------------------------------------------- compatibility


def base_fingerprint(model_dir: Path) -> str:
    """A hash of config.json and the weight files: two copies of one model hash alike."""
    digest = hashlib.sha256()
    for path in [model_dir / "config.json", *sorted(model_dir.glob("*.safetensors")),
                 *sorted(model_dir.glob("*.bin"))]:
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _model_dir(info: dict) -> Path:
    from . import model as M

    model_dir = Path(info.get("model_dir") or info["model"])
    if not (model_dir / "config.json").is_file():
        model_dir = M.resolve_model_dir(info["model"])  # a GGUF cache that was cleared
    return model_dir.resolve()


def _short(value) -> str:
    return value[:12] if isinstance(value, str) and len(value) > 12 else str(value)


def _targets(adapter: Adapter) -> str:
    names = adapter.modules
    kinds = sorted({n.rsplit(".", 1)[-1] for n in names})
    return f"{len(names)} modules ({','.join(kinds)})"


# (what, where it is recorded, value of one adapter, the fix)
FIELDS = [
    ("base model", "run.json model", None,
     "fine-tune every run from the same --model: each adapter is a change to its own base"),
    ("tokenizer", "run.json tokenizer.vocab_hash",
     lambda a: _short((a.info.get("tokenizer") or {}).get("vocab_hash")),
     "tokenize every run's data with the same tokenizer: the same id means another piece of "
     "text otherwise"),
    ("chat template", "run.json template.hash",
     lambda a: "{} {}".format((a.info.get("template") or {}).get("name"),
                              _short((a.info.get("template") or {}).get("hash"))),
     "render every run's data with the same template: the merged model would learn two formats"),
    ("end-of-turn token", "run.json eos_id", lambda a: str(a.info.get("eos_id")),
     "render every run's data with the same template and tokenizer"),
    ("quantization", "run.json config.quant", lambda a: str(a.info["config"].get("quant")),
     "train every run with the same --quant: a QLoRA adapter learned against NF4-rounded "
     "weights, a LoRA adapter against the original ones"),
    ("LoRA target modules", "adapter/adapter_config.json target_modules", _targets,
     "train every run with the same lora_targets"),
]


def check_mergeable(adapters: list[Adapter]) -> None:
    """Every field of FIELDS alike across the runs, or one DataError (exit 1) naming each field
    that differs, which runs have which value, and the fix."""
    problems = []
    for what, where, value, fix in FIELDS:
        if value is None:  # the base: the same directory, or copies with the same bytes
            dirs = [_model_dir(a.info) for a in adapters]
            values = [str(d) for d in dirs]
            if len(set(dirs)) > 1:
                prints = {d: base_fingerprint(d) for d in set(dirs)}
                # shown as the user gave it (a .gguf file, or a directory), one per base
                shown: dict[str, str] = {}
                for a, d in zip(adapters, dirs, strict=True):
                    shown.setdefault(prints[d], str(a.info["model"]))
                values = [shown[prints[d]] for d in dirs]
        else:
            values = [value(a) for a in adapters]
        if len(set(values)) > 1:
            groups: dict[str, list[str]] = {}
            for a, v in zip(adapters, values, strict=True):
                groups.setdefault(v, []).append(a.run)
            have = "; ".join(f"{', '.join(runs)}: {v}" for v, runs in groups.items())
            problems.append(f"{what} ({where}) differs: {have}. Fix: {fix}")
    if len(problems) == 1:
        raise DataError(f"cannot merge: {problems[0]}")
    if problems:
        raise DataError(f"cannot merge: the runs differ in {len(problems)} ways:\n  "
                        + "\n  ".join(problems))


# --------------------------------------------------------------------------- the arithmetic


def combine(deltas: list[torch.Tensor], weights: Sequence[float], method: str, density: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """One module's merged delta from the runs' deltas (same shape, fp32)."""
    stack = torch.stack(deltas)
    w = torch.tensor(list(weights), dtype=stack.dtype).view(-1, *[1] * (stack.dim() - 1))
    if method == "ties" and density < 1:
        # trim: keep each run's largest-magnitude entries (top density share)
        flat = stack.reshape(len(deltas), -1)
        k = max(1, int(density * flat.shape[1]))
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep.scatter_(1, flat.abs().topk(k, dim=1).indices, True)
        stack = (flat * keep).reshape(stack.shape)
    elif method.startswith("dare") and density < 1:
        # drop at random, rescale the survivors: the expected delta is unchanged
        keep = torch.rand(stack.shape, generator=generator) < density
        stack = stack * keep / density
    if method in ("linear", "dare_linear"):
        return (w * stack).sum(0)
    # elect a sign per entry (the sign of the weighted sum), average the entries that agree
    elected = torch.where((w * stack).sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(stack) == elected) & (stack != 0)
    total = (w * agree).sum(0)
    return torch.where(total > 0, (w * stack * agree).sum(0) / total.clamp_min(1e-30), 0.0)


def factor(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B, A, kept) with B @ A the best rank-`rank` approximation of delta (SVD), padded with
    zeros to `rank`; kept = the share of delta's squared norm it holds (1.0 when exact)."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    b = torch.zeros(delta.shape[0], rank)
    a = torch.zeros(rank, delta.shape[1])
    b[:, :r] = u[:, :r] * root
    a[:r] = root[:, None] * vh[:r]
    total = float((s**2).sum())
    return b, a, float((s[:r] ** 2).sum()) / total if total > 0 else 1.0


# --------------------------------------------------------------------------- the merge


@dataclass
class MergeResult:
    out: str
    method: str
    runs: list[str]
    weights: list[float]
    density: float
    seed: int
    full: bool
    rank: int | None = None  # of the merged adapter
    exact: bool = True  # the adapter computes the merged delta exactly (no SVD truncation)
    kept_min: float = 1.0  # the least share of a module's delta the adapter keeps
    kept_overall: float = 1.0
    modules: int = 0
    ranks: list[int] = field(default_factory=list)  # of the input runs

    def as_dict(self) -> dict:
        return asdict(self)


def merge_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, method: str = "linear",
               weights: Sequence[float] | None = None, density: float | None = None,
               seed: int = 0, full: bool = False, dtype: str | None = None,
               rank: int | None = None) -> MergeResult:
    """Merge the adapters of several runs of one base into an adapter run directory (OUT/run.json,
    adapter/, tokenizer/) or, with `full`, a plain transformers model directory."""
    from sftdata.outputs import building_dir

    from .merge import DTYPES, check_out, save_model

    run_dirs = list(run_dirs)
    seen = {}
    for r in run_dirs:
        key = Path(r).resolve()
        if key in seen:
            raise UsageProblem(f"RUN {r} is given twice (as {seen[key]} before); give each run "
                               "once and weigh it with --weights")
        seen[key] = r
    weights, density = check_options(len(run_dirs), method, weights, density, rank)
    if full and rank is not None:
        raise UsageProblem("--rank sets the merged adapter's rank; --full adds the merged deltas "
                           "to the base exactly (drop one of them)")
    for r in run_dirs:
        read_run(r)  # a broken run.json is refused before the --out check and any load
    check_out(run_dirs, out_dir)
    adapters = [load_adapter(r) for r in run_dirs]
    check_mergeable(adapters)
    modules = adapters[0].modules
    ranks = [a.tensors[f"{PREFIX}{modules[0]}.lora_A.weight"].shape[0] for a in adapters]
    result = MergeResult(str(out_dir), method, [str(r) for r in run_dirs], weights, density,
                         seed, full, modules=len(modules), ranks=ranks)
    generator = torch.Generator().manual_seed(seed)
    first = adapters[0]

    def merged_delta(module: str) -> torch.Tensor:
        return combine([a.delta(module) for a in adapters], weights, method, density, generator)

    if full:
        model = _base_for_merge(first.info)
        fan_in_fan_out = bool(first.config.get("fan_in_fan_out"))
        with torch.no_grad():
            for module in modules:
                layer = model.get_submodule(module)
                delta = merged_delta(module)
                layer.weight += (delta.T if fan_in_fan_out else delta).to(layer.weight.dtype)
        # merge.json: how the model was made (it loads without it)
        note = json.dumps(result.as_dict(), indent=2) + "\n"
        save_model(model, first.info, Path(first.run) / "tokenizer", out_dir, dtype or "bf16",
                   notes={"merge.json": note})
        return result

    exact = method == "linear" and rank is None
    result.rank = sum(ranks) if rank is None else rank
    result.exact = exact
    tensors: dict[str, torch.Tensor] = {}
    kept, norm_kept, norm_total = [], 0.0, 0.0
    for module in modules:
        if exact:  # the factors side by side: B_cat @ A_cat = Σ w_i s_i B_i A_i
            parts = [a.factors(module) for a in adapters]
            b = torch.cat([w * s * b for w, (b, _, s) in zip(weights, parts, strict=True)], dim=1)
            a = torch.cat([a for _, a, _ in parts], dim=0)
        else:
            delta = merged_delta(module)
            b, a, share = factor(delta, result.rank)
            norm = float(delta.pow(2).sum())
            kept.append(share)
            norm_kept, norm_total = norm_kept + share * norm, norm_total + norm
        tensors[f"{PREFIX}{module}.lora_A.weight"] = a.contiguous()
        tensors[f"{PREFIX}{module}.lora_B.weight"] = b.contiguous()
    if kept:
        result.kept_min = min(kept)
        result.kept_overall = norm_kept / norm_total if norm_total > 0 else 1.0
    torch_dtype = DTYPES[dtype or "fp32"]
    with building_dir(out_dir, "--out") as build:
        _write_adapter_run(build.path, first, tensors, torch_dtype, result)
    return result


def _base_for_merge(info: dict):
    """The base in fp32, NF4-rounded where the runs trained against NF4 (merge.py's reason)."""
    from transformers import AutoModelForCausalLM

    from .merge import nf4_round_trip

    base = AutoModelForCausalLM.from_pretrained(_model_dir(info), dtype=torch.float32)
    if info["config"].get("quant") == "nf4":
        nf4_round_trip(base)
    return base


def _write_adapter_run(out: Path, first: Adapter, tensors: dict, dtype: torch.dtype,
                       result: MergeResult) -> None:
    """OUT/adapter (peft loads it), OUT/tokenizer, OUT/run.json: a run directory that
    `sfttrain generate` and `sfttrain merge OUT --out full/` take like any run."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    from .merge import with_trained_eos

    adapter = out / "adapter"
    adapter.mkdir()
    config = dict(first.config)
    # scaling alpha/r = 1: the factors carry every run's own scaling and weight
    config.update(r=result.rank, lora_alpha=result.rank, use_rslora=False, rank_pattern={},
                  alpha_pattern={})
    (adapter / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.to(dtype) for k, v in tensors.items()},
              str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    # plain peft users take the trained end-of-turn token from here
    try:
        gen = GenerationConfig.from_pretrained(_model_dir(first.info))
    except OSError:  # a base without generation_config.json
        from transformers import AutoConfig

        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(_model_dir(first.info)))
    with_trained_eos(gen, first.info.get("eos_id")).save_pretrained(adapter)
    shutil.copytree(Path(first.run) / "tokenizer", out / "tokenizer")
    info = {k: first.info.get(k) for k in ("model", "model_dir", "template", "tokenizer",
                                           "eos_id", "pad_id")}
    run_config = dict(first.info["config"])
    run_config.update(lora_r=result.rank, lora_alpha=result.rank, rslora=False)
    info["config"] = run_config
    info["merge"] = result.as_dict()
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")

