"""Vectorized (Polars) building blocks for the adapters' fast paths.

A fast path must give byte-identical records to the row path; it declines (returns None) on
any shape it does not handle exactly, and on any row the row path would reject, so errors are
always reported by the row path with their line numbers.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from ..schema import MESSAGE_FIELDS, MESSAGE_TYPE, RECORD_SCHEMA
from ._base import Options


def plain_strings(frame: pl.DataFrame, required: list[str], nullable: list[str] = ()) -> bool:
    for name in required:
        if frame.schema.get(name) != pl.String or frame[name].null_count():
            return False
    for name in nullable:
        if name in frame.columns and frame.schema[name] not in (pl.String, pl.Null):
            return False
    return True


def extras_ok(frame: pl.DataFrame, used: tuple[str, ...]) -> bool:
    """Extra columns go to meta; only string columns without nulls are encoded here."""
    return all(
        frame.schema[c] == pl.String and not frame[c].null_count()
        for c in frame.columns
        if c not in used
    )


def fixed_messages(frame: pl.DataFrame, turns: list[tuple[str, pl.Expr]]) -> pl.Series:
    """A messages column where every row has the same roles in the same order.

    The turns' contents are stacked and gathered row by row, turn by turn: Polars strings are
    views, so the gather moves 16-byte views and never the text (concat_list + explode copied
    every byte, in 4 times the CPU).
    """
    import numpy as np

    n, k = frame.height, len(turns)
    columns = frame.select([expr.alias(f"c{i}") for i, (_, expr) in enumerate(turns)])
    stacked = pl.concat([columns.get_column(f"c{i}").alias("content") for i in range(k)],
                        rechunk=False)
    content = stacked.gather((np.arange(k)[None, :] * n + np.arange(n)[:, None]).ravel())
    roles = pl.Series("role", [role for role, _ in turns], dtype=pl.String).gather(
        np.tile(np.arange(k), n))
    flat = pl.DataFrame({"role": roles, "content": content}).select(pl.struct(
        [pl.col(name) if name in ("role", "content") else pl.lit(None, dtype=dtype).alias(name)
         for name, dtype in MESSAGE_FIELDS.items()]
    )).to_series()
    return flat.reshape((n, k)).cast(pl.List(MESSAGE_TYPE)).alias("messages")


def canonical_text(turns: list[tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """schema.canonical_bytes of (role, content) pairs, as a string expression."""
    parts: list[pl.Expr] = []
    for role, content in turns:
        size = pl.when(content.is_null()).then(pl.lit("-")).otherwise(
            content.str.len_bytes().cast(pl.String))
        parts += [role.fill_null(""), pl.lit("\0"), size, pl.lit("\0"), content.fill_null("")]
    return pl.concat_str(parts)


def fixed_content_ids(frame: pl.DataFrame, turns: list[tuple[str, pl.Expr]]) -> pl.Series:
    """schema.content_id of fixed-shape messages, without building the messages first."""
    pairs = [(pl.lit(role), expr) for role, expr in turns]
    return hash_ids(frame.select(canonical_text(pairs)).to_series())


def content_ids(messages: pl.Series) -> pl.Series:
    """schema.content_id for a whole column of messages."""
    import pyarrow.compute as pc  # 70 ms to import: only this path needs it

    arr = messages.rechunk().to_arrow()
    values = pl.from_arrow(arr.flatten())
    pieces = pl.select(canonical_text(
        [(pl.lit(values).struct.field("role"), pl.lit(values).struct.field("content"))]
    )).to_series()
    offsets = arr.offsets.cast(pa.int64())
    offsets = pc.subtract(offsets, offsets[0])  # a sliced array's offsets do not start at 0
    lists = pa.LargeListArray.from_arrays(offsets, pieces.to_arrow())
    return hash_ids(pl.select(pl.lit(pl.from_arrow(lists)).list.join("").fill_null("")).to_series())


def hash_ids(texts: pl.Series) -> pl.Series:
    """16 hex digits of each text's XXH3-64, as schema.content_id spells them.

    The polars-hash plugin hashes in Rust without a Python call per row; the xxhash package
    gives the same digests where the plugin cannot load (a Polars version it was not built for).
    """
    try:
        return _plugin_hash_ids(texts)
    except Exception:  # noqa: BLE001 - an unloadable plugin raises anything from ImportError on
        return _python_hash_ids(texts)


def _plugin_hash_ids(texts: pl.Series) -> pl.Series:
    import numpy as np
    import polars_hash

    digests = texts.alias("t").to_frame().select(polars_hash.col("t").nchash.xxh3_64())["t"]
    hexed = digests.to_numpy().astype(">u8").tobytes().hex().encode("ascii")  # big-endian
    return pl.Series("id", np.frombuffer(hexed, dtype="S16")).cast(pl.String)


def _python_hash_ids(texts: pl.Series) -> pl.Series:
    import xxhash

    digest = xxhash.xxh3_64_hexdigest
    return pl.Series("id", [digest(t.encode()) for t in texts.to_list()], dtype=pl.String)


def meta_expr(frame: pl.DataFrame, used: tuple[str, ...]) -> pl.Expr:
    extras = sorted(c for c in frame.columns if c not in used)  # as _base.meta_json orders them
    if not extras:
        return pl.lit(None, dtype=pl.String)
    return pl.struct(extras).struct.json_encode()


def finish(
    frame: pl.DataFrame,
    messages: pl.Series,
    ids: pl.Series,
    opts: Options,
    used: tuple[str, ...],
    *,
    task: str | None = None,
    label: pl.Expr | None = None,
) -> pl.DataFrame:
    """The record frame from a batch's messages and content ids (source ids win)."""
    if "id" in frame.columns:
        ids = frame["id"].cast(pl.String).fill_null(ids)
    return frame.select(
        pl.lit(ids.alias("id")),
        pl.lit(messages.alias("messages")),
        pl.lit(opts.source, dtype=pl.String).alias("source"),
        pl.lit(opts.task or task, dtype=pl.String).alias("task"),
        (label if label is not None else pl.lit(None, dtype=pl.String)).cast(pl.String).alias("label"),
        pl.lit(None, dtype=pl.String).alias("group"),
        pl.lit(None, dtype=pl.String).alias("split"),
        meta_expr(frame, used).alias("meta"),
    ).cast(RECORD_SCHEMA)
