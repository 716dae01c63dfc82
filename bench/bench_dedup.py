"""Near-duplicate detection: `sftdata dedup` against its old default, datasketch, rensa, datatrove.

Part 1, on the labelled near-duplicate set built from real text (bench/neardup_set.py), same
num_perm, seed and threshold; word 3-grams (the default) unless --ngram says otherwise:
  (a) datasketch as its documentation shows it: MinHash() + update() per shingle, then
      MinHashLSH.insert for every document and MinHashLSH.query for every document;
  (b) the same with MinHash.bulk for the signatures;
  (c) sftdata.minhash.signatures (datasketch-equal values: sha1 per shingle) + candidate_pairs,
      with one worker and the default; the candidate pairs of (a), (b), (c) are asserted equal;
  (o) the default before issue 11: (c) at word 5-grams, every candidate merged;
  (d) `sftdata dedup`'s default, the op itself (sftdata.ops.dedup.dedup, near stage, response
      view): bulk shingle hashes, recall banding, exact Jaccard of every candidate, clusters;
  (e) the same with --approx: datasketch's banding + Jaccard estimated from the signatures;
  rensa and datatrove, run by bench/dedup_peers.py in their own venv (bench/peers_venv.sh),
      after ours in every repeat so load hits both alike.
Docs/s are medians of --repeats runs; precision/recall/F1 are over the document pairs inside
the clusters each method forms, against the planted pairs. A second table times (b), (o), (d),
(e) and rensa on --throughput synthetic documents (default 50,000).

Part 2, scale: N synthetic documents of about 200 words (words drawn from the unigram
distribution of the real texts, 10% planted near copies, 2% re-cased/re-spaced exact copies)
written as a Parquet record file, then `sftdata dedup` run on it as a subprocess; wall time and
peak RSS of the whole process tree (workers included, sampled every 0.2 s with psutil).

    .venv/bin/python bench/bench_dedup.py            # full: part 1 x3, part 2 with 1,000,000 docs
    .venv/bin/python bench/bench_dedup.py --quick    # part 1 x1 on 1500 texts, part 2 with 20,000
    .venv/bin/python bench/bench_dedup.py --scale 200000 --skip-quality
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT / "bench"))

from neardup_set import build_neardup_set, pair_scores, real_texts  # noqa: E402

from sftdata import minhash  # noqa: E402

REALDATA = Path(os.environ.get("SFT_REALDATA", ROOT.parent / "shared" / "realdata"))
NUM_PERM, SEED, THRESHOLD, NGRAM = 128, 1, 0.8, 3  # NGRAM: `sftdata dedup`'s default
DEFAULT_ROW = "(d) `sftdata dedup` default: recall banding + exact Jaccard"
APPROX_ROW = "(e) `sftdata dedup --approx`: datasketch banding + estimated Jaccard"


# --------------------------------------------------------------------------- part 1


def datasketch_pairs(lsh, minhashes) -> set[tuple[int, int]]:
    pairs = set()
    for i, m in enumerate(minhashes):
        for j in lsh.query(m):
            if j != i:
                pairs.add((min(i, j), max(i, j)))
    return pairs


def run_update_loop(texts: list[str]) -> set[tuple[int, int]]:
    """(a) datasketch's documented pipeline."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    minhashes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        for shingle in minhash.shingles(text, NGRAM):
            m.update(shingle.encode("utf8"))
        lsh.insert(i, m)
        minhashes.append(m)
    return datasketch_pairs(lsh, minhashes)


def run_bulk(texts: list[str]) -> set[tuple[int, int]]:
    """(b) the same with MinHash.bulk."""
    from datasketch import MinHash, MinHashLSH

    shingled = [[s.encode("utf8") for s in minhash.shingles(t, NGRAM)] for t in texts]
    minhashes = MinHash.bulk(shingled, num_perm=NUM_PERM, seed=SEED)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    for i, m in enumerate(minhashes):
        lsh.insert(i, m)
    return datasketch_pairs(lsh, minhashes)


