"""Merge a run's adapter into its base and save a model that plain transformers loads.

Under QLoRA the adapter was trained against the NF4-rounded weights, not the original ones. So
the base is loaded in full precision, every linear layer that training quantized is rounded
through NF4 and back (the same bitsandbytes quantizer, block size 64, double quantization), and
only then is the adapter merged: the merged model computes what the adapter model computed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sftdata.errors import DataError, UsageProblem, json_kind, json_problem

from . import model as M
from .config import from_dict

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def read_run(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise DataError("no run.json", file=str(run_dir), fix="pass a directory `sfttrain run` wrote")
    fix = "pass a directory `sfttrain run` wrote, or run it again to rewrite run.json"
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 at byte {exc.start}", file=str(path), fix=fix) from None
    except json.JSONDecodeError as exc:
        raise DataError(json_problem(exc), file=str(path), line=exc.lineno, fix=fix) from None
    except RecursionError:
        raise DataError("JSON nested too deeply", file=str(path), fix=fix) from None
    if not isinstance(info, dict):
        raise DataError(f"expected a JSON object, got {json_kind(info)}", file=str(path), fix=fix)
    missing = [k for k in ("config", "model") if k not in info]
    if missing or not isinstance(info.get("config"), dict):
        raise DataError(f"no {' or '.join(missing) or 'config object'}: not a complete run record",
                        file=str(path), fix=fix)
    return info


def nf4_round_trip(model: nn.Module) -> int:
    """Replace each quantizable linear weight by its NF4-dequantized value; returns the count."""
    import bitsandbytes.functional as F

    head = model.get_output_embeddings()
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module is not head:
            weight = module.weight.data
            packed, state = F.quantize_4bit(
                weight.float().contiguous(), blocksize=64, compress_statistics=True,
                quant_type="nf4",
            )
            module.weight.data = F.dequantize_4bit(packed, state).to(weight.dtype)
            count += 1
    return count


def load_adapted(run_dir: str | Path, for_merge: bool, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The trained model of a run: base + adapter (4-bit base as trained unless for_merge)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir = Path(run_dir)
    info = read_run(run_dir)
    config, _ = from_dict(info["config"])
    if config.full:
        return AutoModelForCausalLM.from_pretrained(run_dir / "model", dtype=torch.float32), info
    model_dir = Path(info.get("model_dir") or info["model"])
    if not (model_dir / "config.json").is_file():
        model_dir = M.resolve_model_dir(info["model"])  # a GGUF cache that was cleared
    if for_merge:
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        if config.quant == "nf4":
            nf4_round_trip(base)
    else:
        dev = torch.device(device)
        base = M.load_base(model_dir, config.quant, M.pick_dtype(config, dev), dev, "sdpa")
    adapter_dir = run_dir / "adapter"
    if not adapter_dir.is_dir():
        raise DataError("no adapter/ in the run (was it stopped before the end?)",
                        file=str(run_dir), fix="finish the run: `sfttrain run` resumes it")
    return PeftModel.from_pretrained(base, adapter_dir), info


def check_out(run_dirs: list[str | Path], out_dir: str | Path) -> None:
    """--out must be a directory of its own: not a run, nor inside one, nor holding one."""
    from sftdata.outputs import Spec, check

    out = Path(out_dir).resolve()
    for run_dir in run_dirs:
        run = Path(run_dir).resolve()
        if out == run or run in out.parents or out in run.parents:
            where = ("is the run directory" if out == run else
                     "is inside the run directory" if run in out.parents else
                     "contains the run directory")
            raise UsageProblem(f"--out {out_dir} {where}: the merged model's files would mix with "
                               "the run's; give --out a directory of its own, e.g. merged/")
    # the one output policy: a file in the way, an unwritable parent (exit 2, before any load)
    check([Spec("RUN", str(r)) for r in run_dirs], [Spec("--out", str(out_dir), is_dir=True)])


def merge_run(run_dir: str | Path, out_dir: str | Path, dtype: str = "bf16") -> Path:
    read_run(run_dir)  # a missing or broken run.json is refused before any weights load
    check_out([run_dir], out_dir)
    model, info = load_adapted(run_dir, for_merge=True)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    return save_model(merged, info, Path(run_dir) / "tokenizer", out_dir, dtype)


def with_trained_eos(gen, trained_eos: int | None):
    """The generation config with the trained end-of-turn token among its EOS ids."""
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else (
        [] if gen.eos_token_id is None else [gen.eos_token_id])
    if trained_eos is not None and trained_eos not in eos:
        # Generation must stop at the end-of-turn token the shards trained (unsloth #5386).
        gen.eos_token_id = eos + [int(trained_eos)]
    return gen


def save_tokenizer(tokenizer_dir: Path, info: dict, out: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    template = (info.get("template") or {}).get("text")
    if template and "{%" in template:
        tokenizer.chat_template = template  # generate with the training template
    tokenizer.save_pretrained(out)


def save_model(model: nn.Module, info: dict, tokenizer_dir: Path, out_dir: str | Path,
               dtype: str, notes: dict[str, str] | None = None) -> Path:
    """A plain transformers model directory, built beside --out and swapped in as a whole;
    `notes` are extra text files written into it (name -> text)."""
    from sftdata.outputs import building_dir

    model.to(DTYPES[dtype])
    with_trained_eos(model.generation_config, info.get("eos_id"))
    with building_dir(out_dir, "--out") as build:
        model.save_pretrained(build.path)
        save_tokenizer(tokenizer_dir, info, build.path)
        for name, text in (notes or {}).items():
            (build.path / name).write_text(text)
    return Path(out_dir)
