"""Quality parity with TRL on a real task (AG News topics), plus tokens/s and peak RSS.

One task through the whole sftdata pipeline, then the same training twice per quantization:

    convert --from classification (a prompt template) -> dedup -> split (stratified by label,
    exact counts) -> gold freeze (the gold set) -> gold verify -> render-template (the model's
    own chat template) -> tokenize -> pack (train only: no val split, so no validation)
    -> (a) `sfttrain run`  and  (b) TRL SFTTrainer (completion-only loss, packing on, BFD)
    -> `sfttrain generate` (same template, greedy) for the base model and all four runs
    -> `sftdata gold score` -> bootstrap intervals and paired tests (ours vs TRL).

Same for both sides: base model (SmolLM2-135M-Instruct, the GGUF dequantized once by
sfttrain into an HF directory that both load), the tokenized documents (TRL gets sftdata's
input_ids and a completion mask from its labels, and packs them itself), LoRA (r, alpha,
dropout, all linear layers), AdamW (betas, no weight decay, clipping 1.0), lr and cosine
schedule without warmup, optimizer steps, one packed row of --seq-len tokens per micro-batch,
gradient checkpointing (off unless --grad-checkpointing), fp32 compute, torch threads.
quant nf4 = NF4 + double quantization on both sides, and both sides' NF4 layers are pinned to
dequantize-then-matmul (`sfttrain.model.keep_dequantize_path`), so both run the same kernels.
TRL's own QLoRA choice stays: it casts the adapter weights to bf16 on a 4-bit model.

TRL's adapter is saved with a run.json beside it, so `sfttrain generate` loads it exactly as
it loads ours (base, NF4 pin, adapter, template, end-of-turn id): the decoding is identical.
Each training side runs in its own process (peak RSS is its own); tokens/s counts real tokens
over the training loop only (loading and data preparation excluded). The quality runs' timings
share the machine's load at different moments, so a speed phase follows: short runs of both
sides alternating (--speed-repeats x --speed-steps), reported as medians and ratios.

    .venv/bin/python bench/bench_parity.py                  # ~40-45 min on 2 shared CPU cores
    .venv/bin/python bench/bench_parity.py --quants none --train-records 100   # a quick look
    .venv/bin/python bench/bench_parity.py --reuse           # rescore: keep finished steps
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
CSV = ROOT.parent / "shared" / "realdata" / "datasets" / "classification" / "ag_news_samples.csv"
# Short on purpose: a fixed prefix of 13+ words makes every pair of records share a 13-gram
# ("prefix + first title word"), which dedup and gold verify then count as overlap.
TEMPLATE = "Topic of this headline (World, Sports, Business or Sci/Tech):\n\n{title}"
GIB = 2**30


OMP_WAIT_POLICY = "PASSIVE"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def child_env(args) -> dict[str, str]:
    threads = str(args.threads)
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            # what the sfttrain command sets for itself; given to both sides so neither
            # spins its OpenMP threads while the other side's or the machine's work waits
            "OMP_WAIT_POLICY": OMP_WAIT_POLICY}


def sh(cmd: list[str], args, log: Path | None = None, check: bool = True
       ) -> subprocess.CompletedProcess:
    """Run one pipeline command; its stderr (counts, reports) is echoed and kept."""
    shown = " ".join(str(c) if " " not in str(c) and "\n" not in str(c) else repr(str(c))
                     for c in cmd)
    print(f"$ {shown}", flush=True)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          env=child_env(args))
    text = (proc.stderr or "").rstrip()
    if text:
        print("  " + text.replace("\n", "\n  "), flush=True)
    if log is not None:
        log.write_text(f"$ {shown}\n{proc.stdout}{proc.stderr}")
    if proc.returncode and check:
        raise SystemExit(f"failed (exit {proc.returncode}): {shown}\n{proc.stdout[-2000:]}")
    return proc


# ------------------------------------------------------------------------------ data


def fetch_model() -> Path:
    gguf = os.environ.get("SFT_SMOLLM2_GGUF")
    if not gguf:
        gguf = subprocess.run(["bash", str(ROOT / "scripts" / "fetch_smollm2.sh")], check=True,
                              capture_output=True, text=True).stdout.strip()
    return Path(gguf)


def prepare(args, work: Path, gguf: Path, model_dir: Path) -> dict:
    """The sftdata pipeline; returns the counts the report quotes."""
    sd = BIN / "sftdata"
    if args.reuse and (work / "shards" / "manifest.json").is_file():
        print("pipeline: reusing", work / "shards")
    else:
        for name in ("splits", "shards"):
            shutil.rmtree(work / name, ignore_errors=True)
        sh([sd, "convert", args.csv, "--from", "classification", "--template", args.template,
            "-o", work / "records.parquet"], args)
        sh([sd, "dedup", work / "records.parquet", "--dupes", work / "dupes.jsonl",
            "-o", work / "dedup.parquet"], args)
        ratios = f"train={args.train_records},test={args.test_records}"
        sh([sd, "split", work / "dedup.parquet", "--stratify", "label", "--ratios", ratios,
            "--seed", str(args.seed), "--rejects", work / "unselected.jsonl",
            "--report", work / "split.json", "-o", work / "splits"], args)
        sh([sd, "gold", "freeze", work / "splits" / "test.parquet", "-n", str(args.gold),
            "--seed", str(args.seed), "--gold-out", work / "gold.parquet",
            "-o", work / "test_rest.parquet"], args)
        # reported, not fatal: leakage would lift both systems alike
        sh([sd, "gold", "verify", work / "gold.parquet", "--against",
            work / "splits" / "train.parquet", "--report", work / "verify.json"], args,
           check=False)
        sh([sd, "render-template", "-t", model_dir, work / "splits" / "train.parquet",
            "-o", work / "rendered.parquet"], args)
        sh([sd, "tokenize", "-t", model_dir, "--max-len", str(args.max_len),
            "--report", work / "tokenize.json", work / "rendered.parquet",
            "-o", work / "tokens.parquet"], args)
        sh([sd, "pack", work / "tokens.parquet", "--seq-len", str(args.seq_len),
            "-o", work / "shards"], args)
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    verify = json.loads((work / "verify.json").read_text())
    overlap = [{k: o.get(k) for k in ("gold_id", "train_id", "confidence", "evidence")}
               for o in verify.get("overlap", [])]
    return {"gold_verify": {"ok": verify.get("ok"), "lock_ok": verify.get("lock_ok"),
                            "overlap": overlap},
            "dedup_dropped": sum(1 for _ in open(work / "dupes.jsonl")),"train_documents": train["documents"], "train_sequences": train["sequences"],
            "train_tokens": train["tokens"], "train_supervised": train["supervised_tokens"],
            "packing_efficiency": train["efficiency"], "splits": sorted(manifest["splits"]),
            "seq_len": manifest["seq_len"]}


# ------------------------------------------------------------------------------ training


def shared_overrides(args, steps: int) -> list[str]:
    """The sfttrain config both sides follow (TRL's SFTConfig is built from the same values)."""
    return [f"lora_r={args.lora_r}", f"lora_alpha={args.lora_alpha}",
            f"lora_dropout={args.lora_dropout}", "lora_targets=all-linear", f"lr={args.lr}",
            "scheduler=cosine", "warmup_steps=0", "warmup_ratio=0", "weight_decay=0",
            "max_grad_norm=1.0", f"micro_batch={args.micro_batch}", "grad_accum=1",
            f"max_steps={steps}", f"seed={args.seed}", "dtype=fp32", "attn=sdpa",
            f"grad_checkpointing={'true' if args.grad_checkpointing else 'false'}"]


def run_ours(args, work: Path, gguf: Path, quant: str, steps: int, name: str = "") -> dict:
    from sfttrain.config import keys

    name = name or f"ours-{quant}"
    out = work / "runs" / name
    extra = ["save_every=100000", "keep_best=false"]
    known = set(keys())
    if "eval_every" in known:
        extra.append("eval_every=0" if _eval_every_zero_ok() else "eval_every=100000")
    if "quant_check" in known:  # the extra unquantized pass would add time and RSS TRL has not
        extra.append("quant_check=false")
    cmd = [BIN / "sfttrain", "run", work / "shards", "--model", gguf, "--quant", quant,
           "-o", out, "--no-resume", *shared_overrides(args, steps), *extra]
    load_start = loadavg()
    started = time.perf_counter()
    sh(cmd, args, log=work / f"train-{name}.log")
    wall = time.perf_counter() - started
    s = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    losses = [m["loss"] for m in metrics if "loss" in m]
    return {"system": "ours", "quant": quant, "run_dir": str(out), "steps": s["steps"],
            "tokens": s["tokens"], "seconds": s["seconds"], "tokens_per_s": s["tokens_per_s"],
            "peak_rss_bytes": s["peak_memory_bytes"],
            "rss_before_model_bytes": s["rss_before_model_bytes"], "process_wall_s": round(wall, 1),
            "losses": losses, "load_start": load_start, "load_end": loadavg(),
            "tokens_per_step": s["tokens"] / max(s["steps"], 1)}


def _eval_every_zero_ok() -> bool:
    from sfttrain.config import RANGES

    low = RANGES.get("eval_every", (1, None, True))[0]
    return low <= 0


def run_trl(args, work: Path, quant: str, steps: int, name: str = "") -> dict:
    name = name or f"trl-{quant}"
    out = work / "runs" / name
    cmd = [sys.executable, __file__, "--child", "trl", "--child-quant", quant,
           "--child-steps", str(steps), "--child-name", name, "--work", work, *_forward(args)]
    load_start = loadavg()
    started = time.perf_counter()
    proc = sh(cmd, args, log=work / f"train-{name}.log")
    wall = time.perf_counter() - started
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[-1][7:])
    result.update(run_dir=str(out), process_wall_s=round(wall, 1), load_start=load_start,
                  load_end=loadavg())
    return result


