"""Benchmark: `sftdata convert` of Alpaca JSONL to Parquet vs plain polars read_ndjson + write_parquet.

Generates N Alpaca-style records (default 1M, about 0.5 GB) deterministically into bench/out/,
then runs each side as a subprocess, alternating, several times; reports median wall time,
throughput (MB/s of input), the ratio ours/plain, and peak RSS (psutil polling of the process
tree every 20 ms).

    .venv/bin/python bench/bench_convert.py            # 1M records, 3 repeats
    .venv/bin/python bench/bench_convert.py --quick    # 100k records, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PY = sys.executable

WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have this "
    "from or had by word but what some we can out other were all there when up use your how said "
    "an each she which do their time if will way about many then them write would like so these "
    "her long make thing see him two has look more day could go come did number sound no most "
    "people my over know water than call first who may down side been now find any new work part "
    "take get place made live where after back little only round man year came show every good"
).split()


def generate(path: Path, n: int, seed: int = 0) -> None:
    """N Alpaca rows; a third have an input; about 500 bytes per line."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            def text(lo: int, hi: int) -> str:
                return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))

            row = {
                "instruction": text(8, 24).capitalize() + "?",
                "input": text(5, 30) if i % 3 == 0 else "",
                "output": text(40, 100).capitalize() + ".",
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


PLAIN = "import polars as pl, sys; pl.read_ndjson(sys.argv[1]).write_parquet(sys.argv[2])"


def run(cmd: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) and CPU seconds (last poll) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak, cpu = 0, 0.0
    while proc.poll() is None:
        try:  # both sides are one process (threads included in its RSS)
            peak = max(peak, ps.memory_info().rss)
            times = ps.cpu_times()
            cpu = times.user + times.system
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return wall, peak, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100k records, 1 repeat")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 3)
    OUT.mkdir(parents=True, exist_ok=True)
    src = OUT / f"alpaca_{rows}.jsonl"
    if not src.exists():
        print(f"generating {rows} rows -> {src}", file=sys.stderr)
        generate(src, rows)
    size_mb = src.stat().st_size / 1e6
    sides = {
        "plain polars read_ndjson+write_parquet": [PY, "-c", PLAIN, str(src), str(OUT / "plain.parquet")],
        "sftdata convert -o x.parquet": [
            PY, "-m", "sftdata.cli", "convert", str(src), "-o", str(OUT / "ours.parquet")
        ],
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    peaks: dict[str, list[int]] = {k: [] for k in sides}
    cpus: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for name, cmd in sides.items():  # alternate so both see the same machine load
            wall, peak, cpu = run(cmd)
            times[name].append(wall)
            peaks[name].append(peak)
            cpus[name].append(cpu)
    print(f"input: {rows} Alpaca records, {size_mb:.0f} MB JSONL; {repeats} repeat(s), median")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'side':42} {'wall s':>8} {'MB/s':>7} {'CPU s':>7} {'peak RSS MB':>12}")
    for name in sides:
        t = statistics.median(times[name])
        c = statistics.median(cpus[name])
        print(f"{name:42} {t:8.2f} {size_mb / t:7.1f} {c:7.1f} {max(peaks[name]) / 1e6:12.0f}")
    plain, ours = (statistics.median(times[k]) for k in sides)
    plain_cpu, ours_cpu = (statistics.median(cpus[k]) for k in sides)
    print(f"throughput ratio ours/plain (wall): {plain / ours:.2f}x (target >= 0.7x)")
    print(f"CPU-time ratio plain/ours: {plain_cpu / ours_cpu:.2f}x")
    print("per-run wall seconds: " + "; ".join(
        f"{k}: {', '.join(f'{t:.1f}' for t in v)}" for k, v in times.items()))
    print(f"peak RSS ours: {max(peaks[list(sides)[1]]) / 1e9:.2f} GB (target < 2 GB)")


if __name__ == "__main__":
    main()
