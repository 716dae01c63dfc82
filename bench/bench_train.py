"""QLoRA throughput and peak memory: sfttrain vs TRL's SFTTrainer (default, and packing on).

Same model architecture (random weights: speed and memory do not depend on weight values), same
LoRA config (r 16, alpha 32, dropout 0.05, all linear layers, NF4 + double quantization),
same documents (seeded synthetic chats: 40% prompt masked, lognormal lengths), same sequence
length, gradient checkpointing on, one epoch. Each system runs in its own process so peak
memory is its own: torch.cuda.max_memory_allocated on a GPU, peak RSS on a CPU.

    .venv/bin/python bench/bench_train.py --quick                  # CPU, small shape, ~10 min
    .venv/bin/python bench/bench_train.py --quick --plan-check     # plan vs measured memory
    python3 bench/bench_train.py --shape smollm2 --seq-len 2048    # GPU
    python3 bench/bench_train.py --shape llama3-8b --seq-len 2048 --docs 400   # GPU

tokens/s counts real (non-pad) tokens over the training loop only (model loading excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    # hidden, intermediate, layers, heads, kv_heads, vocab, tied
    "cpu-small": (256, 688, 4, 4, 2, 8192, False),
    "smollm2": (576, 1536, 30, 9, 3, 49152, True),
    "llama3-8b": (4096, 14336, 32, 32, 8, 128256, False),
}
LORA = dict(r=16, alpha=32, dropout=0.05)


def make_model(shape: str, out: Path) -> Path:
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    d, ff, layers, heads, kv, vocab, tied = SHAPES[shape]
    config = LlamaConfig(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                         tie_word_embeddings=tied, max_position_embeddings=8192,
                         eos_token_id=3, pad_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(ROOT / "fixtures" / "tokenizers" / "tiny-chatml")
    tok.save_pretrained(out)
    return out


def make_docs(n: int, seq_len: int, vocab: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(seq_len / 6), 0.7, size=n), 16, seq_len).astype(int)
    docs = []
    for n_tok in lengths:
        ids = rng.integers(16, vocab, size=n_tok).astype(np.int32)
        prompt = int(n_tok * 0.4)
        labels = ids.copy()
        labels[:prompt] = -100
        docs.append((ids, labels))
    return docs


def write_packed_shards(docs, seq_len: int, out: Path, tokenizer_dir: Path) -> Path:
    """Best-fit decreasing packing, as `sftdata pack` does, written with sftdata.shards."""
    import numpy as np
    from transformers import AutoTokenizer

    from sftdata.shards import ShardWriter, tokenizer_fingerprint, write_manifest

    order = sorted(range(len(docs)), key=lambda i: -docs[i][0].size)
    bins: list[list[int]] = []
    space: list[int] = []
    for i in order:
        size = docs[i][0].size
        fits = [b for b in range(len(bins)) if space[b] >= size]
        if fits:
            best = min(fits, key=lambda b: space[b])
            bins[best].append(i)
            space[best] -= size
        else:
            bins.append([i])
            space.append(seq_len - size)
    writer = ShardWriter(out, "train")
    for members in bins:
        writer.add(np.concatenate([docs[i][0] for i in members]),
                   np.concatenate([docs[i][1] for i in members]),
                   [docs[i][0].size for i in members], [f"d{i}" for i in members])
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    write_manifest(out, {"seq_len": seq_len, "pad_id": 1, "eos_id": 3, "label_pad": -100,
                         "tokenizer": {"backend": "hf", "name": "bench",
                                       "vocab_hash": tokenizer_fingerprint(tok.get_vocab())},
                         "template": {"name": "none", "hash": None, "text": None},
                         "splits": {"train": writer.close(seq_len)}})
    return out


# ------------------------------------------------------------------------------ children


def child_ours(args) -> dict:
    from sfttrain.config import build_config
    from sfttrain.train import run

    shards = Path(args.work) / "shards"
    config = build_config(None, [
        f"lora_r={LORA['r']}", f"lora_alpha={LORA['alpha']}", f"lora_dropout={LORA['dropout']}",
        "micro_batch=1", "grad_accum=1", "epochs=1", "save_every=100000", "lr=2e-4",
        "warmup_steps=0", "log_every=100000"])
    result = run(shards, Path(args.work) / "model", config, Path(args.work) / "run-ours",
                 resume=False, say=lambda *_: None, warn=lambda *_: None)
    s = result.summary
    return {"tokens": s["tokens"], "seconds": s["seconds"], "tokens_per_s": s["tokens_per_s"],
            "peak_bytes": s["peak_memory_bytes"], "steps": s["steps"]}


def child_trl(args, packing: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    docs = make_docs(args.docs, args.seq_len, SHAPES[args.shape][5], args.seed)
    data = Dataset.from_dict({
        "input_ids": [d[0].tolist() for d in docs],
        "completion_mask": [(d[1] != -100).astype(int).tolist() for d in docs],
    })
    model_dir = Path(args.work) / "model"
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant,
                                                 dtype=dtype, device_map={"": 0 if cuda else "cpu"},
                                                 attn_implementation=args.attn)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # TRL default: one document per row, padded to the longest in the batch; the batch size
    # holds as many documents as one of our packed sequences, so both see the same tokens/step.
    per_seq = max(1, round(args.seq_len / statistics.mean(d[0].size for d in docs)))
    config = SFTConfig(
        output_dir=str(Path(args.work) / f"run-trl-{packing}"), max_length=args.seq_len,
        packing=packing, per_device_train_batch_size=1 if packing else per_seq,
        num_train_epochs=1, learning_rate=2e-4, lr_scheduler_type="cosine",
        gradient_checkpointing=True, bf16=cuda, use_cpu=not cuda, logging_steps=100000,
        save_strategy="no", report_to=[], dataloader_num_workers=0, seed=args.seed,
        completion_only_loss=True,
    )
    lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = int(sum(d[0].size for d in docs))
    peak = torch.cuda.max_memory_allocated() if cuda else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": tokens / seconds,
            "peak_bytes": int(peak), "steps": trainer.state.global_step}


# ------------------------------------------------------------------------------ driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU-sized: cpu-small, 512, 48 docs")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--systems", default="ours,trl,trl-packing")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(ROOT / "bench" / "out" / "train"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plan-check", action="store_true",
                        help="compare `sfttrain plan` with measured peak memory instead")
    args = parser.parse_args()
    if args.quick:
        args.shape, args.seq_len, args.docs = "cpu-small", 512, 48
    if args.child:
        out = {"ours": child_ours, "trl": lambda a: child_trl(a, False),
               "trl-packing": lambda a: child_trl(a, True)}[args.child](args)
        print("RESULT " + json.dumps(out), flush=True)
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = make_model(args.shape, work / "model")
    docs = make_docs(args.docs, args.seq_len, SHAPES[args.shape][5], args.seed)
    import shutil

    shutil.rmtree(work / "shards", ignore_errors=True)
    write_packed_shards(docs, args.seq_len, work / "shards", model_dir)
    if args.plan_check:
        plan_check(args, work)
        return
    results: dict[str, list[dict]] = {}
    systems = args.systems.split(",")
    for _ in range(args.repeats):  # interleaved, so load on a shared machine hits all alike
        for system in systems:
            cmd = [sys.executable, __file__, "--child", system, "--shape", args.shape,
                   "--seq-len", str(args.seq_len), "--docs", str(args.docs), "--attn", args.attn,
                   "--seed", str(args.seed), "--work", str(work)]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{system}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            results.setdefault(system, []).append(json.loads(line[0][7:]))
    report(args, results)


def plan_check(args, work: Path) -> None:
    """`sfttrain plan` against measured runs: micro-batch 1 and 4, checkpointing on and off."""
    import torch

    from sftdata.shards import ShardReader
    from sfttrain.config import build_config
    from sfttrain.plan import model_shape, predict

    cuda = torch.cuda.is_available()
    longest = int(ShardReader(work / "shards", "train").lengths().max())
    kind = "max_memory_allocated" if cuda else "peak RSS - RSS before model load"
    print(f"plan check ({kind}), shape {args.shape}, longest packed sequence {longest}")
    print("| micro_batch | checkpointing | predicted GiB | measured GiB | error |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for ckpt in ("true", "false"):
        for mb in (1, 4):
            overrides = [f"micro_batch={mb}", f"grad_checkpointing={ckpt}", "max_steps=2",
                         f"lora_r={LORA['r']}", f"lora_alpha={LORA['alpha']}",
                         "save_every=100000"]
            out = work / f"plan-{mb}-{ckpt}"
            cmd = [sys.executable, "-m", "sfttrain", "run", str(work / "shards"), "--model",
                   str(work / "model"), "-o", str(out), "--no-resume", *overrides]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode:
                print(proc.stderr[-2000:], file=sys.stderr)
                continue
            summary = json.loads((out / "summary.json").read_text())
            measured = summary["peak_memory_bytes"] - (0 if cuda else
                                                       summary["rss_before_model_bytes"])
            config = build_config(None, overrides)
            predicted = predict(model_shape(work / "model"), config, longest,
                                act_bytes=2 if cuda else 4).total
            print(f"| {mb} | {ckpt} | {predicted / 2**30:.3f} | {measured / 2**30:.3f} | "
                  f"{predicted / measured - 1:+.0%} |")


def report(args, results: dict[str, list[dict]]) -> None:
    print(f"shape {args.shape}, seq_len {args.seq_len}, {args.docs} docs, "
          f"{args.repeats} repeat(s), attention {args.attn}")
    print("| system | tokens/s (median) | peak memory GiB (max) | ours / system tokens/s |")
    print("| --- | ---: | ---: | ---: |")
    ours = statistics.median(r["tokens_per_s"] for r in results.get("ours", [{"tokens_per_s": 0}]))
    for system, runs in results.items():
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        peak = max(r["peak_bytes"] for r in runs) / 2**30
        ratio = f"{ours / tps:.2f}x" if tps else "n/a"
        print(f"| {system} | {tps:,.0f} | {peak:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
