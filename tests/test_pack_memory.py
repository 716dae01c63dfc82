"""`sftdata pack --memory`: an input within the budget packs as before, byte for byte; a Parquet
input beyond it is packed a piece of row groups at a time with the same documents, tokens,
labels, counts and input fingerprint, and --no-pack still byte-identical."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_pack import tokenized

from sftdata.cli import cli
from sftdata.engines.local import pack_pieces
from sftdata.errors import UsageProblem
from sftdata.memory import budget, format_size, parse_size
from sftdata.shards import ShardReader, read_manifest

N = 1200  # records: 1 MiB (the smallest budget) holds ~4,000 tokens' worth of a piece


def run(*args):
    return CliRunner().invoke(cli, ["pack", *map(str, args)])


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    rng = np.random.default_rng(3)
    lengths = rng.integers(20, 300, N).tolist()
    split = ["val" if i % 10 == 0 else "train" for i in range(N)]
    frame = tokenized(lengths, split=split, seed=3)
    path = tmp_path_factory.mktemp("mem") / "tokens.parquet"
    pq.write_table(frame.to_arrow(), path, row_group_size=100)
    return path


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def documents(root, split):
    """record id -> (input_ids, labels) of every document in a shard directory's split."""
    out = {}
    for row in ShardReader(root, split, verify=True):
        at = 0
        for rid, n in zip(row["record_ids"], row["doc_lens"].tolist(), strict=True):
            out[rid] = (row["input_ids"][at : at + n].tolist(), row["labels"][at : at + n].tolist())
            at += n
    return out


def test_parse_size_units_and_errors():
    assert parse_size("4GiB") == 4 * 2**30
    assert parse_size("512 MiB") == 512 * 2**20
    assert parse_size("8GB") == 8 * 10**9
    assert parse_size("1.5g") == 1_500_000_000
    for bad in ("lots", "4 parsecs", "-1GiB", ""):
        with pytest.raises(UsageProblem, match="is not a size"):
            parse_size(bad)
    with pytest.raises(UsageProblem, match="below 1 MiB"):
        parse_size("100KiB")
    assert 0 < budget(None) and budget("2GiB") == 2 * 2**30
    assert format_size(3.5 * 2**30) == "3.5 GiB"


def test_within_the_budget_the_output_is_byte_identical(parquet, tmp_path):
    for name, extra in (("default", []), ("big", ["--memory", "64GiB"])):
        result = run(parquet, "-o", tmp_path / name, "--seq-len", 512, *extra)
        assert result.exit_code == 0, result.output
        assert "pieces" not in result.stderr
    assert files(tmp_path / "default") == files(tmp_path / "big")


def test_pieces_follow_the_row_groups_and_the_budget(parquet):
    units, tokens = pack_pieces(str(parquet), 1 << 20)
    assert tokens == sum(len(r) for r in pq.read_table(parquet)["input_ids"].to_pylist())
    assert len(units) > 2
    assert [u.first_row for u in units] == sorted(u.first_row for u in units)
    assert units[0].row_groups[0] == 0 and units[-1].row_groups[1] == 12
    assert pack_pieces(str(parquet), 1 << 40) == (None, tokens)
    assert pack_pieces("-", 1 << 20) == (None, 0)


@pytest.mark.parametrize("strategy", ["bfd", "ffd"])
def test_beyond_the_budget_pieces_keep_every_document_and_count(parquet, tmp_path, strategy):
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    assert run(parquet, "-o", whole, "--seq-len", 512, "--strategy", strategy).exit_code == 0
    result = run(parquet, "-o", pieces, "--seq-len", 512, "--strategy", strategy,
                 "--memory", "1MiB")
    assert result.exit_code == 0, result.output
    assert "do not fit --memory 1.0 MiB: packing" in result.stderr
    a, b = read_manifest(whole), read_manifest(pieces)
    assert a["input_fingerprint"] == b["input_fingerprint"]
    assert a["packing"] == b["packing"]
    for split in ("train", "val"):
        assert documents(whole, split) == documents(pieces, split)
        for key in ("documents", "tokens", "supervised_tokens"):
            assert a["splits"][split][key] == b["splits"][split][key]
        # bins are filled within a piece: a few more sequences at most (docs/bench/pack.md)
        assert a["splits"][split]["efficiency"] - b["splits"][split]["efficiency"] < 0.05


def test_no_pack_in_pieces_is_byte_identical(parquet, tmp_path):
    for name, extra in (("whole", []), ("pieces", ["--memory", "1MiB"])):
        result = run(parquet, "-o", tmp_path / name, "--seq-len", 512, "--no-pack",
                     "--rows-per-file", 64, *extra)
        assert result.exit_code == 0, result.output
    assert files(tmp_path / "whole") == files(tmp_path / "pieces")


def test_wrap_ignores_the_budget_and_stays_whole(parquet, tmp_path):
    for name, extra in (("whole", []), ("small", ["--memory", "1MiB"])):
        result = run(parquet, "-o", tmp_path / name, "--seq-len", 512, "--strategy", "wrap",
                     *extra)
        assert result.exit_code == 0, result.output
    assert files(tmp_path / "whole") == files(tmp_path / "small")


def test_a_bad_memory_size_is_a_usage_error(parquet, tmp_path):
    result = run(parquet, "-o", tmp_path / "s", "--memory", "lots")
    assert result.exit_code == 2
    assert "--memory: 'lots' is not a size" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "s").exists()