def _forward(args) -> list[str]:
    out = ["--seq-len", str(args.seq_len), "--micro-batch", str(args.micro_batch),
           "--lr", str(args.lr), "--lora-r", str(args.lora_r), "--lora-alpha", str(args.lora_alpha),
           "--lora-dropout", str(args.lora_dropout), "--seed", str(args.seed),
           "--threads", str(args.threads)]
    return out + (["--grad-checkpointing"] if args.grad_checkpointing else [])


def child_trl(args) -> dict:
    """TRL SFTTrainer on the same tokenized documents; prints RESULT {json}."""
    import torch

    torch.set_num_threads(args.threads)
    import peft  # noqa: F401
    import pyarrow.parquet as pq
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from sfttrain import model as M
    from sfttrain.config import build_config, to_dict

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    work = Path(args.work)
    quant, steps = args.child_quant, args.child_steps
    out = work / "runs" / (args.child_name or f"trl-{quant}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    gguf = fetch_model()
    model_dir = M.resolve_model_dir(gguf)
    manifest = json.loads((work / "shards" / "manifest.json").read_text())

    table = pq.read_table(work / "tokens.parquet", columns=["input_ids", "labels"]).to_pydict()
    data = Dataset.from_dict({
        "input_ids": table["input_ids"],
        "completion_mask": [[int(x != -100) for x in labels] for labels in table["labels"]],
    })
    kwargs = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    if quant == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32)
        kwargs["device_map"] = {"": "cpu"}
        M.quiet_bitsandbytes()
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    pinned = M.keep_dequantize_path(model) if quant == "nf4" else 0
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = SFTConfig(
        output_dir=str(out / "trainer"), max_length=args.seq_len, packing=True,
        packing_strategy="bfd", completion_only_loss=True,
        per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=1,
        max_steps=steps, learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0,
        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=1.0, optim="adamw_torch", seed=args.seed, data_seed=args.seed,
        gradient_checkpointing=args.grad_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if args.grad_checkpointing else None,
        bf16=False, fp16=False, use_cpu=True, logging_steps=1, save_strategy="no",
        eval_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        include_num_input_tokens_seen="all",
    )
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora)
    packed = trainer.train_dataset
    rows = len(packed)
    adapter_dtypes = sorted({str(p.dtype)[6:] for p in trainer.model.parameters()
                             if p.requires_grad})
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tokens = int(trainer.state.num_input_tokens_seen)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    # A run directory `sfttrain generate` reads exactly like one of ours.
    trainer.model.save_pretrained(out / "adapter")
    tokenizer.save_pretrained(out / "tokenizer")
    overrides = shared_overrides(args, steps) + [f"quant={quant}", "keep_best=false"]
    info = {"model": str(gguf.resolve()), "model_dir": str(Path(model_dir).resolve()),
            "shards": str((work / "shards").resolve()),
            "config": to_dict(build_config(None, overrides)), "template": manifest.get("template"),
            "tokenizer": manifest.get("tokenizer"), "eos_id": manifest.get("eos_id"),
            "pad_id": manifest.get("pad_id"), "trainer": f"trl {trl.__version__}"}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out / "trainer", ignore_errors=True)
    result = {"system": "trl", "quant": quant, "steps": int(trainer.state.global_step),
              "tokens": tokens, "seconds": round(seconds, 3),
              "tokens_per_s": round(tokens / seconds, 1), "peak_rss_bytes": int(peak),
              "rss_before_model_bytes": int(rss_before), "losses": losses,
              "packed_rows": rows, "tokens_per_step": tokens / max(trainer.state.global_step, 1),
              "nf4_layers_pinned": pinned, "adapter_dtypes": adapter_dtypes,
              "threads": torch.get_num_threads(), "trl": trl.__version__,
              "transformers": transformers.__version__}
    print("RESULT " + json.dumps(result), flush=True)
    return result


