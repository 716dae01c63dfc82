"""The shard format round trip: ShardWriter -> files -> ShardReader, positions, checksums."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from sftdata.shards import (
    FORMAT_VERSION,
    LABEL_PAD,
    ShardFormatError,
    ShardReader,
    ShardWriter,
    cu_seqlens,
    position_ids,
    read_manifest,
    text_hash,
    tokenizer_fingerprint,
    write_manifest,
)


def sequences(n=7, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lens = rng.integers(1, 9, int(rng.integers(1, 4)))
        ids = rng.integers(0, 500, int(lens.sum()))
        labels = np.where(rng.random(ids.size) < 0.5, LABEL_PAD, ids)
        out.append((ids, labels, lens, [f"s{i}d{d}" for d in range(lens.size)]))
    return out


def write(tmp_path, seqs, rows_per_file=3, split="train", seq_len=32):
    writer = ShardWriter(tmp_path, split, rows_per_file=rows_per_file)
    for seq in seqs:
        writer.add(*seq)
    entry = writer.close(seq_len)
    write_manifest(tmp_path, {"seq_len": seq_len, "splits": {split: entry}})
    return entry


def test_round_trip_row_by_row(tmp_path):
    seqs = sequences()
    entry = write(tmp_path, seqs)
    assert [f["rows"] for f in entry["files"]] == [3, 3, 1]
    assert entry["sequences"] == 7
    assert entry["tokens"] == sum(s[0].size for s in seqs)
    assert entry["supervised_tokens"] == sum(int((s[1] != LABEL_PAD).sum()) for s in seqs)
    assert entry["padded_tokens"] == 7 * 32 - entry["tokens"]
    assert entry["efficiency"] == round(entry["tokens"] / (7 * 32), 6)
    reader = ShardReader(tmp_path, "train", verify=True)
    assert len(reader) == 7
    for (ids, labels, lens, rids), row in zip(seqs, reader, strict=True):
        assert row["input_ids"].tolist() == ids.tolist()
        assert row["labels"].tolist() == labels.tolist()
        assert row["doc_lens"].tolist() == lens.tolist()
        assert row["record_ids"] == rids
    assert reader[-1]["record_ids"] == seqs[-1][3]
    assert reader.lengths().tolist() == [s[0].size for s in seqs]
    with pytest.raises(IndexError):
        reader[7]


def flatten(seqs):
    ids = np.concatenate([s[0] for s in seqs])
    labels = np.concatenate([s[1] for s in seqs])
    seq_offsets = np.concatenate([[0], np.cumsum([s[0].size for s in seqs])])
    doc_lens = np.concatenate([s[2] for s in seqs])
    doc_offsets = np.concatenate([[0], np.cumsum([s[2].size for s in seqs])])
    rids = [r for s in seqs for r in s[3]]
    return ids, labels, seq_offsets, doc_lens, doc_offsets, rids


def test_add_packed_writes_the_same_bytes_as_add(tmp_path):
    seqs = sequences(11, seed=2)
    write(tmp_path / "a", seqs, rows_per_file=4)
    writer = ShardWriter(tmp_path / "b", "train", rows_per_file=4)
    writer.add_packed(*flatten(seqs))
    entry = writer.close(32)
    write_manifest(tmp_path / "b", {"seq_len": 32, "splits": {"train": entry}})
    assert (tmp_path / "a/manifest.json").read_bytes() == (tmp_path / "b/manifest.json").read_bytes()
    for f in entry["files"]:
        assert (tmp_path / "a" / f["path"]).read_bytes() == (tmp_path / "b" / f["path"]).read_bytes()


def test_add_packed_refuses_lengths_that_disagree(tmp_path):
    ids, labels, seq_offsets, doc_lens, doc_offsets, rids = flatten(sequences(3))
    writer = ShardWriter(tmp_path, "train")
    with pytest.raises(ShardFormatError, match="disagree in length"):
        writer.add_packed(ids, labels[:-1], seq_offsets, doc_lens, doc_offsets, rids)
    bad = doc_lens.copy()
    bad[0] += 1
    bad[-1] -= 1
    with pytest.raises(ShardFormatError, match="do not sum"):
        writer.add_packed(ids, labels, seq_offsets, bad, doc_offsets, rids)


def test_positions_restart_per_document_and_cu_seqlens():
    assert position_ids([3, 1, 2]).tolist() == [0, 1, 2, 0, 0, 1]
    assert cu_seqlens([3, 1, 2]).tolist() == [0, 3, 4, 6]
    assert cu_seqlens([3, 1, 2]).dtype == np.int32
    assert position_ids([]).size == 0


def test_checksums_are_verified(tmp_path):
    entry = write(tmp_path / "a", sequences(seed=0))
    write(tmp_path / "b", sequences(seed=1))  # same layout, other tokens
    changed = entry["files"][1]["path"]
    (tmp_path / "a" / changed).write_bytes((tmp_path / "b" / changed).read_bytes())
    ShardReader(tmp_path / "a", "train")  # not verified: opens
    with pytest.raises(ShardFormatError, match="00001.arrow: checksum differs from the manifest"):
        ShardReader(tmp_path / "a", "train", verify=True)


def test_polars_reads_a_shard_file_for_inspection(tmp_path):
    seqs = sequences()
    entry = write(tmp_path, seqs)
    frame = pl.read_ipc(tmp_path / entry["files"][0]["path"])
    assert frame.columns == ["input_ids", "labels", "doc_lens", "record_ids"]
    assert frame["input_ids"].to_list()[0] == seqs[0][0].tolist()
    assert frame["doc_lens"].list.sum().to_list() == frame["input_ids"].list.len().to_list()


def test_manifest_errors_name_the_problem(tmp_path):
    with pytest.raises(ShardFormatError, match="no manifest.json"):
        read_manifest(tmp_path)
    write(tmp_path, sequences(2))
    with pytest.raises(ShardFormatError, match="no split 'val' \\(have: train\\)"):
        ShardReader(tmp_path, "val")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardFormatError, match="version 2 is not supported"):
        read_manifest(tmp_path)


def test_identity_hashes_are_stable():
    assert tokenizer_fingerprint({"a": 1, "b": 2}) == tokenizer_fingerprint({"b": 2, "a": 1})
    assert tokenizer_fingerprint({b"\xff": 0}) == tokenizer_fingerprint({"ff": 0})
    assert tokenizer_fingerprint({"a": 1}) != tokenizer_fingerprint({"a": 2})
    assert text_hash(None) is None
    assert text_hash("x") == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
