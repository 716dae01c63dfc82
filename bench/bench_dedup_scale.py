"""dedup at 1M, 4M and 10M documents: wall time, CPU seconds and peak RSS, whole frame against
the memory budget path (issue 13, item 5).

The corpus is bench_dedup's synthetic ~200-word documents (words drawn from the unigram
distribution of the realdata texts, or a Zipf vocabulary without it; 10% near copies with 1-3%
of their words substituted, 2% exact copies upper-cased with doubled spaces), generated in
bulk a part at a time so 10M documents (13 GB of text) never sit in memory: a copy's source is
an earlier document of its part or, for 30% of copies, one of a reservoir of earlier parts'
documents. Parts are Parquet files of 250,000 rows (50,000-row groups) in one directory.

    .venv/bin/python bench/bench_dedup_scale.py --docs 1000000,4000000,10000000 --memory 3GiB \
        --whole-max 4000000    # and the one-frame path up to 4M

Each run is `sftdata dedup DIR/ -o kept/ --dupes dupes/ [--memory M]` as a subprocess; the
dropped ids are checked against the planted copies (a dropped original is a false positive).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_dedup import REALDATA, run_tracking_rss  # noqa: E402
from neardup_set import real_texts  # noqa: E402

PART_ROWS = 250_000
RESERVOIR = 20_000


def vocabulary() -> tuple[list[str], np.ndarray]:
    if REALDATA.is_dir():
        counts: dict[str, int] = {}
        for _, text in real_texts(REALDATA):
            for w in text.split():
                counts[w] = counts.get(w, 0) + 1
        vocab = sorted(counts)
        p = np.array([counts[w] for w in vocab], dtype=np.float64)
    else:
        vocab = [f"w{i}" for i in range(50_000)]
        p = 1.0 / np.arange(1, len(vocab) + 1)
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    return vocab, cdf


def write_corpus(n: int, folder: Path, seed: int = 0) -> np.ndarray:
    """n documents as Parquet parts in ``folder``; returns each document's kind (0 original,
    1 near copy, 2 exact copy)."""
    import polars as pl
    import pyarrow as pa

    from sftdata.schema import conform

    rng = np.random.default_rng(seed)
    vocab, cdf = vocabulary()
    words = pl.Series(vocab)
    kinds = np.empty(n, dtype=np.int8)
    reservoir: list[np.ndarray] = []
    folder.mkdir(parents=True)
    for part, start in enumerate(range(0, n, PART_ROWS)):
        m = min(PART_ROWS, n - start)
        lengths = np.clip(rng.normal(200, 40, m), 50, 400).astype(np.int64)
        flat = np.searchsorted(cdf, rng.random(int(lengths.sum())), side="right")
        docs = np.split(flat, np.cumsum(lengths)[:-1])
        kind = rng.choice(3, size=m, p=[0.88, 0.10, 0.02]).astype(np.int8)
        if start == 0:
            kind[:10] = 0
        for i in np.flatnonzero(kind).tolist():
            if reservoir and (i == 0 or rng.random() < 0.3):
                src = reservoir[int(rng.integers(len(reservoir)))]
            else:
                src = docs[int(rng.integers(0, i))]
            doc = src.copy()
            if kind[i] == 1:  # 1-3% of words substituted
                k = max(1, int(doc.size * rng.uniform(0.01, 0.03)))
                doc[rng.integers(0, doc.size, k)] = np.searchsorted(cdf, rng.random(k), side="right")
            docs[i] = doc
        for i in rng.integers(0, m, min(m, RESERVOIR // 4)).tolist():
            doc = docs[i].copy()  # a view would keep this part's whole word array alive
            if len(reservoir) < RESERVOIR:
                reservoir.append(doc)
            else:
                reservoir[int(rng.integers(RESERVOIR))] = doc
        offsets = np.concatenate([[0], np.cumsum([d.size for d in docs])]).astype(np.int64)
        values = words.gather(np.concatenate(docs)).to_arrow()
        lists = pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets), values))
        text = lists.list.join(" ")
        upper = pl.Series(kind == 2)
        frame = pl.DataFrame({"id": [f"doc{i:08d}" for i in range(start, start + m)],
                              "text": text, "upper": upper})
        frame = frame.select(
            "id",
            pl.concat_list(pl.struct(
                role=pl.lit("assistant"),
                content=pl.when(pl.col("upper"))
                .then(pl.col("text").str.to_uppercase().str.replace_all(" ", "  ", literal=True))
                .otherwise(pl.col("text")),
            )).alias("messages"),
            pl.lit("synthetic").alias("source"),
            pl.lit("text").alias("task"),
        )
        conform(frame).write_parquet(folder / f"part-{part:05d}.parquet", row_group_size=50_000)
        kinds[start:start + m] = kind
    return kinds


def run(folder: Path, out: Path, memory: str | None) -> dict:
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    sftdata = str(Path(sys.executable).parent / "sftdata")
    kept, dupes = out / "kept", out / "dupes"
    cmd = [sftdata, "dedup", f"{folder}/", "-o", f"{kept}/", "--dupes", f"{dupes}/"]
    if memory:
        cmd += ["--memory", memory]
    load = os.getloadavg()[0]
    wall, cpu, peak, done = run_tracking_rss(cmd)
    if done.returncode != 0:
        raise SystemExit(f"dedup failed: {done.stderr}")
    dropped = pl.scan_parquet(f"{dupes}/*.parquet").select("id", "reason").collect()
    kept_rows = pl.scan_parquet(f"{kept}/*.parquet").select(pl.len()).collect().item()
    shutil.rmtree(kept)
    shutil.rmtree(dupes)
    return {"wall": wall, "cpu": cpu, "peak": peak, "load": load, "kept": kept_rows,
            "dropped": dropped, "stderr": done.stderr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="1000000", help="comma-separated document counts")
    parser.add_argument("--memory", default=None, help="--memory for the budget path")
    parser.add_argument("--whole-max", type=int, default=0,
                        help="also run the one-frame path (--memory 1TiB) up to this many documents")
    parser.add_argument("--work", default=os.environ.get("BENCH_TMP", "/tmp"),
                        help="directory for the corpus and outputs")
    parser.add_argument("--keep-corpus", default=None, metavar="DIR",
                        help="keep each corpus in DIR/N (and reuse it when it is there)")
    args = parser.parse_args()
    import polars as pl

    rows = []
    for n in [int(x) for x in args.docs.split(",")]:
        work = Path(args.work) / f"dedup-scale-{n}-{os.getpid()}"
        docs = Path(args.keep_corpus) / str(n) if args.keep_corpus else work / "docs"
        try:
            t0 = time.perf_counter()
            if (docs / "kinds.npy").exists():
                kinds = np.load(docs / "kinds.npy")
            else:
                kinds = write_corpus(n, docs / "parts")
                np.save(docs / "kinds.npy", kinds)
            gen = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in (docs / "parts").iterdir())
            modes = ([("whole", "1TiB")] if n <= args.whole_max else []) + [("budget", args.memory)]
            for label, memory in modes:
                r = run(docs / "parts", work, memory)
                ids = r["dropped"]["id"].str.slice(3).cast(pl.Int64).to_numpy()
                false = int((kinds[ids] == 0).sum())
                planted = int((kinds != 0).sum())
                line = (f"| {n:,} | {label} ({memory or 'default'}) | {r['wall']:.0f} | "
                        f"{r['cpu']:.0f} | {r['peak']:.2f} | {len(ids):,} / {planted:,} | {false} | "
                        f"{r['load']:.1f} |")
                rows.append(line)
                print(line, flush=True)
                print("   stderr: " + " | ".join(r["stderr"].strip().splitlines()), flush=True)
            print(f"   corpus: {n:,} docs, {size / 2**30:.2f} GiB of Parquet, generated in "
                  f"{gen:.0f} s (not timed)", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print("\n| documents | path | wall s | CPU s | peak RSS GiB | dropped / planted copies | "
          "dropped originals | load at start |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
