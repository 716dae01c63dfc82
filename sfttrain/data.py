"""Packed shards -> micro-batches: token ids, restarted positions, document ids, shifted targets.

Documents packed into one sequence never see each other: positions restart at each document
(`sftdata.shards.position_ids`) and the attention mask is block-diagonal causal, built from the
document ids (see `attention_mask`). The target of the last token of a document is -100, so no
document learns to predict the first token of the next one.

Shards packed with `sftdata pack --strategy wrap --cross-doc-attention` (continued pretraining,
docs/cpt.md) say so in their manifest: each row is then one stream, positions 0..n-1, causal
attention over the whole chunk, and every next token is a target (across document ends too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sftdata.shards import LABEL_PAD, ShardReader, position_ids


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] padded with pad_id
    position_ids: torch.Tensor  # [B, T] restarting at every document
    doc_ids: torch.Tensor  # [B, T] document number inside its row; -1 on padding
    targets: torch.Tensor  # [B, T] next-token target, -100 where not trained
    record_ids: list[list[str]]
    tokens: int  # real (non-pad) tokens
    supervised: int  # targets that carry loss

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.position_ids.to(device),
            self.doc_ids.to(device),
            self.targets.to(device),
            self.record_ids,
            self.tokens,
            self.supervised,
        )


def cross_doc_attention(manifest: dict) -> bool:
    """Whether a shard directory's rows are one stream each (wrap with --cross-doc-attention)."""
    packing = manifest.get("packing") or {}
    return packing.get("strategy") == "wrap" and bool(packing.get("cross_doc_attention"))


def collate(rows: list[dict], pad_id: int, cross_doc: bool = False) -> Batch:
    """Pad rows to the longest one; shift labels inside each document (inside each row when
    ``cross_doc``: the row is one stream)."""
    width = max(int(r["input_ids"].size) for r in rows)
    batch = len(rows)
    ids = np.full((batch, width), pad_id, dtype=np.int64)
    pos = np.zeros((batch, width), dtype=np.int64)
    docs = np.full((batch, width), -1, dtype=np.int64)
    targets = np.full((batch, width), LABEL_PAD, dtype=np.int64)
    for b, row in enumerate(rows):
        n = int(row["input_ids"].size)
        lens = np.asarray([n] if cross_doc else row["doc_lens"], dtype=np.int64)
        ids[b, :n] = row["input_ids"]
        pos[b, :n] = position_ids(lens)
        docs[b, :n] = np.repeat(np.arange(lens.size), lens)
        shifted = np.full(n, LABEL_PAD, dtype=np.int64)
        shifted[:-1] = row["labels"][1:]
        doc_ends = np.cumsum(lens) - 1  # last token of each document predicts nothing
        shifted[doc_ends] = LABEL_PAD
        targets[b, :n] = shifted
    return Batch(
        input_ids=torch.from_numpy(ids),
        position_ids=torch.from_numpy(pos),
        doc_ids=torch.from_numpy(docs),
        targets=torch.from_numpy(targets),
        record_ids=[list(r["record_ids"]) for r in rows],
        tokens=int(sum(int(r["input_ids"].size) for r in rows)),
        supervised=int((targets != LABEL_PAD).sum()),
    )


def attention_mask(doc_ids: torch.Tensor, attn: str, dtype: torch.dtype) -> torch.Tensor | None:
    """Block-diagonal causal mask [B, 1, T, T] for sdpa (bool) or eager (additive float).

    flash_attention_2 gets None: transformers derives cu_seqlens from the restarted position ids.
    Padding positions (doc id -1) attend only to padding, so no row is all-masked (no NaN).
    """
    if attn == "flash_attention_2":
        return None
    length = doc_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    allowed = (same_doc & causal)[:, None, :, :]
    if attn == "sdpa":
        return allowed
    mask = torch.zeros(allowed.shape, dtype=dtype, device=doc_ids.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


class PackedBatches:
    """Deterministic micro-batches of one split, split by DDP rank.

    Epoch e visits a permutation drawn from (seed, e). A global batch is `micro_batch * world`
    sequences; rank r takes its contiguous slice, so one process with micro_batch=2 sees exactly
    what two ranks with micro_batch=1 see together. Sequences that do not fill a last global
    batch are left out of that epoch (reported by `dropped_per_epoch`).
    """

    def __init__(
        self,
        shard_dir: str | Path,
        split: str,
        micro_batch: int,
        pad_id: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
    ):
        self.reader = ShardReader(shard_dir, split)
        self.cross_doc = cross_doc_attention(self.reader.manifest)
        self.micro_batch = micro_batch
        self.pad_id = pad_id
        self.seed = seed
        self.rank = rank
        self.world = world
        self.shuffle = shuffle
        self.global_batch = micro_batch * world
        self.batches_per_epoch = len(self.reader) // self.global_batch
        self.dropped_per_epoch = len(self.reader) - self.batches_per_epoch * self.global_batch

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.reader)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def indices(self, epoch: int, index: int) -> list[int]:
        start = index * self.global_batch + self.rank * self.micro_batch
        return [int(i) for i in self.order(epoch)[start : start + self.micro_batch]]

    def batch(self, epoch: int, index: int) -> Batch:
        rows = [self.reader[i] for i in self.indices(epoch, index)]
        return collate(rows, self.pad_id, self.cross_doc)


def eval_batches(
    shard_dir: str | Path, split: str, micro_batch: int, pad_id: int, rank: int, world: int,
    limit: int = 0,
):
    """Every sequence of the split once, in order, ranks taking every world-th micro-batch."""
    reader = ShardReader(shard_dir, split)
    cross_doc = cross_doc_attention(reader.manifest)
    starts = list(range(0, len(reader), micro_batch))
    if limit:
        starts = starts[:limit]
    for start in starts[rank::world]:
        rows = [reader[i] for i in range(start, min(start + micro_batch, len(reader)))]
        yield collate(rows, pad_id, cross_doc)
