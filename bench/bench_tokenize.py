"""Benchmark: sftdata tokenize against the raw tokenizers and TRL's SFT dataset preparation.

Same data, same tokenizer, side by side in one run; medians of repeats and ratios.

  raw encode   ours = `tokenize` op on rendered records (ids, labels, Arrow columns)
               vs tiktoken `encode_ordinary_batch` and HF `Tokenizer.encode_batch` of the same texts
  vs TRL       ours = render-template + tokenize (messages -> input_ids + labels)
               vs TRL `SFTTrainer._prepare_dataset` with assistant_only_loss (apply_chat_template
               with the assistant mask, then labels), same Qwen2 tokenizer and TRL training template

Needs ../shared/realdata (conversations, Qwen2 vocab+merges, cl100k ranks) and, for the TRL
column, TRL (the `bench` extra, in requirements.lock, so `make venv` installs it).

  .venv/bin/python bench/bench_tokenize.py [--quick] [--rows N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REALDATA = Path(os.environ.get("SFT_REALDATA", ROOT.parent / "shared" / "realdata"))

from sftdata.ops.render_template import render_template  # noqa: E402
from sftdata.ops.tokenize import tokenize  # noqa: E402
from sftdata.schema import from_dicts  # noqa: E402
from sftdata.templates import load_template  # noqa: E402
from sftdata.tokenizers import load_tokenizer  # noqa: E402


def conversations(limit: int) -> list[list[dict]]:
    """Real chats: OpenAI fine-tuning rows, ShareGPT (FastChat), OASST best paths, Alpaca demo."""
    d = REALDATA / "datasets"
    chats = [json.loads(x)["messages"] for x in
             (d / "messages_format/openai_toy_chat_fine_tuning.jsonl").read_text().splitlines() if x.strip()]
    roles = {"human": "user", "gpt": "assistant"}
    for row in json.loads((d / "sharegpt_format/fastchat_dummy_conversation.json").read_text()):
        chats.append([{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]])
    for row in json.loads((d / "alpaca_format/llamafactory_alpaca_en_demo.json").read_text()):
        prompt = row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")
        chats.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}])
    chats = [c for c in chats if c and c[-1]["role"] == "assistant" and all(m["content"] for m in c)]
    return [chats[i % len(chats)] for i in range(limit)]


def paired(baseline, ours, repeats: int) -> tuple[float, float, float, float]:
    """Medians of interleaved runs (baseline, ours, baseline, ...): the shared machine's load
    drifts over minutes, and interleaving exposes both sides to the same drift. Wall seconds
    and CPU seconds of this process (all threads): our batch encode runs on every core, TRL's
    per-example map on one, so wall ratios depend on how many cores the other users leave
    free and the CPU ratio is the per-core one."""
    walls: tuple[list[float], list[float]] = ([], [])
    cpus: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for side, fn in enumerate((baseline, ours)):
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            walls[side].append(time.perf_counter() - start)
            cpus[side].append(time.process_time() - cpu)
    return (*map(statistics.median, walls), *map(statistics.median, cpus))


def trl_prepare(chats, hf_tok, template_text):
    """TRL's own preparation method, called on a stand-in trainer (no model needed)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=tempfile.mkdtemp(), assistant_only_loss=True, max_length=None,
                     report_to=[], dataset_num_proc=None, use_cpu=True, bf16=False)
    stand_in = types.SimpleNamespace(_tokenizer=hf_tok, chat_template=template_text,
                                     completion_only_loss=False)
    dataset = Dataset.from_list([{"messages": c} for c in chats])

    def run():
        return SFTTrainer._prepare_dataset(stand_in, dataset, hf_tok, args, packing=False,
                                           formatting_func=None, dataset_name="bench")
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1,000 rows, 3 repeats")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    opts = parser.parse_args()
    rows = opts.rows or (1000 if opts.quick else 10000)
    repeats = opts.repeats or (3 if opts.quick else 5)
    chats = conversations(rows)
    records = from_dicts([{"messages": c} for c in chats])
    print(f"{rows} conversations, {sum(len(c) for c in chats)} messages, {repeats} repeats (medians)")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    results = {}

    # -- tiktoken cl100k with ChatML specials -------------------------------------------------
    tk = load_tokenizer(str(REALDATA / "tokenizers/tiktoken/cl100k_base.tiktoken"),
                        specials={"<|im_start|>": 100264, "<|im_end|>": 100265})
    chatml = render_template(records, "chatml").records
    texts = chatml["text"].to_list()
    tokenize(chatml, tk)  # warm: the vocabulary hash is computed once per tokenizer
    results["tiktoken cl100k: raw encode_ordinary_batch / ours"] = paired(
        lambda: tk.enc.encode_ordinary_batch(texts), lambda: tokenize(chatml, tk), repeats)

    # -- HF Qwen2 tokenizer ------------------------------------------------------------------------
    hf = load_tokenizer(str(REALDATA / "tokenizers/qwen2_vocab_merges"))
    template = load_template(str(REALDATA / "chat_templates_trl/qwen2_5_training.jinja"))
    template = template.with_variables(hf.tok.special_tokens_map)
    qwen = render_template(records, template).records
    qtexts = qwen["text"].to_list()
    rust = hf.tok.backend_tokenizer
    tokenize(qwen, hf)
    results["HF Qwen2: raw encode_batch / ours tokenize"] = paired(
        lambda: rust.encode_batch(qtexts, add_special_tokens=False), lambda: tokenize(qwen, hf),
        repeats)

    # -- against TRL: messages -> input_ids + assistant labels ------------------------------------
    def ours_pipeline():
        return tokenize(render_template(records, template).records, hf)

    try:
        import datasets

        datasets.disable_progress_bars()
        trl_run = trl_prepare(chats, hf.tok, template.text)
    except ImportError:
        trl_run = None
        print("TRL not installed: skipping the TRL comparison")
    if trl_run is not None:
        prepared = trl_run()
        ours_out = ours_pipeline().records
        same = prepared["labels"] == ours_out["labels"].to_list()
        print(f"labels identical to TRL's on all {rows} rows: {same}")
        results["TRL _prepare_dataset / ours render+tokenize"] = paired(
            trl_run, ours_pipeline, repeats)

    # -- tokenizing freshly rendered text vs the same frame again (one process, interleaved) --
    parts: dict[str, list[tuple[float, float]]] = {"render": [], "fresh": [], "again": []}
    for _ in range(repeats):
        fresh = None
        for part in parts:
            start, cpu = time.perf_counter(), time.process_time()
            if part == "render":
                fresh = render_template(records, template).records
            else:
                tokenize(fresh, hf)
            parts[part].append((time.perf_counter() - start, time.process_time() - cpu))
    print("render, tokenize of the fresh frame, the same frame again (median wall / CPU s): "
          + ", ".join(f"{part} {statistics.median(w for w, _ in v):.3f} / "
                      f"{statistics.median(c for _, c in v):.3f}" for part, v in parts.items()))

    print()
    print(f"{'comparison':52s} {'baseline s':>10s} {'ours s':>8s} {'ours speed':>10s} "
          f"{'base CPU s':>10s} {'ours CPU s':>10s} {'per core':>8s}")
    for name, (base, mine, base_cpu, our_cpu) in results.items():
        print(f"{name:52s} {base:10.3f} {mine:8.3f} {base / mine:9.2f}x "
              f"{base_cpu:10.3f} {our_cpu:10.3f} {base_cpu / our_cpu:7.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:.0f} MiB")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
