"""Every benchmark in its quick form, one after another (`make bench`).

Each bench prints its own side-by-side table against its peer or baseline; this runner adds the
load average before and after each, because the machines are shared and the ratios only mean
something next to it. The full-size commands are in docs/benchmarks.md.

    .venv/bin/python bench/run_all.py              # all, quick sizes
    .venv/bin/python bench/run_all.py dedup pack   # only these
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUICK = {
    "convert": ["bench/bench_convert.py", "--quick"],
    "dedup": ["bench/bench_dedup.py", "--skip-scale", "--throughput", "0"],
    "leakcheck": ["bench/bench_leakcheck.py", "--quick"],
    "tokenize": ["bench/bench_tokenize.py", "--quick"],
    "pack": ["bench/bench_pack.py", "--quick"],
    "balance": ["bench/bench_balance.py", "--quick"],
    "train": ["bench/bench_train.py", "--quick"],
}


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in QUICK]
    if unknown:
        print(f"unknown bench {', '.join(unknown)}; choose from {', '.join(QUICK)}",
              file=sys.stderr)
        return 2
    failed = []
    for name in names or list(QUICK):
        print(f"== {name}: load average {os.getloadavg()[0]:.2f}", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, *QUICK[name]], cwd=ROOT)
        print(f"== {name}: exit {code} in {time.perf_counter() - started:.0f} s, load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
