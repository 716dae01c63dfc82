"""Benchmark: `leakcheck` on 100k training records against ~15k benchmark items.

Training records are built from real text in ../shared/realdata: every sentence of the
Alpaca demo, GPTeacher roleplay and toolformer, GSM8K-in-Alpaca, the C4 demo and AG News goes
into a pool, and each synthetic record joins 2-6 sentences drawn with a seeded RNG, so the
word statistics are real and the texts distinct. 1% of the records are benchmark items with
light edits (planted contamination). References: GSM8K test + MMLU test (15,361 items).

Compared side by side, in the same run, on the same data:
  baseline   the lm-eval / GPT-3 way: a Python set of the benchmark's 13-grams, each training
             record's 13-grams looked up one by one (n-gram evidence only)
  ours-ngram sftdata leakcheck with --no-near (exact + 13-gram + short items)
  ours-full  sftdata leakcheck with everything (adds MinHash near-duplicates, both cores)

Run:  .venv/bin/python bench/bench_leakcheck.py [--quick] [--records N] [--repeats R]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import polars as pl
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "realdata"

from sftdata.ops.leakcheck import leakcheck  # noqa: E402
from sftdata.schema import from_dicts  # noqa: E402
from sftdata.text import normalize, words  # noqa: E402

SENTENCE = re.compile(r"(?<=[.!?])\s+")


def qa(rid: str, question: str, answer: str) -> dict:
    return {"id": rid, "messages": [{"role": "user", "content": question},
                                    {"role": "assistant", "content": answer}]}


def sentence_pool() -> list[str]:
    texts: list[str] = []
    alpaca = REAL / "datasets" / "alpaca_format"
    for name in ("llamafactory_alpaca_en_demo.json", "alpacacleaned_gpteacher_roleplay_deduped.json",
                 "alpacacleaned_gpteacher_toolformer_sim0.6.json", "alpacacleaned_gsm_8k_train.json"):
        for row in json.loads((alpaca / name).read_text()):
            texts += [row["instruction"], row.get("input") or "", row["output"]]
    for line in (REAL / "datasets" / "pretrain_text" / "llamafactory_c4_demo.jsonl").open():
        texts.append(json.loads(line)["text"])
    with open(REAL / "datasets" / "classification" / "ag_news_samples.csv", newline="") as fh:
        texts += [" ".join(row) for row in csv.reader(fh)]
    pool = [s.strip() for t in texts for s in SENTENCE.split(t) if len(s.split()) >= 4]
    return sorted(set(pool))


def references() -> dict[str, pl.DataFrame]:
    gsm = [json.loads(line) for line in (REAL / "benchmarks" / "gsm8k" / "test.jsonl").open()]
    mmlu = []
    for path in sorted((REAL / "benchmarks" / "mmlu" / "test").glob("*.csv")):
        with open(path, newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                choices = "\n".join(f"{c}. {row[f'choice{k}']}" for k, c in enumerate("ABCD"))
                mmlu.append(qa(f"{path.stem}-{i}", f"{row['question']}\n{choices}",
                               "ABCD"[int(row["answer"])]))
    return {
        "gsm8k_test": from_dicts([qa(f"gsm8k-{i}", r["question"], r["answer"])
                                  for i, r in enumerate(gsm)]),
        "mmlu_test": from_dicts(mmlu),
    }


def training(n: int, refs: dict[str, pl.DataFrame], seed: int = 0) -> tuple[pl.DataFrame, set]:
    rng = random.Random(seed)
    pool = sentence_pool()
    items = [(name, m[0]["content"]) for name, df in refs.items() for m in df["messages"]]
    items = [it for it in items if len(words(normalize(it[1]))) >= 13]
    rows, planted = [], set()
    for i in range(n):
        if i % 100 == 0:  # 1% planted: a benchmark item inside a wrapper, case changed
            _, text = rng.choice(items)
            rows.append(qa(f"t{i}", "Question: " + text.lower() + "\nAnswer briefly.", "x"))
            planted.add(f"t{i}")
        else:
            k = rng.randint(2, 6)
            rows.append(qa(f"t{i}", " ".join(rng.sample(pool, k)), " ".join(rng.sample(pool, 2))))
    return from_dicts(rows), planted


def baseline_ngram(train: pl.DataFrame, refs: dict[str, pl.DataFrame], n: int = 13) -> set:
    """lm-eval style: Python set of the references' 13-grams, each record's 13-grams looked up."""
    index: set[tuple[str, ...]] = set()
    for df in refs.values():
        for msgs in df["messages"]:
            ws = words(normalize(msgs[0]["content"]))
            index.update(tuple(ws[k:k + n]) for k in range(len(ws) - n + 1))
    hits = set()
    for rid, msgs in zip(train["id"], train["messages"], strict=True):
        ws = words(normalize(msgs[0]["content"]))
        if any(tuple(ws[k:k + n]) in index for k in range(len(ws) - n + 1)):
            hits.add(rid)
    return hits


class PeakRSS:
    """Peak resident memory of this process and its children, sampled every 50 ms."""

    def __enter__(self) -> PeakRSS:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                rss = me.memory_info().rss + sum(
                    c.memory_info().rss for c in me.children(recursive=True)
                )
            except psutil.Error:
                rss = 0
            self.peak = max(self.peak, rss)
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the MinHash workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(runs: dict, repeats: int) -> dict[str, dict]:
    """Repeats interleaved (A, B, C, A, B, C, ...) so every run sees the same machine load."""
    out = {name: {"wall": [], "cpu": [], "peak": 0, "found": set()} for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            cpu = cpu_seconds()
            with PeakRSS() as rss:
                start = time.perf_counter()
                result = fn()
                out[name]["wall"].append(time.perf_counter() - start)
            out[name]["cpu"].append(cpu_seconds() - cpu)
            out[name]["peak"] = max(out[name]["peak"], rss.peak)
            out[name]["found"] = result if isinstance(result, set) else set(result.contaminated_ids)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k records, 1 repeat")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = 10_000 if args.quick else args.records
    repeats = 1 if args.quick else args.repeats

    refs = references()
    train, planted = training(n, refs)
    n_refs = sum(df.height for df in refs.values())
    print(f"{train.height} training records, {n_refs} reference items, {len(planted)} planted; "
          f"median of {repeats} interleaved repeats")

    runs = {
        "baseline (Python 13-gram set)": lambda: baseline_ngram(train, refs),
        "ours --no-near": lambda: leakcheck(train, refs, near=False),
        "ours full (with MinHash)": lambda: leakcheck(train, refs),
    }
    results = measure(runs, repeats)
    for name, r in results.items():
        wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
        recall = len(r["found"] & planted) / max(len(planted), 1)
        print(f"{name:30s} wall {wall:7.2f} s  cpu {cpu:7.2f} s  {train.height / wall:7.0f} rec/s  "
              f"peak RSS {r['peak'] / 2**30:4.2f} GiB  recall {recall:.3f}  "
              f"other flagged {len(r['found'] - planted)}")
    base = results["baseline (Python 13-gram set)"]
    for name, r in results.items():
        wall = statistics.median(base["wall"]) / statistics.median(r["wall"])
        cpu = statistics.median(base["cpu"]) / statistics.median(r["cpu"])
        print(f"  vs baseline: {name:30s} wall {wall:5.2f}x  cpu {cpu:5.2f}x")


if __name__ == "__main__":
    main()
