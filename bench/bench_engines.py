"""Local against Ray engine: dedup and tokenize on the same synthetic dataset, output asserted equal.

The dataset is bench_dedup_scale's synthetic ~200-word documents (10% near copies, 2% exact
copies), a directory of Parquet parts of 250,000 rows in 50,000-row groups (the units), rendered
once with chatml for tokenize. Each command runs as a subprocess; wall time, CPU seconds and
peak RSS of its whole process tree (Ray's processes included; CPU is the last reading of every
process of the tree, sampled every 0.2 s) are recorded, with the load average. Ray runs on a
local Ray the command starts itself, limited to each of --cpus CPUs (SFTDATA_RAY_CPUS). Sizes
run one after another, so the growth with size reads off one table.

    .venv/bin/python bench/bench_engines.py --docs 100000,300000,1000000 --cpus 1,2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
SFTDATA = str(ROOT / ".venv/bin/sftdata")
TOKENIZER = str(ROOT / "fixtures/tokenizers/tiny-chatml")

def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (GiB) of the command's process tree (its local Ray
    included)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    root = psutil.Process(proc.pid)
    peak, cpu = 0, {}
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            rss = 0
            for p in tree:
                with p.oneshot():
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return time.perf_counter() - start, sum(cpu.values()), peak / 2**30


def same(a: Path, b: Path) -> bool:
    names = sorted(f for f in os.listdir(a) if not f.startswith("."))
    return names == sorted(f for f in os.listdir(b) if not f.startswith(".")) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in names)


def run_size(n: int, cpus: list[int], work: Path, commands: list[str]) -> list[str]:
    from bench_dedup_scale import write_corpus

    write_corpus(n, work / "docs")
    subprocess.run([SFTDATA, "render-template", f"{work}/docs/", "-t", "chatml",
                    "-o", f"{work}/rendered/"], check=True, stderr=subprocess.DEVNULL)
    jobs = {
        "dedup": ["dedup", f"{work}/docs/"],
        "tokenize": ["tokenize", f"{work}/rendered/", "-t", TOKENIZER],
    }
    lines = []
    for name in commands:
        cmd = jobs[name]
        load = os.getloadavg()[0]
        wall, cpu, rss = timed([SFTDATA, *cmd, "-o", f"{work}/{name}-local/"])
        line = f"| {n:,} | {name} | local | {wall:.1f} | {cpu:.0f} | {rss:.2f} | - | {load:.1f} |"
        print(line, flush=True)
        lines.append(line)
        for c in cpus:
            out = work / f"{name}-ray{c}"
            load = os.getloadavg()[0]
            wall, cpu, rss = timed([SFTDATA, *cmd, "-o", f"{out}/", "--engine", "ray"],
                                   {"SFTDATA_RAY_CPUS": str(c)})
            eq = "yes" if same(work / f"{name}-local", out) else "NO"
            line = (f"| {n:,} | {name} | ray, {c} CPU | {wall:.1f} | {cpu:.0f} | {rss:.2f} | "
                    f"{eq} | {load:.1f} |")
            print(line, flush=True)
            lines.append(line)
            shutil.rmtree(out)
        shutil.rmtree(work / f"{name}-local")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", default="100000", help="comma-separated document counts")
    parser.add_argument("--cpus", default="1,2")
    parser.add_argument("--commands", default="dedup,tokenize")
    args = parser.parse_args()
    cpus = [int(c) for c in args.cpus.split(",") if c]
    lines = []
    for n in [int(x) for x in args.docs.split(",")]:
        work = Path(tempfile.mkdtemp(prefix="bench-engines-", dir=os.environ.get("BENCH_TMP")))
        try:
            lines += run_size(n, cpus, work, args.commands.split(","))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{os.cpu_count()} cores")
    print("| documents | command | engine | wall s | CPU s (all processes) | peak RSS GiB "
          "(all processes) | output = local | load at start |")
    print("| ---: | --- | --- | ---: | ---: | ---: | --- | ---: |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