# ------------------------------------------------------------------------------ generation, scores


def generate(args, work: Path, name: str, model: Path | str, template_from: Path | None) -> dict:
    out = work / "preds" / f"{name}.jsonl"
    out.parent.mkdir(exist_ok=True)
    if args.reuse and out.is_file():
        print(f"generate {name}: reusing {out}")
        return {"seconds": None}
    cmd = [BIN / "sfttrain", "generate", model, "--records", work / "gold.parquet",
           "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.gen_batch),
           "--stop", "\n", "--device", "cpu", "-o", out]
    if template_from is not None:
        cmd += ["--template", template_from]
    started = time.perf_counter()
    sh(cmd, args)
    return {"seconds": round(time.perf_counter() - started, 1)}


def score(args, work: Path, name: str) -> dict:
    """`sftdata gold score` for the report; the per-item correctness from the same library
    function (checked to give the same accuracy) for the bootstrap and the paired tests."""
    import polars as pl

    from sftdata.ops.gold import score as gold_score

    report_path = work / "scores" / f"{name}.json"
    report_path.parent.mkdir(exist_ok=True)
    preds_path = work / "preds" / f"{name}.jsonl"
    sh([BIN / "sftdata", "gold", "score", work / "gold.parquet", preds_path,
        "--show-worst", "0", "--report", report_path], args)
    report = json.loads(report_path.read_text())["tasks"]["classification"]
    gold = pl.read_parquet(work / "gold.parquet")
    frame = gold_score(gold, pl.read_ndjson(preds_path)).examples
    by_id = dict(zip(frame["id"].to_list(), frame["score"].to_list(), strict=True))
    preds = {r["id"]: r["prediction"] for r in pl.read_ndjson(preds_path).to_dicts()}
    ids = gold["id"].to_list()
    correct = [int(by_id[i]) for i in ids]
    assert abs(sum(correct) / len(ids) - report["metrics"]["accuracy"]) < 1e-12, name
    return {"report": report, "ids": ids, "correct": correct,
            "predictions": [preds[i].strip() for i in ids],
            "references": gold["label"].to_list()}


