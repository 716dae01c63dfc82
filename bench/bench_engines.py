"""Local against Ray engine: dedup and tokenize on the same synthetic dataset, output asserted equal.

The dataset is bench_dedup's synthetic ~200-word documents (10% near copies, 2% exact copies)
written as a directory of Parquet parts. Each command runs as a subprocess; wall time, CPU
seconds and peak RSS of its whole process tree (Ray's processes included) are recorded. Ray runs
on a local Ray the command starts itself, limited to each of --cpus CPUs (SFTDATA_RAY_CPUS).

    .venv/bin/python bench/bench_engines.py --docs 100000 --cpus 1,2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
SFTDATA = str(ROOT / ".venv/bin/sftdata")
TOKENIZER = str(ROOT / "fixtures/tokenizers/tiny-chatml")

def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of the command's process tree (its local Ray included)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    roots = [psutil.Process(proc.pid)]
    peak = 0
    while proc.poll() is None:
        try:
            tree = [p for r in roots for p in (r, *r.children(recursive=True))]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return time.perf_counter() - start, peak / 2**30


def same(a: Path, b: Path) -> bool:
    return all((a / f).read_bytes() == (b / f).read_bytes()
               for f in os.listdir(a) if not f.startswith("."))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--cpus", default="1,2")
    args = parser.parse_args()
    import polars as pl
    from bench_dedup import synthetic_records

    from sftdata.datasets import DatasetWriter
    from sftdata.outputs import together

    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    synthetic_records(args.docs, work / "all.parquet")
    with together(), DatasetWriter(work / "docs", rows_per_part=args.docs // 8 or 1) as w:
        w.write(pl.read_parquet(work / "all.parquet"))
    subprocess.run([SFTDATA, "render-template", str(work / "docs"), "-t", "chatml",
                    "-o", f"{work}/rendered/"], check=True, stderr=subprocess.DEVNULL)
    jobs = {
        "dedup": ["dedup", str(work / "docs")],
        "tokenize": ["tokenize", str(work / "rendered"), "-t", TOKENIZER],
    }
    rows = []
    for name, cmd in jobs.items():
        wall, rss = timed([SFTDATA, *cmd, "-o", f"{work}/{name}-local/"])
        rows.append((name, "local", wall, rss, "-"))
        for cpus in [int(c) for c in args.cpus.split(",")]:
            out = work / f"{name}-ray{cpus}"
            wall, rss = timed([SFTDATA, *cmd, "-o", f"{out}/", "--engine", "ray"],
                              {"SFTDATA_RAY_CPUS": str(cpus)})
            rows.append((name, f"ray, {cpus} CPU", wall, rss,
                         "yes" if same(work / f"{name}-local", out) else "NO"))
    load = os.getloadavg()
    print(f"{args.docs} documents; load average at the end {load[0]:.1f} {load[1]:.1f} "
          f"{load[2]:.1f} on {os.cpu_count()} cores")
    print("| command | engine | wall s | peak RSS GiB (all processes) | output = local |")
    print("| --- | --- | ---: | ---: | --- |")
    for name, engine, wall, rss, eq in rows:
        print(f"| {name} | {engine} | {wall:.1f} | {rss:.2f} | {eq} |")


if __name__ == "__main__":
    main()
