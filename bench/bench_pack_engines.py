"""pack on the local engine against --engine ray: packing efficiency per split, same documents.

Tokenized records of SFT-like lengths (log-normal, median ~90 tokens, up to 700; 10% in a val
split) are written as a directory of Parquet parts; `sftdata pack --seq-len 512` runs on both
engines (one local Ray of 2 CPUs, started here) and the manifests' sequences and efficiency are
printed, with the Ray engine's pool off (REFILL_BELOW 0: pure per-unit BFD) and on (the
default). Every run asserts that the shards hold the same documents with the same tokens and
labels as the local engine's.

    .venv/bin/python bench/bench_pack_engines.py --records 4000,20000 --rows-per-part 250,1000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="4000,20000")
    parser.add_argument("--rows-per-part", default="250,1000")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from click.testing import CliRunner
    from test_engines import packed_docs, tokenized_parts

    import sftdata.engines.pack as ray_pack
    from sftdata.cli import cli
    from sftdata.engines.ray_engine import init

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, configure_logging=True)
    init()
    default = ray_pack.REFILL_BELOW
    print("| records | rows per part | split | local BFD | Ray, no pool | Ray (default) |")
    print("| ---: | ---: | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, args.records.split(",")):
            for rows in map(int, args.rows_per_part.split(",")):
                folder = Path(tmp) / f"{n}-{rows}"
                tokenized_parts(folder / "in", n=n, rows_per_part=rows)
                found = {}
                for label, engine, refill in (("local", "local", default),
                                              ("nopool", "ray", 0.0), ("ray", "ray", default)):
                    ray_pack.REFILL_BELOW = refill
                    result = CliRunner().invoke(cli, ["pack", str(folder / "in"), "--seq-len",
                                                      "512", "-o", str(folder / label),
                                                      "--engine", engine])
                    assert result.exit_code == 0, result.output
                    found[label] = json.loads((folder / label / "manifest.json").read_text())
                for split in ("train", "val"):
                    local = packed_docs(folder / "local", split)
                    assert packed_docs(folder / "ray", split) == local
                    assert packed_docs(folder / "nopool", split) == local
                    cells = [f"{found[k]['splits'][split]['sequences']} seq, "
                             f"{found[k]['splits'][split]['efficiency']:.2%}"
                             for k in ("local", "nopool", "ray")]
                    print(f"| {n:,} | {rows:,} | {split} | " + " | ".join(cells) + " |")
    ray_pack.REFILL_BELOW = default
    ray.shutdown()


if __name__ == "__main__":
    main()