def run_ours(texts: list[str], workers: int) -> set[tuple[int, int]]:
    """(c) sftdata.minhash."""
    sigs = minhash.signatures(texts, num_perm=NUM_PERM, ngram=NGRAM, seed=SEED, workers=workers)
    bands, rows = minhash.optimal_bands(THRESHOLD, NUM_PERM)
    return set(map(tuple, minhash.candidate_pairs(sigs, bands, rows).tolist()))


def process_cpu() -> float:
    """CPU seconds of this process (all threads) and its finished children (worker processes)."""
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


def records_of(texts: list[str]):
    """The texts as a record frame (one assistant turn each, ids 0..n-1), built outside timing."""
    import polars as pl

    from sftdata.schema import conform

    return conform(pl.DataFrame({"id": [str(i) for i in range(len(texts))], "messages": [
        [{"role": "assistant", "content": t}] for t in texts]}))


def op_pairs(result) -> set[tuple[int, int]]:
    """(kept, dropped) row pairs of what `sftdata.ops.dedup.dedup` merged."""
    ids = zip(result.dupes["kept_id"].cast(int).to_list(), result.dupes["id"].cast(int).to_list(),
              strict=True)
    return {(min(a, b), max(a, b)) for a, b in ids}


def run_default(frame, workers: int | None = None) -> set[tuple[int, int]]:
    """(d) `sftdata dedup --mode near`'s default, the op itself: bulk shingles, recall banding,
    exact Jaccard of every candidate, clusters."""
    from sftdata.ops.dedup import dedup

    return op_pairs(dedup(frame, mode="near", on="response", ngram=NGRAM, threshold=THRESHOLD,
                          num_perm=NUM_PERM, seed=SEED, workers=workers))


def run_approx(frame, workers: int | None = None) -> set[tuple[int, int]]:
    """(e) `sftdata dedup --mode near --approx`: datasketch's banding, estimated Jaccard."""
    from sftdata.ops.dedup import dedup

    return op_pairs(dedup(frame, mode="near", on="response", ngram=NGRAM, threshold=THRESHOLD,
                          num_perm=NUM_PERM, seed=SEED, workers=workers, approx=True))


def run_old_default(texts: list[str]) -> set[tuple[int, int]]:
    """(o) the default before issue 11 (commit 3862c3c): per-shingle sha1 signatures of word
    5-grams, datasketch's banding for the threshold, every candidate merged."""
    sigs = minhash.signatures(texts, num_perm=NUM_PERM, ngram=5, seed=SEED)
    bands, rows = minhash.optimal_bands(THRESHOLD, NUM_PERM)
    return set(map(tuple, minhash.candidate_pairs(sigs, bands, rows).tolist()))