def label_codes(refs: list[str], preds: list[str]):
    import numpy as np

    labels = sorted(set(refs))
    index = {label: i for i, label in enumerate(labels)}
    return (np.array([index[r] for r in refs]), np.array([index.get(p, -1) for p in preds]),
            labels)


def macro_f1_samples(ref, pred, n_labels: int, idx):
    """Macro-F1 over the fixed gold labels for every bootstrap resample (rows of idx)."""
    import numpy as np

    r, p = ref[idx], pred[idx]
    scores = []
    for k in range(n_labels):
        tp = ((r == k) & (p == k)).sum(1)
        denom = (p == k).sum(1) + (r == k).sum(1)
        scores.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
    return np.mean(scores, axis=0)


def mcnemar_exact(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def statistics(scores: dict[str, dict], args) -> tuple[dict, dict]:
    import numpy as np

    from sftdata.metrics import macro_f1

    rng = np.random.default_rng(args.seed)
    any_score = next(iter(scores.values()))
    n = len(any_score["ids"])
    idx = rng.integers(0, n, size=(args.bootstrap, n))
    summary, samples = {}, {}
    for name, s in scores.items():
        ref, pred, labels = label_codes(s["references"], s["predictions"])
        correct = np.array(s["correct"], dtype=float)
        acc = correct[idx].mean(1)
        f1 = macro_f1_samples(ref, pred, len(labels), idx)
        point_f1 = macro_f1(s["references"], [p if p in labels else "(other)"
                                              for p in s["predictions"]], labels)
        assert abs(point_f1 - s["report"]["metrics"]["macro_f1"]) < 1e-12, name
        samples[name] = (correct, acc, f1)
        summary[name] = {
            "accuracy": s["report"]["metrics"]["accuracy"],
            "accuracy_ci95": [float(np.percentile(acc, 2.5)), float(np.percentile(acc, 97.5))],
            "macro_f1": point_f1,
            "macro_f1_ci95": [float(np.percentile(f1, 2.5)), float(np.percentile(f1, 97.5))],
            "invalid_label_rate": s["report"]["metrics"]["invalid_label_rate"],
            "confusion_matrix": s["report"].get("confusion_matrix"),
        }
    paired = {}
    for quant in args.quants:
        a, b = f"ours-{quant}", f"trl-{quant}"
        if a not in samples or b not in samples:
            continue
        ca, acc_a, f1_a = samples[a]
        cb, acc_b, f1_b = samples[b]
        d_acc, d_f1 = acc_a - acc_b, f1_a - f1_b
        only_a = int(((ca == 1) & (cb == 0)).sum())
        only_b = int(((ca == 0) & (cb == 1)).sum())
        paired[quant] = {
            "accuracy_diff": summary[a]["accuracy"] - summary[b]["accuracy"],
            "accuracy_diff_ci95": [float(np.percentile(d_acc, 2.5)),
                                   float(np.percentile(d_acc, 97.5))],
            "accuracy_diff_p_bootstrap": _boot_p(d_acc),
            "mcnemar_ours_only_right": only_a, "mcnemar_trl_only_right": only_b,
            "mcnemar_p_exact": mcnemar_exact(only_a, only_b),
            "macro_f1_diff": summary[a]["macro_f1"] - summary[b]["macro_f1"],
            "macro_f1_diff_ci95": [float(np.percentile(d_f1, 2.5)),
                                   float(np.percentile(d_f1, 97.5))],
            "macro_f1_diff_p_bootstrap": _boot_p(d_f1),
            "same_prediction_rate": sum(x == y for x, y in zip(
                scores[a]["predictions"], scores[b]["predictions"], strict=True)) / n,
        }
    return summary, paired


def _boot_p(diff) -> float:
    """Two-sided paired-bootstrap p-value for a difference of zero."""
    import numpy as np

    return float(min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))))


