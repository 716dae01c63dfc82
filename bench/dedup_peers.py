"""The peers of `sftdata dedup`, run in their own venv (.venv-peers; see bench/peers_venv.sh).

Never imported by the project and never installed into its lock: bench/bench_dedup.py runs this
file with .venv-peers/bin/python, hands it the texts as a JSON file, and reads back the pairs
each peer calls duplicates and how long it took (seconds per repeat), so every row of the
comparison is timed on the same machine in the same run.

  rensa      RMinHash (Rust) over the same word n-grams as ours (casefolded, NFKC, \\w+ words;
             shingling is inside the timed region, as it is in ours), RMinHashLSH with
             --rensa-bands bands, and a candidate kept when rensa's estimated Jaccard reaches
             the threshold: the pipeline rensa's README shows.
  datatrove  its default MinhashConfig (word 5-grams, 14 buckets x 8 hashes, 64-bit hashes) run
             through its four stages (signatures, buckets, clusters, filter) with the local
             executor on one task, clusters read back as pairs within each cluster.

Usage (what bench_dedup.py does):
    .venv-peers/bin/python bench/dedup_peers.py texts.json out.json --ngram 3 --threshold 0.8
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import tempfile
import time
import unicodedata

_WORD = re.compile(r"\w+", re.UNICODE)


def word_ngrams(text: str, n: int) -> list[str]:
    """sftdata.minhash.shingles' word n-grams, re-implemented here: this venv lacks sftdata."""
    ws = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    if len(ws) <= n:
        return [" ".join(ws)] if ws else []
    return [" ".join(ws[i : i + n]) for i in range(len(ws) - n + 1)]


def run_rensa(texts, ngram, threshold, num_perm, bands, seed):
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=bands)
    sigs = []
    for i, text in enumerate(texts):
        m = RMinHash(num_perm=num_perm, seed=seed)
        m.update(word_ngrams(text, ngram))
        lsh.insert(i, m)
        sigs.append(m)
    pairs = set()
    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if j != i and m.jaccard(sigs[j]) >= threshold:
                pairs.add((min(i, j), max(i, j)))
    return pairs


def run_datatrove(texts):
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    config = MinhashConfig()
    kept_meta = []

    def collect(data, rank=0, world_size=1):
        for doc in data:
            kept_meta.append(doc)
            yield doc

    with tempfile.TemporaryDirectory() as tmp:
        docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
        common = dict(tasks=1, workers=1, logging_dir=f"{tmp}/logs", skip_completed=False)
        LocalPipelineExecutor(pipeline=[docs, MinhashDedupSignature(f"{tmp}/sigs", config=config)],
                              **common).run()
        LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(f"{tmp}/sigs", f"{tmp}/buckets",
                                                            config=config)],
                              tasks=config.num_buckets, workers=1, logging_dir=f"{tmp}/logs2",
                              skip_completed=False).run()
        LocalPipelineExecutor(pipeline=[MinhashDedupCluster(f"{tmp}/buckets", f"{tmp}/remove",
                                                            config=config, save_cluster_id=True)],
                              tasks=1, workers=1, logging_dir=f"{tmp}/logs3",
                              skip_completed=False).run()
        excluded = []

        class Collect:  # the filter's exclusion writer: the dropped documents, with cluster ids
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def write(self, doc, rank=0, **kw):
                excluded.append(doc)

        docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
        LocalPipelineExecutor(pipeline=[docs, MinhashDedupFilter(f"{tmp}/remove",
                                                                 exclusion_writer=Collect(),
                                                                 load_cluster_ids=True),
                                        collect],
                              tasks=1, workers=1, logging_dir=f"{tmp}/logs4",
                              skip_completed=False).run()
    clusters: dict[int, list[int]] = {}
    for doc in [*kept_meta, *excluded]:
        cid = doc.metadata.get("minhash_cluster_id", -1)
        if cid != -1:
            clusters.setdefault(cid, []).append(int(doc.id))
    pairs = set()
    for members in clusters.values():
        for i, j in itertools.combinations(sorted(members), 2):
            pairs.add((i, j))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts")
    parser.add_argument("out")
    parser.add_argument("--ngram", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--rensa-bands", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", choices=["rensa", "datatrove"], default=None)
    args = parser.parse_args()
    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    import importlib.metadata as md

    runs = {
        f"rensa {md.version('rensa')} (RMinHash + RMinHashLSH, {args.rensa_bands} bands, "
        f"word {args.ngram}-grams, estimated Jaccard)":
            lambda: run_rensa(texts, args.ngram, args.threshold, args.num_perm,
                              args.rensa_bands, args.seed),
        f"datatrove {md.version('datatrove')} default MinhashConfig (word 5-grams, 14 x 8, "
        "4 stages)": lambda: run_datatrove(texts),
    }
    if args.only:
        runs = {k: v for k, v in runs.items() if k.startswith(args.only)}
    out = {}
    for name, fn in runs.items():
        times, cpu, pairs = [], [], set()
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            pairs = fn()
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        out[name] = {"seconds": times, "cpu": cpu, "pairs": sorted(pairs)}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
