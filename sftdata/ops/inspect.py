"""What a shard directory holds, and exactly which tokens of a packed sequence are trained.

Pure functions over a manifest (dict) and one sequence as `ShardReader` returns it; the caller
brings the decoder (token ids -> text), so nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..shards import LABEL_PAD

TRAINED_OPEN, TRAINED_CLOSE = "[[", "]]"
COLOR_ON, COLOR_OFF = "\x1b[1;32m", "\x1b[0m"  # bold green for trained tokens on a terminal
SPLIT_COLUMNS = ("files", "sequences", "documents", "tokens", "supervised_tokens", "efficiency")

Decoder = Callable[[list[int]], str]


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without file lists: identity, packing report and counts per split."""
    splits = {
        name: {
            "files": len(entry.get("files", [])),
            **{k: entry.get(k) for k in SPLIT_COLUMNS[1:]},
            "padded_tokens": entry.get("padded_tokens"),
        }
        for name, entry in manifest.get("splits", {}).items()
    }
    template = dict(manifest.get("template") or {})
    has_text = template.pop("text", None) is not None
    return {
        "format": manifest.get("format"),
        "format_version": manifest.get("format_version"),
        "created_by": manifest.get("created_by"),
        "seq_len": manifest.get("seq_len"),
        "pad_id": manifest.get("pad_id"),
        "eos_id": manifest.get("eos_id"),
        "tokenizer": manifest.get("tokenizer"),
        "template": {**template, "text_stored": has_text} if manifest.get("template") else None,
        "packing": manifest.get("packing"),
        "input_fingerprint": manifest.get("input_fingerprint"),
        "splits": splits,
    }


def format_summary(info: dict[str, Any], where: str) -> str:
    """The summary as aligned text lines for a person."""
    tok = info.get("tokenizer") or {}
    lines = [
        f"{where}  ({info['format']} v{info['format_version']}, {info.get('created_by')})",
        f"tokenizer  {tok.get('backend')} {tok.get('name')}  vocab {tok.get('vocab_size')}  "
        f"hash {str(tok.get('vocab_hash'))[:12]}",
    ]
    template = info.get("template")
    if template:
        stored = "text stored" if template.get("text_stored") else "text not stored"
        lines.append(
            f"template   {template.get('name')}  hash {str(template.get('hash'))[:12]}  ({stored})"
        )
    else:
        lines.append("template   (none recorded)")
    lines.append(
        f"seq_len    {info['seq_len']}  pad_id {info['pad_id']}  eos_id {info['eos_id']}"
    )
    packing = info.get("packing") or {}
    if packing and packing.get("strategy") == "wrap":
        lines.append(_wrap_line(packing))
    elif packing:
        dropped = packing.get("rows_dropped") or {}
        dropped_text = ", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"
        lines.append(
            f"packing    {packing.get('strategy')}, truncation {packing.get('truncation')}: "
            f"{packing.get('rows_in')} rows in, {packing.get('rows_packed')} packed, "
            f"{packing.get('rows_truncated')} truncated "
            f"({packing.get('supervised_tokens_lost')} supervised tokens lost), "
            f"dropped: {dropped_text}"
        )
    lines.append(f"input      fingerprint {str(info.get('input_fingerprint'))[:16]}")
    header = ("split",) + SPLIT_COLUMNS
    rows = [header]
    for name, entry in info["splits"].items():
        eff = entry.get("efficiency")
        rows.append(
            (name, *(str(entry.get(k)) for k in SPLIT_COLUMNS[:-1]),
             "-" if eff is None else f"{eff:.2%}")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _wrap_line(packing: dict[str, Any]) -> str:
    """Continued-pretraining shards: nothing truncated; what was cut into chunks instead."""
    dropped = ", ".join(f"{k} {v}" for k, v in (packing.get("rows_dropped") or {}).items())
    attention = "across" if packing.get("cross_doc_attention") else "within"
    per_split = "; ".join(
        f"{name}: {w.get('documents_split')} documents split across chunks, "
        f"{w.get('eos_added')} EOS added, last chunk {w.get('last_chunk_tokens')} tokens"
        for name, w in (packing.get("wrap") or {}).items()
    )
    return (
        f"packing    wrap (attention {attention} documents): {packing.get('rows_in')} rows in, "
        f"{packing.get('rows_packed')} packed, dropped: {dropped or 'none'}; {per_split}"
    )


def sequence_view(row: dict[str, Any], decode: Decoder | None = None) -> dict[str, Any]:
    """One packed sequence split into its documents, each into trained / untrained runs."""
    ids = np.asarray(row["input_ids"], dtype=np.int64)
    labels = np.asarray(row["labels"], dtype=np.int64)
    lens = np.asarray(row["doc_lens"], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(lens)])
    documents = []
    for d, record_id in enumerate(row["record_ids"]):
        doc_ids = ids[bounds[d] : bounds[d + 1]]
        trained = labels[bounds[d] : bounds[d + 1]] != LABEL_PAD
        cuts = np.flatnonzero(np.diff(trained.astype(np.int8))) + 1
        segments = []
        for part_ids, part_trained in zip(
            np.split(doc_ids, cuts), np.split(trained, cuts), strict=True
        ):
            if part_ids.size == 0:
                continue
            segment = {"trained": bool(part_trained[0]), "ids": part_ids.tolist()}
            if decode is not None:
                segment["text"] = decode(segment["ids"])
            segments.append(segment)
        documents.append(
            {
                "record_id": record_id,
                "tokens": int(doc_ids.size),
                "supervised_tokens": int(trained.sum()),
                "segments": segments,
            }
        )
    return {
        "tokens": int(ids.size),
        "supervised_tokens": int((labels != LABEL_PAD).sum()),
        "documents": documents,
    }


def format_sequence(view: dict[str, Any], title: str, color: bool = False) -> str:
    """Documents one after another, a rule between them, trained runs marked."""
    start, end = (COLOR_ON, COLOR_OFF) if color else (TRAINED_OPEN, TRAINED_CLOSE)
    legend = "trained tokens in bold green" if color else f"trained tokens inside {start} {end}"
    out = [f"{title}: {view['tokens']} tokens, {view['supervised_tokens']} trained ({legend})"]
    n_docs = len(view["documents"])
    for d, doc in enumerate(view["documents"], start=1):
        out.append(
            f"--- document {d}/{n_docs}  record {doc['record_id']}  {doc['tokens']} tokens, "
            f"{doc['supervised_tokens']} trained ---"
        )
        parts = []
        decoded = any("text" in seg for seg in doc["segments"])
        for seg in doc["segments"]:
            body = seg["text"] if "text" in seg else " ".join(map(str, seg["ids"]))
            parts.append(f"{start}{body}{end}" if seg["trained"] else body)
        out.append(("" if decoded else " ").join(parts))
    return "\n".join(out)