def majority_scores(gold_scores: dict) -> dict:
    refs = gold_scores["references"]
    counts = {r: refs.count(r) for r in set(refs)}
    top = min(counts, key=lambda r: (-counts[r], r))
    return {"report": {"metrics": gold_scores["report"]["baselines"]["majority"]},
            "ids": gold_scores["ids"], "references": refs, "predictions": [top] * len(refs),
            "correct": [int(r == top) for r in refs]}


def speed_phase(args, work: Path, gguf: Path, systems: list[str]) -> dict:
    """Short runs of --speed-steps, ours and TRL alternating (order flipped every repeat), so the
    load of a shared machine hits both alike: medians of tokens/s and of the per-repeat ratio."""
    import statistics as st

    raw: dict[str, list[dict]] = {}
    keep = ("steps", "tokens", "seconds", "tokens_per_s", "peak_rss_bytes",
            "rss_before_model_bytes", "load_start", "load_end")
    for quant in args.quants:
        for rep in range(args.speed_repeats):
            for system in (systems if rep % 2 == 0 else systems[::-1]):
                name = f"speed-{system}-{quant}-{rep}"
                print(f"\n== speed {name} (load average {loadavg()})", flush=True)
                r = (run_ours(args, work, gguf, quant, args.speed_steps, name) if system == "ours"
                     else run_trl(args, work, quant, args.speed_steps, name))
                shutil.rmtree(work / "runs" / name, ignore_errors=True)
                print(f"{name}: {r['tokens']:,} tokens in {r['seconds']:.1f} s = "
                      f"{r['tokens_per_s']:,.1f} tokens/s, peak RSS "
                      f"{r['peak_rss_bytes'] / GIB:.2f} GiB, load {r['load_start']} -> "
                      f"{r['load_end']}", flush=True)
                raw.setdefault(f"{system}-{quant}", []).append({k: r[k] for k in keep})
    summary = {}
    for quant in args.quants:
        a, b = raw.get(f"ours-{quant}", []), raw.get(f"trl-{quant}", [])
        if not a or not b:
            continue
        summary[quant] = {
            "ours_tokens_per_s": st.median(x["tokens_per_s"] for x in a),
            "trl_tokens_per_s": st.median(x["tokens_per_s"] for x in b),
            "ratio_of_medians": st.median(x["tokens_per_s"] for x in a)
            / st.median(x["tokens_per_s"] for x in b),
            "median_pair_ratio": st.median(x["tokens_per_s"] / y["tokens_per_s"]
                                           for x, y in zip(a, b, strict=False)),
            "ours_peak_rss_bytes": max(x["peak_rss_bytes"] for x in a),
            "trl_peak_rss_bytes": max(y["peak_rss_bytes"] for y in b),
        }
    return {"steps": args.speed_steps, "repeats": args.speed_repeats, "runs": raw,
            "summary": summary, "omp_wait_policy": OMP_WAIT_POLICY}


