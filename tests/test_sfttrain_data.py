"""Packed batches: positions restart, targets never cross documents, the mask is block-diagonal."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sfttrain_helpers import task_records, write_shards

from sftdata.shards import LABEL_PAD
from sfttrain.data import PackedBatches, attention_mask, collate


def row(doc_lens, seed=0):
    rng = np.random.default_rng(seed)
    n = int(sum(doc_lens))
    ids = rng.integers(10, 500, size=n)
    labels = np.where(rng.random(n) < 0.5, ids, LABEL_PAD)
    return {"input_ids": ids, "labels": labels, "doc_lens": np.array(doc_lens),
            "record_ids": [f"d{i}" for i in range(len(doc_lens))]}


def test_collate_example():
    r = {"input_ids": np.array([5, 6, 7, 8, 9]), "labels": np.array([-100, 6, 7, -100, 9]),
         "doc_lens": np.array([3, 2]), "record_ids": ["a", "b"]}
    b = collate([r, row([2])], pad_id=1)
    assert b.input_ids[0].tolist() == [5, 6, 7, 8, 9]
    assert b.input_ids[1].tolist()[2:] == [1, 1, 1]
    assert b.position_ids[0].tolist() == [0, 1, 2, 0, 1]
    assert b.doc_ids[0].tolist() == [0, 0, 0, 1, 1]
    assert b.doc_ids[1].tolist()[2:] == [-1, -1, -1]
    # token t predicts t+1 of the same document; the last token of a document predicts nothing
    assert b.targets[0].tolist() == [6, 7, -100, 9, -100]
    assert b.tokens == 7


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 9), min_size=1, max_size=4), min_size=1, max_size=3))
def test_targets_and_mask_never_cross_documents(rows_lens):
    rows = [row(lens, seed=i) for i, lens in enumerate(rows_lens)]
    b = collate(rows, pad_id=1)
    mask = attention_mask(b.doc_ids, "sdpa", torch.float32)[:, 0]
    for i, r in enumerate(rows):
        starts = np.cumsum(r["doc_lens"]) - r["doc_lens"]
        for s, n in zip(starts, r["doc_lens"], strict=True):
            expect = list(r["labels"][s + 1 : s + n]) + [LABEL_PAD]
            assert b.targets[i, s : s + n].tolist() == expect
            assert b.position_ids[i, s : s + n].tolist() == list(range(n))
            block = mask[i, s : s + n, s : s + n]
            assert torch.equal(block, torch.ones(n, n, dtype=torch.bool).tril())
            assert not mask[i, s : s + n, :s].any()  # nothing before its own document
    eager = attention_mask(b.doc_ids, "eager", torch.float32)[:, 0]
    assert torch.equal(eager == 0, mask)
    assert attention_mask(b.doc_ids, "flash_attention_2", torch.float32) is None


def test_ranks_split_a_global_batch_like_one_process(tmp_path):
    shards = write_shards(tmp_path / "s", {"train": task_records(60)}, seq_len=64)
    one = PackedBatches(shards, "train", micro_batch=2, pad_id=1, seed=3)
    ranks = [PackedBatches(shards, "train", 1, 1, seed=3, rank=r, world=2) for r in (0, 1)]
    assert one.batches_per_epoch == ranks[0].batches_per_epoch
    for epoch in (0, 1):
        for i in range(one.batches_per_epoch):
            together = ranks[0].indices(epoch, i) + ranks[1].indices(epoch, i)
            assert together == one.indices(epoch, i)
    seen = [i for k in range(one.batches_per_epoch) for i in ranks[0].indices(0, k)]
    other = [i for k in range(one.batches_per_epoch) for i in ranks[1].indices(0, k)]
    assert not set(seen) & set(other)
    assert one.order(0).tolist() != one.order(1).tolist()  # reshuffled each epoch
