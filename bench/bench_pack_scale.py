"""How `sftdata pack` grows with the input: wall time and peak RSS at 1M, 3M, 10M records.

The input is a Parquet file of tokenized records (id, input_ids, labels, tokenizer) written a row
group at a time, so building a 10M-record file needs no more memory than one group. Lengths are
the Alpaca-like pool of bench/bench_pack.py (real token counts, or its log-normal fit), token ids
random, the first 40% of every record masked. The command runs as a subprocess under
/usr/bin/time, so the peak RSS is the command's own; the load average is printed with every row
because the machine is shared.

    .venv/bin/python bench/bench_pack_scale.py                       # 1M and 3M
    .venv/bin/python bench/bench_pack_scale.py --sizes 1e6,3e6,1e7 --memory 4GiB
    .venv/bin/python bench/bench_pack_scale.py --sizes 3e6 --keep /tmp/pk   # reuse inputs there
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_pack import SEED, VOCAB, real_lengths, tokenizer_json  # noqa: E402

GROUP = 250_000  # records per row group (the builder holds one at a time)


def build_parquet(path: Path, n: int, seq_len: int, pool: np.ndarray) -> int:
    """Write n records to path; returns the token count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(SEED)
    schema = pa.schema([("id", pa.string()), ("input_ids", pa.large_list(pa.int32())),
                        ("labels", pa.large_list(pa.int32())), ("tokenizer", pa.string())])
    tok = tokenizer_json()
    tokens = 0
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, schema, compression="none") as writer:
        for lo in range(0, n, GROUP):
            m = min(GROUP, n - lo)
            lengths = np.minimum(rng.choice(pool, m), seq_len)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            ids = rng.integers(0, VOCAB, int(offsets[-1]), dtype=np.int32)
            pos = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
            labels = np.where(pos < np.repeat((lengths * 0.4).astype(np.int64), lengths), -100, ids)
            record_ids = pa.array([f"r{i:08d}" for i in range(lo, lo + m)])
            writer.write_table(pa.table({
                "id": record_ids,
                "input_ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids)),
                "labels": pa.LargeListArray.from_arrays(pa.array(offsets),
                                                        pa.array(labels.astype(np.int32))),
                "tokenizer": pa.array([tok] * m),
            }, schema=schema))
            tokens += int(offsets[-1])
    os.replace(tmp, path)
    return tokens


def run_pack(path: Path, out: Path, seq_len: int, extra: list[str]) -> dict:
    sftdata = Path(sys.executable).with_name("sftdata")
    cmd = [str(sftdata), "pack", str(path), "-o", str(out), "--seq-len", str(seq_len), "--force",
           *extra]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"pack failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kib, user, system = proc.stderr.strip().splitlines()[-1].split()
    manifest = json.loads((out / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    return {"seconds": seconds, "cpu_s": float(user) + float(system),
            "peak_rss_gib": int(peak_kib) / 2**20, "load_before": load,
            "load_after": os.getloadavg()[0], "sequences": train["sequences"],
            "efficiency": train["efficiency"], "command": " ".join(cmd[1:]),
            "report": [line for line in proc.stderr.splitlines() if line.startswith("pack")]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e6,3e6", help="record counts, comma-separated")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--memory", default=None, help="pass --memory to pack")
    ap.add_argument("--keep", default=None, help="folder for the inputs (kept for the next run)")
    args = ap.parse_args()
    pool, origin = real_lengths()
    print(f"lengths: {origin}; mean {pool.mean():.0f} tokens; seq_len {args.seq_len}")
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="packscale-"))
    folder.mkdir(parents=True, exist_ok=True)
    extra = ["--memory", args.memory] if args.memory else []
    try:
        print(f"{'records':>10} {'tokens':>14} {'wall s':>8} {'cpu s':>8} {'peak RSS GiB':>12} "
              f"{'efficiency':>10} {'load':>10}")
        for n in (int(float(s)) for s in args.sizes.split(",")):
            path = folder / f"tokens-{n}.parquet"
            meta = folder / f"tokens-{n}.json"
            if not path.is_file() or not meta.is_file():
                tokens = build_parquet(path, n, args.seq_len, pool)
                meta.write_text(json.dumps({"tokens": tokens}))
            tokens = json.loads(meta.read_text())["tokens"]
            out = folder / f"shards-{n}"
            r = run_pack(path, out, args.seq_len, extra)
            shutil.rmtree(out, ignore_errors=True)
            print(f"{n:>10,} {tokens:>14,} {r['seconds']:>8.1f} {r['cpu_s']:>8.1f} "
                  f"{r['peak_rss_gib']:>12.2f} {r['efficiency']:>10.4%} "
                  f"{r['load_before']:>4.1f}/{r['load_after']:<4.1f}", flush=True)
            print(f"    sftdata {r['command']}\n    {' '.join(r['report'])}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