def merged(pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Every pair inside the clusters the pairs make (what a dedup that clusters merges)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    return {(a, b) for g in groups.values() for a in g for b in g if a < b}


def run_peers(texts: list[str], repeats: int, only: str | None = None) -> dict[str, dict]:
    """rensa and datatrove in their own venv (bench/peers_venv.sh): {row: {seconds, pairs}}."""
    import json

    python = subprocess.run([str(ROOT / "bench" / "peers_venv.sh")], capture_output=True,
                            text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "texts.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(texts), encoding="utf-8")
        cmd = [python, str(ROOT / "bench" / "dedup_peers.py"), str(src), str(out),
               "--ngram", str(NGRAM), "--threshold", str(THRESHOLD), "--num-perm", str(NUM_PERM),
               "--seed", str(SEED), "--repeats", str(repeats)]
        done = subprocess.run(cmd + (["--only", only] if only else []), capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"peers failed: {done.stderr[-2000:]}")
        result = json.loads(out.read_text(encoding="utf-8"))
    return {name: {"seconds": r["seconds"], "cpu": r["cpu"], "pairs": {tuple(p) for p in r["pairs"]}}
            for name, r in result.items()}


def _default_workers_label(n: int) -> str:
    if n < minhash.PARALLEL_MIN_DOCS:
        return f"(c) sftdata.minhash, default workers (one process under {minhash.PARALLEL_MIN_DOCS:,} texts)"
    return f"(c) sftdata.minhash, {minhash.default_workers()} workers"


OLD_ROW = "(o) old default: sha1 per shingle, word 5-grams, 9 x 13, no check"
RENSA = "rensa"


def table(n: int, times: dict[str, list[float]], cpu: dict[str, list[float]],
          found: dict[str, set], truth) -> list[str]:
    """One row per method: docs/s (median), ratios to datasketch bulk and to rensa, CPU seconds
    of its process, all threads (median), P/R/F1 of the pairs inside the clusters it makes
    (truth None: no quality columns)."""
    def median(name: str) -> float:
        return statistics.median(times[name])

    base_b = median("(b) datasketch MinHash.bulk + MinHashLSH")
    rensa = next((k for k in times if k.startswith(RENSA)), None)
    lines = ["| method | docs/s | vs (b) | vs rensa | CPU s |"
             + (" precision | recall | F1 |" if truth else ""),
             "| --- | ---: | ---: | ---: | ---: |" + (" ---: | ---: | ---: |" if truth else "")]
    for name in times:
        t = median(name)
        row = f"| {name} | {n / t:,.0f} | {base_b / t:.2f}x | " + (
            f"{median(rensa) / t:.2f}x |" if rensa else "|") + f" {statistics.median(cpu[name]):.2f} |"
        if truth:
            sc = pair_scores(merged(found[name]), truth)
            row += f" {sc['precision']:.3f} | {sc['recall']:.3f} | {sc['f1']:.3f} |"
        lines.append(row)
    return lines


def part_quality(limit: int | None, repeats: int) -> list[str]:
    data = build_neardup_set(REALDATA, limit=limit, seed=0)
    texts = data.texts
    frame = records_of(texts)
    lines = [f"Labelled set: {data.describe()}", ""]
    import datasketch

    runs = {
        "(a) datasketch update loop + MinHashLSH": lambda: run_update_loop(texts),
        "(b) datasketch MinHash.bulk + MinHashLSH": lambda: run_bulk(texts),
        "(c) sftdata.minhash (datasketch-equal signatures), 1 worker": lambda: run_ours(texts, 1),
        _default_workers_label(len(texts)): lambda: run_ours(texts, None),
        OLD_ROW: lambda: run_old_default(texts),
        DEFAULT_ROW: lambda: run_default(frame),
        APPROX_ROW: lambda: run_approx(frame),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, set] = {}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):  # interleaved, so machine load hits every method alike
        for name, fn in runs.items():
            start, start_cpu = time.perf_counter(), process_cpu()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(process_cpu() - start_cpu)
        for name, peer in run_peers(texts, 1).items():
            times.setdefault(name, []).extend(peer["seconds"])
            cpu.setdefault(name, []).extend(peer["cpu"])
            results[name] = peer["pairs"]
    reference = results["(a) datasketch update loop + MinHashLSH"]
    for name in list(runs)[1:4]:
        assert results[name] == reference, f"{name} found different candidate pairs than datasketch"
    load.append(os.getloadavg()[0])
    lines += [
        f"datasketch {datasketch.__version__}, num_perm {NUM_PERM}, seed {SEED}, threshold {THRESHOLD}, "
        f"word {NGRAM}-grams (old default: 5), bands x rows {minhash.optimal_bands(THRESHOLD, NUM_PERM)} "
        f"((d): {minhash.recall_bands(THRESHOLD, NUM_PERM)}), median of {repeats} runs "
        f"(each repeat: ours, then the peers' process); load average {load[0]:.1f} -> {load[1]:.1f}; "
        "precision/recall/F1 over the pairs inside each method's clusters",
        "",
    ]
    lines += table(len(texts), times, cpu, results, data.pairs)
    found = results[DEFAULT_ROW]
    lines.append("")
    lines.append("Recall by edit kind, (d) default: " + ", ".join(
        f"{kind} {len({p for p, k in data.kinds.items() if k == kind} & merged(found)) / max(1, sum(k == kind for k in data.kinds.values())):.3f}"
        for kind in sorted(set(data.kinds.values()))))
    return lines


# --------------------------------------------------------------------------- part 2


def synthetic_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n ~200-word documents; kind per document: 0 original, 1 near copy, 2 exact copy."""
    rng = np.random.default_rng(seed)
    if REALDATA.is_dir():
        counts: dict[str, int] = {}
        for _, text in real_texts(REALDATA):
            for w in text.split():
                counts[w] = counts.get(w, 0) + 1
        vocab = np.array(sorted(counts))
        p = np.array([counts[w] for w in vocab], dtype=np.float64)
    else:  # Zipf over made-up words
        vocab = np.array([f"w{i}" for i in range(50_000)])
        p = 1.0 / np.arange(1, len(vocab) + 1)
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0

    words_of = vocab.tolist()  # Python strings join much faster than numpy str_ scalars

    def draw(k: int) -> list[str]:  # inverse-CDF sampling: rng.choice(p=...) is O(vocab) a call
        return [words_of[i] for i in np.searchsorted(cdf, rng.random(k), side="right").tolist()]

    kind = rng.choice(3, size=n, p=[0.88, 0.10, 0.02])
    kind[:10] = 0
    texts: list[str] = []
    for i in range(n):
        if kind[i] == 0:
            texts.append(" ".join(draw(int(np.clip(rng.normal(200, 40), 50, 400)))))
            continue
        words = texts[int(rng.integers(0, i))].split(" ")
        if kind[i] == 1:  # 1-3% of words substituted
            k = max(1, int(len(words) * rng.uniform(0.01, 0.03)))
            for pos, word in zip(rng.integers(0, len(words), k), draw(k), strict=True):
                words[pos] = word
            texts.append(" ".join(words))
        else:
            texts.append("  ".join(words).upper())
    return texts, kind


def synthetic_records(n: int, path: Path, seed: int = 0) -> np.ndarray:
    """:func:`synthetic_texts` as a Parquet record file (ids doc0000000...); returns the kinds."""
    import polars as pl

    from sftdata.io import write_table
    from sftdata.schema import conform

    texts, kind = synthetic_texts(n, seed)
    df = pl.DataFrame({"id": [f"doc{i:07d}" for i in range(n)], "text": texts})
    del texts
    df = df.select(
        "id",
        pl.concat_list(pl.struct(role=pl.lit("assistant"), content=pl.col("text"))).alias("messages"),
        pl.lit("synthetic").alias("source"),
        pl.lit("text").alias("task"),
    )
    write_table(conform(df), path)
    return kind


def part_throughput(n: int, repeats: int) -> list[str]:
    """Docs/s on n synthetic ~200-word documents: datasketch, the old and new paths, rensa."""
    texts, _ = synthetic_texts(n, seed=1)
    frame = records_of(texts)
    runs = {
        "(b) datasketch MinHash.bulk + MinHashLSH": lambda: run_bulk(texts),
        OLD_ROW + f", {minhash.default_workers()} workers": lambda: run_old_default(texts),
        DEFAULT_ROW: lambda: run_default(frame),
        APPROX_ROW: lambda: run_approx(frame),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):
        for name, fn in runs.items():
            start, start_cpu = time.perf_counter(), process_cpu()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(process_cpu() - start_cpu)
        for name, peer in run_peers(texts, 1, only="rensa").items():
            times.setdefault(name, []).extend(peer["seconds"])
            cpu.setdefault(name, []).extend(peer["cpu"])
    load.append(os.getloadavg()[0])
    return [
        f"Throughput on {n:,} synthetic ~200-word documents (median of {repeats} runs; load "
        f"average {load[0]:.1f} -> {load[1]:.1f}):",
        "",
        *table(n, times, cpu, {}, None),
    ]


def run_tracking_rss(cmd: list[str]) -> tuple[float, float, float, subprocess.CompletedProcess]:
    """Wall seconds, CPU seconds and peak RSS (GiB), summed over the process and its children.

    CPU seconds come from getrusage of waited-for descendants (workers included): on a shared,
    overloaded machine they say what the run would take alone better than wall time does.
    """
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [watcher, *watcher.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, peak / 2**30, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def part_scale(n: int) -> list[str]:
    sftdata = str(Path(sys.executable).parent / "sftdata")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        src = Path(tmp) / "docs.parquet"
        t0 = time.perf_counter()
        kind = synthetic_records(n, src)
        near, exact = int((kind == 1).sum()), int((kind == 2).sum())
        gen = time.perf_counter() - t0
        cmd = [sftdata, "dedup", str(src), "-o", str(Path(tmp) / "kept.parquet"),
               "--dupes", str(Path(tmp) / "dupes.parquet")]
        load = os.getloadavg()[0]
        wall, cpu, peak, done = run_tracking_rss(cmd)
        if done.returncode != 0:
            raise SystemExit(f"dedup failed: {done.stderr}")
        import polars as pl

        dupes = pl.read_parquet(Path(tmp) / "dupes.parquet", columns=["id", "reason"])
    # keep=first keeps the earlier document, so a dropped original (kind 0) is a false positive
    dropped_rows = dupes["id"].str.slice(3).cast(pl.Int64).to_numpy()
    false_drops = int((kind[dropped_rows] == 0).sum())
    return [
        f"Scale: {n:,} synthetic docs (~200 words; {near:,} planted near copies, {exact:,} exact "
        f"copies; generated in {gen:.0f} s, not timed)",
        f"  `sftdata dedup docs.parquet -o kept.parquet --dupes dupes.parquet`: {wall:.1f} s wall "
        f"({n / wall:,.0f} docs/s), peak RSS {peak:.2f} GiB (process tree); {cpu:.0f} CPU s "
        f"in all processes ({cpu / 2:.0f} s if it had 2 cores to itself); load average "
        f"{load:.1f} at start",
        f"  dropped {dupes.height:,} (exact {int((dupes['reason'] == 'exact').sum()):,}, near "
        f"{int((dupes['reason'] == 'near').sum()):,}); planted {near + exact:,}; dropped "
        f"originals (false positives): {false_drops}",
        "  stderr: " + " | ".join(done.stderr.strip().splitlines()),
    ]


def main() -> None:
    global THRESHOLD, NGRAM
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--scale", type=int, default=None, help="documents for part 2")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--throughput", type=int, default=None,
                        help="documents for the throughput table (default 50,000; 0 skips it)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="part 1 threshold")
    parser.add_argument("--ngram", type=int, default=NGRAM, help="part 1 word n-gram size")
    args = parser.parse_args()
    THRESHOLD, NGRAM = args.threshold, args.ngram
    repeats = args.repeats or (1 if args.quick else 3)
    scale = args.scale or (20_000 if args.quick else 1_000_000)
    lines: list[str] = [f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}"]
    if not args.skip_quality:
        if not REALDATA.is_dir():
            raise SystemExit(f"real data not found at {REALDATA}")
        lines += part_quality(1500 if args.quick else None, repeats)
    throughput = args.throughput if args.throughput is not None else (0 if args.quick else 50_000)
    if throughput:
        lines += [""] + part_throughput(throughput, repeats)
    if not args.skip_scale:
        lines += [""] + part_scale(scale)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