def speed_table(speed: dict) -> str:
    lines = [f"Speed: {speed['repeats']} repeat(s) of {speed['steps']} steps per side, "
             "alternating; tokens/s medians",
             "| quant | ours tokens/s | TRL tokens/s | ours / TRL (ratio of medians) | "
             "ours / TRL (median of per-repeat ratios) | ours peak RSS GiB | TRL peak RSS GiB | "
             "runs (ours; TRL tokens/s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for quant, x in speed["summary"].items():
        runs_a = ", ".join(f"{r['tokens_per_s']:.1f}" for r in speed["runs"][f"ours-{quant}"])
        runs_b = ", ".join(f"{r['tokens_per_s']:.1f}" for r in speed["runs"][f"trl-{quant}"])
        lines.append(f"| {quant} | {x['ours_tokens_per_s']:.1f} | {x['trl_tokens_per_s']:.1f} | "
                     f"{x['ratio_of_medians']:.2f}x | {x['median_pair_ratio']:.2f}x | "
                     f"{x['ours_peak_rss_bytes'] / GIB:.2f} | {x['trl_peak_rss_bytes'] / GIB:.2f} | "
                     f"{runs_a}; {runs_b} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ report


def ci(lo_hi) -> str:
    return f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"


def table(results: dict) -> str:
    s, runs, paired = results["scores"], results["runs"], results["paired"]
    lines = [
        f"AG News topics, gold set of {results['data']['gold']} (bootstrap {results['args']['bootstrap']} "
        f"resamples, 95% percentile intervals)",
        "| system | quant | accuracy [95% CI] | macro-F1 [95% CI] | invalid | train tokens/s "
        "| peak RSS GiB | RSS over pre-model GiB | train s | steps | tokens/step | final loss* |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = ["majority", "base"] + [f"{x}-{q}" for q in results["args"]["quants"]
                                    for x in ("ours", "trl")]
    labels = {"majority": ("majority class (from gold)", "-"),
              "base": ("base model, untrained", "none")}
    for q in results["args"]["quants"]:
        labels[f"ours-{q}"] = ("ours: sfttrain run", q)
        labels[f"trl-{q}"] = ("TRL SFTTrainer", q)
    for name in [n for n in names if n in s]:
        x, r = s[name], runs.get(name)
        label, quant = labels[name]
        if r:
            tail = (f"{r['tokens_per_s']:,.1f} | {r['peak_rss_bytes'] / GIB:.2f} | "
                    f"{(r['peak_rss_bytes'] - r['rss_before_model_bytes']) / GIB:.2f} | "
                    f"{r['seconds']:.0f} | {r['steps']} | {r['tokens_per_step']:.0f} | "
                    f"{_tail_loss(r['losses']):.3f}")
        else:
            tail = " | ".join(["-"] * 7)
        lines.append(f"| {label} | {quant} | {x['accuracy']:.3f} {ci(x['accuracy_ci95'])} | "
                     f"{x['macro_f1']:.3f} {ci(x['macro_f1_ci95'])} | "
                     f"{x['invalid_label_rate']:.3f} | {tail} |")
    lines.append("* mean train loss of the last 10 optimizer steps")
    lines += ["", "Paired, ours - TRL on the same gold items:",
              "| quant | accuracy diff [95% CI] | p (bootstrap) | McNemar ours-only / TRL-only right, "
              "exact p | macro-F1 diff [95% CI] | p (bootstrap) | same prediction | "
              "tokens/s ours / TRL | peak RSS ours / TRL |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for quant, p in paired.items():
        a, b = runs[f"ours-{quant}"], runs[f"trl-{quant}"]
        lines.append(
            f"| {quant} | {p['accuracy_diff']:+.3f} {ci(p['accuracy_diff_ci95'])} | "
            f"{p['accuracy_diff_p_bootstrap']:.3f} | {p['mcnemar_ours_only_right']} / "
            f"{p['mcnemar_trl_only_right']}, {p['mcnemar_p_exact']:.3f} | "
            f"{p['macro_f1_diff']:+.3f} {ci(p['macro_f1_diff_ci95'])} | "
            f"{p['macro_f1_diff_p_bootstrap']:.3f} | {p['same_prediction_rate']:.3f} | "
            f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x | "
            f"{a['peak_rss_bytes'] / b['peak_rss_bytes']:.2f}x |")
    return "\n".join(lines)


def _tail_loss(losses: list[float]) -> float:
    tail = losses[-10:]
    return sum(tail) / len(tail) if tail else float("nan")


# ------------------------------------------------------------------------------ driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(CSV), help="AG News CSV (read in place)")
    parser.add_argument("--template", default=TEMPLATE, help="convert --template (prompt)")
    parser.add_argument("--train-records", type=int, default=256,
                        help="train split size (exact, stratified by label)")
    parser.add_argument("--test-records", type=int, default=300,
                        help="test split size; the gold set is frozen from it")
    parser.add_argument("--gold", type=int, default=200, help="gold set size")
    parser.add_argument("--max-len", type=int, default=256, help="tokenize --max-len")
    parser.add_argument("--seq-len", type=int, default=512, help="pack --seq-len = TRL max_length")
    parser.add_argument("--steps", type=int, default=0,
                        help="optimizer steps, both sides (0: one epoch of our packed rows)")
    parser.add_argument("--micro-batch", type=int, default=1, help="packed rows per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="gradient checkpointing on both sides (default off: 135M fits)")
    parser.add_argument("--quants", default="none,nf4")
    parser.add_argument("--systems", default="ours,trl")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--gen-batch", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--speed-repeats", type=int, default=3,
                        help="speed phase: alternating short runs per side and quant (0: skip)")
    parser.add_argument("--speed-steps", type=int, default=8, help="steps of a speed run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true",
                        help="keep shards, finished runs and predictions already in --work")
    parser.add_argument("--work", default=str(ROOT / "bench" / "out" / "parity"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-quant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-name", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_trl(args)
        return
    args.quants = [q for q in args.quants.split(",") if q]
    systems = [s for s in args.systems.split(",") if s]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[key] = "1"  # nothing from a hub, in this process and its children
    t0 = time.perf_counter()
    load_start = loadavg()
    print(f"load average at start: {load_start} ({os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}); threads per side {args.threads}",
          flush=True)

    from sfttrain.model import resolve_model_dir

    gguf = fetch_model()
    model_dir = resolve_model_dir(gguf)
    data = prepare(args, work, gguf, model_dir)
    data["gold"] = args.gold
    steps = args.steps or data["train_sequences"] // args.micro_batch
    print(f"train: {data['train_documents']} documents, {data['train_sequences']} packed rows, "
          f"{data['train_tokens']:,} tokens ({data['train_supervised']:,} supervised); "
          f"{steps} optimizer steps of {args.micro_batch} row(s) on both sides", flush=True)

    runs: dict[str, dict] = {}
    old = work / "results.json"
    earlier = json.loads(old.read_text()) if args.reuse and old.is_file() else {}
    previous = earlier.get("runs", {})
    for quant in args.quants:  # interleaved, so load on a shared machine hits both alike
        for system in systems:
            name = f"{system}-{quant}"
            if name in previous and (Path(previous[name]["run_dir"]) / "adapter").is_dir():
                print(f"train {name}: reusing {previous[name]['run_dir']}")
                runs[name] = previous[name]
                continue
            print(f"\n== train {name} (load average {loadavg()})", flush=True)
            runs[name] = (run_ours(args, work, gguf, quant, steps) if system == "ours"
                          else run_trl(args, work, quant, steps))
            r = runs[name]
            print(f"{name}: {r['steps']} steps, {r['tokens']:,} tokens in {r['seconds']:.0f} s = "
                  f"{r['tokens_per_s']:,.1f} tokens/s, peak RSS {r['peak_rss_bytes'] / GIB:.2f} GiB, "
                  f"load {r['load_start']} -> {r['load_end']}", flush=True)
            (work / "results.json").write_text(json.dumps({"runs": runs}, indent=2) + "\n")

    print(f"\n== generate and score (load average {loadavg()})", flush=True)
    generation = {"base": generate(args, work, "base", gguf, work / "shards")}
    for name, r in runs.items():
        generation[name] = generate(args, work, name, Path(r["run_dir"]), None)
    scores = {name: score(args, work, name) for name in generation}
    scores["majority"] = majority_scores(scores["base"])
    summary, paired = statistics(scores, args)
    load_end = loadavg()
    results = {
        "task": "AG News topic classification (title only), SmolLM2-135M-Instruct",
        "args": {**vars(args), "systems": systems, "steps_resolved": steps},
        "model": str(gguf), "model_dir": str(model_dir), "data": data, "runs": runs,
        "generation_seconds": {k: v["seconds"] if v["seconds"] is not None else
                               earlier.get("generation_seconds", {}).get(k)
                               for k, v in generation.items()},
        "scores": summary, "paired": paired, "load_start": load_start, "load_end": load_end,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "earlier_invocations": earlier.get("earlier_invocations", []) + (
            [{k: earlier.get(k) for k in ("wall_seconds", "load_start", "load_end")}]
            if earlier else []),
        "versions": _versions(),
    }
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    if args.speed_repeats:
        old_speed = earlier.get("speed")  # (results.json was rewritten above, without it)
        same = (args.speed_steps, args.speed_repeats, OMP_WAIT_POLICY)
        if old_speed and (old_speed["steps"], old_speed["repeats"],
                          old_speed.get("omp_wait_policy")) == same:
            results["speed"] = old_speed
        else:
            results["speed"] = speed_phase(args, work, gguf, systems)
        results["load_end"] = load_end = loadavg()
        results["wall_seconds"] = round(time.perf_counter() - t0, 1)
        (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print()
        print(table(results))
        print()
        print(speed_table(results["speed"]))
    print(f"\nwall {results['wall_seconds']:.0f} s; load average at start {load_start}, "
          f"at end {load_end}; figures in {work / 'results.json'}")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "peft", "bitsandbytes", "trl", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


if __name__ == "__main__":
    main()
