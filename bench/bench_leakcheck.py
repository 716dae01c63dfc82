"""Benchmark: `leakcheck` on 100k training records against ~15k benchmark items.

Training records are built from real text in ../shared/realdata: every sentence of the
instruction sets (Alpaca demo, GPTeacher, GSM8K-in-Alpaca, OASST prompts, C4 demo, AG News)
goes into a pool, and each synthetic record joins 2-6 sentences drawn with a seeded RNG, so the
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


def timed(fn, repeats: int) -> tuple[float, int, object]:
    times, peak, out = [], 0, None
    for _ in range(repeats):
        with PeakRSS() as rss:
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        peak = max(peak, rss.peak)
    return statistics.median(times), peak, out


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
          f"median of {repeats}")

    runs = {
        "baseline (Python 13-gram set)": lambda: baseline_ngram(train, refs),
        "ours --no-near": lambda: leakcheck(train, refs, near=False),
        "ours full (with MinHash)": lambda: leakcheck(train, refs),
    }
    results = {}
    for name, fn in runs.items():
        seconds, peak, out = timed(fn, repeats)
        found = out if isinstance(out, set) else set(out.contaminated_ids)
        results[name] = seconds
        recall = len(found & planted) / max(len(planted), 1)
        extra = len(found - planted)
        print(f"{name:32s} {seconds:8.2f} s  {train.height / seconds:9.0f} rec/s  "
              f"peak RSS {peak / 2**30:5.2f} GiB  recall {recall:.3f}  other flagged {extra}")
    base = results["baseline (Python 13-gram set)"]
    for name, seconds in results.items():
        print(f"  speed-up vs baseline: {name:32s} {base / seconds:6.2f}x")


if __name__ == "__main__":
    main()
