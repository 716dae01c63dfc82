"""Packing: sftdata's pack vs TRL's pack_dataset(strategy="bfd") on the same records.

Lengths are Alpaca-like: bootstrap samples of real token counts (every English Alpaca-format file
in ../shared/realdata, rendered as ChatML and counted with the GPT-2 tokenizer found there), or a
log-normal fit of them when realdata is absent. Token ids are random, labels mask the first 40%
of every record. Every measurement runs in a fresh subprocess (same data from the same seed),
so its peak RSS is its own; times are medians of --repeats runs, data building excluded.

  ours          sftdata.ops.pack.pack (checks, fingerprint, BFD) + gathering every sequence
  ours+write    the same, writing the shard directory (Arrow files + manifest) as `sftdata pack`
  trl           trl.data_utils.pack_dataset(ds, seq_len, "bfd") as SFTTrainer calls it
                (datasets.map, batches of 1000 rows packed separately)
  trl-1batch    the same with map_kwargs={"batch_size": None}: TRL's BFD over all rows at once
  lengths       sftdata.ops.pack.pack_lengths on the lengths alone (the bin packing itself)
  cli           `sftdata pack tokens.parquet -o shards/` as a subprocess: start-up, reading,
                packing, writing (peak RSS: the larger of the command and the worker that built
                the Parquet file)

    .venv/bin/python bench/bench_pack.py              # 100k side by side x3, then 1M ours x3
    .venv/bin/python bench/bench_pack.py --quick      # 20k side by side x1, 200k ours x1
    .venv/bin/python bench/bench_pack.py --n 50000 --big 0 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REALDATA = Path(os.environ.get("SFT_REALDATA", ROOT.parent / "shared" / "realdata"))
VOCAB = 50257
SEED = 0


# --------------------------------------------------------------------------- data


def real_lengths() -> tuple[np.ndarray, str]:
    """Token counts of real Alpaca-format records rendered as ChatML (GPT-2 tokenizer)."""
    folder = REALDATA / "datasets" / "alpaca_format"
    tok_file = REALDATA / "tokenizers" / "gpt2" / "tokenizer.json"
    if not folder.is_dir() or not tok_file.is_file():
        rng = np.random.default_rng(SEED)
        return np.clip(rng.lognormal(5.3, 0.8, 20000).astype(np.int64), 8, None), "log-normal"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_file))
    texts = []
    for path in sorted(folder.glob("*.json*")):
        if "_zh_" in path.name:
            continue
        raw = path.read_text(encoding="utf-8")
        rows = [json.loads(x) for x in raw.splitlines() if x.strip()] if path.suffix == ".jsonl" else json.loads(raw)
        for r in rows:
            if not isinstance(r, dict) or "instruction" not in r:
                continue
            prompt = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
            texts.append(
                f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
                f"{r.get('output', '')}<|im_end|>\n"
            )
    lengths = np.array([len(e.ids) for e in tok.encode_batch(texts)], dtype=np.int64)
    return lengths, f"{lengths.size} real Alpaca-format records"


def build_table(pool: np.ndarray, n: int, seq_len: int):
    """A pyarrow table (id, input_ids, labels) of n records with lengths drawn from pool."""
    import pyarrow as pa

    rng = np.random.default_rng(SEED)
    lengths = np.minimum(rng.choice(pool, n), seq_len)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(0, VOCAB, int(offsets[-1]), dtype=np.int32)
    labels = ids.copy()
    prompt = (lengths * 0.4).astype(np.int64)
    starts = np.repeat(offsets[:-1], prompt) + (np.arange(prompt.sum()) - np.repeat(np.cumsum(prompt) - prompt, prompt))
    labels[starts] = -100
    ids_col = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids))
    labels_col = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(labels))
    record_ids = pa.array([f"r{i:07d}" for i in range(n)])
    return pa.table({"id": record_ids, "input_ids": ids_col, "labels": labels_col})


def tokenizer_json() -> str:
    return json.dumps({"backend": "hf", "name": "bench", "vocab_size": VOCAB,
                       "vocab_hash": "0" * 64, "eos_id": 50256, "pad_id": 50256})


# --------------------------------------------------------------------------- workers


def worker(kind: str, n: int, seq_len: int, pool_file: str) -> dict:
    import psutil

    pool = np.load(pool_file)
    table = build_table(pool, n, seq_len)
    if kind.startswith("ours"):
        import polars as pl

        from sftdata.ops.pack import pack

        frame = pl.from_arrow(table).with_columns(pl.lit(tokenizer_json()).alias("tokenizer"))
        del table
        start, cpu = time.perf_counter(), time.process_time()
        result = pack(frame, seq_len=seq_len)
        packed = result.splits["train"]
        if kind == "ours+write":
            from sftdata.shards import ShardWriter, write_manifest

            with tempfile.TemporaryDirectory() as out:
                writer = ShardWriter(out, "train")
                for batch in packed.batches(writer.rows_per_file):
                    writer.add_packed(**batch)
                entry = writer.close(seq_len)
                write_manifest(out, {**result.manifest(), "splits": {"train": entry}})
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        else:
            tokens = sum(b["input_ids"].size for b in packed.batches(8192))
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
            assert tokens == packed.tokens
        sequences, tokens = packed.sequences, packed.tokens
    elif kind.startswith("trl"):
        import datasets
        from trl.data_utils import pack_dataset

        datasets.disable_progress_bars()
        ds = datasets.Dataset(table.drop_columns(["id"]))
        map_kwargs = {"batch_size": None} if kind == "trl-1batch" else None
        start, cpu = time.perf_counter(), time.process_time()
        packed = pack_dataset(ds, seq_len, strategy="bfd", map_kwargs=map_kwargs)
        lens = packed.with_format("arrow")["input_ids"]
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        import pyarrow.compute as pc

        sequences = len(packed)
        tokens = int(pc.sum(pc.list_value_length(lens)).as_py())
    elif kind == "cli":  # the whole command: start-up, reading a Parquet file, packing, writing
        import pyarrow as pa
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tokens.parquet"
            col = pa.array([tokenizer_json()] * table.num_rows)
            pq.write_table(table.append_column("tokenizer", col), path, compression="zstd")
            del table, col
            sftdata = Path(sys.executable).with_name("sftdata")
            start, cpu = time.perf_counter(), time.process_time()
            proc = subprocess.run([str(sftdata), "pack", str(path), "-o", f"{tmp}/shards"],
                                  capture_output=True, text=True)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
            if proc.returncode:
                raise SystemExit(proc.stderr)
            manifest = json.loads((Path(tmp) / "shards" / "manifest.json").read_text())
        sequences, tokens = manifest["splits"]["train"]["sequences"], manifest["splits"]["train"]["tokens"]
    elif kind == "lengths":
        import pyarrow.compute as pc

        from sftdata.ops.pack import pack_lengths

        lengths = pc.list_value_length(table["input_ids"]).to_numpy()
        start, cpu = time.perf_counter(), time.process_time()
        bins = pack_lengths(lengths, seq_len, "bfd")
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        sequences, tokens = int(bins.max()) + 1, int(lengths.sum())
    else:
        raise SystemExit(f"unknown worker {kind}")
    rss = psutil.Process().memory_info().rss  # after the work; peak comes from the parent
    if kind == "cli":  # the command's CPU time is its own process's, not this one's
        cpu_seconds = float("nan")
    return {"kind": kind, "n": n, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "sequences": sequences, "tokens": tokens,
            "efficiency": tokens / (sequences * seq_len), "rss_end": rss}


def run_once(kind: str, n: int, seq_len: int, pool_file: str) -> dict:
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, __file__, "--worker", kind, "--n", str(n),
         "--seq-len", str(seq_len), "--pool", pool_file],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["peak_rss_mib"] = int(proc.stderr.strip().splitlines()[-1]) / 1024
    return out


def measure(kinds: tuple[str, ...], n: int, seq_len: int, pool_file: str, repeats: int) -> list[dict]:
    """Medians over repeats run interleaved (ours, ours+write, trl, trl-1batch, ours, ...): the
    shared machine's load drifts over minutes, and interleaving exposes every kind to it."""
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for _ in range(repeats):
        for kind in kinds:
            runs[kind].append(run_once(kind, n, seq_len, pool_file))
    rows = []
    for done in runs.values():
        best = dict(done[0])
        for key in ("seconds", "cpu_seconds", "peak_rss_mib"):
            best[key] = statistics.median(r[key] for r in done)
        best["all_seconds"] = [round(r["seconds"], 3) for r in done]
        rows.append(best)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="records for the side-by-side runs")
    ap.add_argument("--big", type=int, default=None, help="records for ours alone (0 = skip)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--worker", default=None)
    ap.add_argument("--pool", default=None)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.seq_len, args.pool)))
        return
    n = args.n or (20_000 if args.quick else 100_000)
    big = args.big if args.big is not None else (200_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 3)

    pool, origin = real_lengths()
    print(f"lengths: {origin}; mean {pool.mean():.0f}, median {np.median(pool):.0f}, "
          f"p99 {np.percentile(pool, 99):.0f}, max {pool.max()} tokens; seq_len {args.seq_len}")
    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as fh:
        np.save(fh, pool)
        pool_file = fh.name
    try:
        print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        rows = measure(("ours", "ours+write", "trl", "trl-1batch"), n, args.seq_len, pool_file,
                       repeats)
        if big:
            rows += measure(("lengths", "ours", "ours+write", "cli"), big, args.seq_len,
                            pool_file, repeats)
        print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        os.unlink(pool_file)
    trl = next(r for r in rows if r["kind"] == "trl")
    print(f"\n{'what':<12} {'records':>9} {'median s':>9} {'runs':<24} {'sequences':>9} "
          f"{'efficiency':>10} {'peak RSS MiB':>12} {'TRL s / ours s':>14} {'CPU s':>7} "
          f"{'TRL CPU / ours':>14}")
    for r in rows:
        same_n = r["n"] == trl["n"]
        ratio = trl["seconds"] / r["seconds"] if same_n else float("nan")
        cpu_ratio = trl["cpu_seconds"] / r["cpu_seconds"] if same_n else float("nan")
        print(f"{r['kind']:<12} {r['n']:>9} {r['seconds']:>9.3f} {str(r['all_seconds']):<24} "
              f"{r['sequences']:>9} {r['efficiency']:>10.4%} {r['peak_rss_mib']:>12.0f} {ratio:>14.1f} "
              f"{r['cpu_seconds']:>7.3f} {cpu_ratio:>14.1f}")


if __name__ == "__main__":
    main()
